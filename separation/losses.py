"""Training losses for separation with an unknown number of talkers.

* Utterance-level permutation-invariant training (PIT, Kolbaek et al. 2017, arXiv:1703.06284) on
  negative SI-SNR: :func:`frontend.sisnr.pairwise_neg_si_snr` builds the pair-wise matrix and
  :func:`best_permutation` picks the assignment (exhaustive up to 3 sources, Hungarian above,
  Dovrat et al. 2021, with ``scipy.optimize.linear_sum_assignment``), so 10+ talkers work. Both
  repeat asteroid 0.7's ``pairwise_neg_sisdr`` and ``PITLossWrapper.find_best_perm`` operation for
  operation: the loss is bit-identical to asteroid's (tested), without importing asteroid, so
  inference (:func:`separation.inference.align_to_previous`) needs only torch and scipy.
* Each item is scored on the head of its true count; a batch may mix counts.
* Models with only a max-count head (the baselines) match the ``n_src`` references to the best
  ``n_src`` of their outputs (rectangular Hungarian assignment) and push the unmatched outputs
  towards silence, so that SVoice's power selector can count them.
* SVoice's multi-scale weighting: block ``i`` of ``R`` has weight ``(i + 1) / R``; with the count
  head, Multi-Decoder DPRNN (arXiv:2011.12022) adds ``count_weight * cross_entropy`` per block.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import permutations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from frontend.sisnr import pairwise_neg_si_snr
from separation.model import SeparationOutput


def best_permutation(pairwise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The assignment of estimates to references with the lowest mean pair-wise loss.

    Args:
        pairwise: ``(B, C_est, C)`` losses, ``[b, est, ref]``, with ``C_est >= C``.

    Returns:
        ``(loss (B,), est_index (B, C))``: the mean loss of the best assignment, and for each
        reference the index of its estimate. Square and up to 3 sources: all permutations;
        otherwise the Hungarian algorithm (rectangular matrices too). The gradient flows through
        ``loss``.
    """
    n_est, n_ref = pairwise.shape[-2], pairwise.shape[-1]
    pwl = pairwise.transpose(-1, -2)  # (B, C, C_est): [b, ref, est]
    if n_est == n_ref and n_ref <= 3:
        perms = pwl.new_tensor(list(permutations(range(n_ref))), dtype=torch.long)  # (C!, C)
        one_hot = pwl.new_zeros((*perms.size(), n_ref)).scatter_(2, perms.unsqueeze(2), 1)
        loss_set = torch.einsum("bij,pij->bp", [pwl, one_hot])
        loss_set /= n_ref
        min_loss, min_index = torch.min(loss_set, dim=1)
        return min_loss, torch.stack([perms[m] for m in min_index], dim=0)
    est_index = torch.from_numpy(np.stack([linear_sum_assignment(m)[1] for m in pwl.detach().cpu().numpy()]))
    est_index = est_index.to(pwl.device)
    return torch.gather(pwl, 2, est_index[..., None]).mean([-1, -2]), est_index


def pit_neg_sisdr(est_sources: torch.Tensor, ref_sources: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Utterance-level PIT on negative SI-SDR (dB), any number of sources.

    Args:
        est_sources: ``(B, C_est, T)`` with ``C_est >= C``.
        ref_sources: ``(B, C, T)``.

    Returns:
        ``(loss (B,), est_index (B, C))``: the mean negative SI-SDR of the best assignment, and for
        each reference the index of its estimate (``est_sources[b, est_index[b]]`` is aligned
        with ``ref_sources[b]``).
    """
    if est_sources.dim() != 3 or ref_sources.dim() != 3:
        raise ValueError(f"expected (B, C, T) tensors, got {tuple(est_sources.shape)} and {tuple(ref_sources.shape)}")
    if est_sources.shape[0] != ref_sources.shape[0] or est_sources.shape[-1] != ref_sources.shape[-1]:
        raise ValueError(f"batch/time mismatch: est {tuple(est_sources.shape)} vs ref {tuple(ref_sources.shape)}")
    n_est, n_ref = est_sources.shape[1], ref_sources.shape[1]
    if n_est < n_ref:
        raise ValueError(f"{n_est} estimates cannot match {n_ref} references")
    pairwise = pairwise_neg_si_snr(est_sources, ref_sources)  # (B, C_est, C): [b, est, ref]
    return best_permutation(pairwise)


def reorder_sources(est_sources: torch.Tensor, est_index: torch.Tensor) -> torch.Tensor:
    """Pick and order estimates as :func:`pit_neg_sisdr` matched them: ``(B, C_est, T) -> (B, C, T)``."""
    return torch.stack([s.index_select(0, i) for s, i in zip(est_sources, est_index)])


def mask_padding(wav: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """Zero samples at and after each item's length; ``wav (B, ..., T)``, ``lengths (B,)``."""
    if lengths is None:
        return wav
    mask = torch.arange(wav.shape[-1], device=wav.device) < lengths.to(wav.device)[:, None]
    return wav * mask.view(mask.shape[0], *([1] * (wav.dim() - 2)), mask.shape[1]).to(wav.dtype)


@dataclass
class SeparationLossConfig:
    """Weights of :func:`separation_loss`.

    Attributes:
        count_weight: lambda of the count cross-entropy (Multi-Decoder DPRNN: 0.01-0.05).
        inactive_weight: weight of the silence penalty on unmatched outputs of max-count-only
            models (mean power relative to the mixture's, in dB above ``-inactive_floor_db``).
        inactive_floor_db: penalty floor; quieter outputs cost nothing.
        multi_scale: weight blocks ``(i + 1) / R`` (else only the last block counts).
    """

    count_weight: float = 0.05
    inactive_weight: float = 0.1
    inactive_floor_db: float = 60.0
    multi_scale: bool = True


def separation_loss(
    output: SeparationOutput,
    ref_sources: torch.Tensor,
    n_src: torch.Tensor,
    mix: torch.Tensor,
    lengths: torch.Tensor | None = None,
    config: SeparationLossConfig | None = None,
    count_offset: int = 1,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Multi-scale PIT + count loss for a batch that may mix talker counts.

    Args:
        output: the model's :class:`SeparationOutput` (every block for the multi-scale loss).
        ref_sources: ``(B, C_max, T)`` references, zero-padded beyond each item's ``n_src``.
        n_src: ``(B,)`` true talker counts (0 = no speech: only the count loss applies).
        mix: ``(B, T)`` mixtures (scale for the silence penalty).
        lengths: ``(B,)`` valid samples; estimates are zeroed beyond them.
        config: weights.
        count_offset: the model's ``count_offset`` (count class ``j`` means ``j + offset`` talkers).

    Returns:
        ``(loss, logs)``: ``logs`` holds ``neg_sisnr`` (final block, mean over items with speech),
        ``count_ce`` and ``count_acc`` (final block, when there is a count head).
    """
    config = config or SeparationLossConfig()
    n_src = n_src.to(ref_sources.device).long()
    blocks = output.blocks if config.multi_scale else [output.final]
    n_blocks = len(blocks)
    total = ref_sources.new_zeros(())
    logs: dict[str, float] = {}
    mix_power = mask_padding(mix, lengths).pow(2).mean(-1).clamp_min(1e-10)  # (B,)
    for i, block in enumerate(blocks):
        weight = (i + 1) / n_blocks if config.multi_scale else 1.0
        sep_sum = ref_sources.new_zeros(())
        for k in sorted(set(n_src.tolist())):
            if k == 0:
                continue
            idx = (n_src == k).nonzero().squeeze(1)
            refs = ref_sources[idx, :k]
            head = k if k in block.est_sources else max(block.est_sources)
            if head < k:
                raise ValueError(f"batch has {k} talkers but the model's largest head has {head} outputs")
            est = mask_padding(block.est_sources[head][idx], None if lengths is None else lengths[idx])
            loss_k, est_index = pit_neg_sisdr(est, refs)
            sep_sum = sep_sum + loss_k.sum()
            if head > k:
                unmatched = torch.ones(est.shape[:2], dtype=torch.bool, device=est.device)
                unmatched[torch.arange(len(idx), device=est.device)[:, None], est_index] = False
                rel_db = 10 * torch.log10(est.pow(2).mean(-1) / mix_power[idx, None] + 1e-10)
                penalty = (F.relu(rel_db + config.inactive_floor_db) * unmatched).sum()
                sep_sum = sep_sum + config.inactive_weight * penalty
        n_speech = int((n_src > 0).sum())
        sep_loss = sep_sum / max(n_speech, 1)
        block_loss = sep_loss
        if block.count_logits is not None:
            target = (n_src - count_offset).clamp_min(0)
            ce = F.cross_entropy(block.count_logits, target)
            block_loss = block_loss + config.count_weight * ce
        total = total + weight * block_loss
        if i == n_blocks - 1:
            logs["neg_sisnr"] = float(sep_loss.detach())
            if block.count_logits is not None:
                logs["count_ce"] = float(ce.detach())
                pred = block.count_logits.argmax(-1)
                logs["count_acc"] = float((pred == target).float().mean())
    logs["loss"] = float(total.detach())
    return total, logs
