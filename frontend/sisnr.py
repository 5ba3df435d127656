"""Scale-invariant SNR in torch (differentiable): the one copy for losses and alignment.

SI-SNR (= SI-SDR, Le Roux et al. 2019, arXiv:1811.02508) of an estimate against a reference,
both made zero-mean: ``10 log10(|proj|^2 / (|est - proj|^2 + eps) + eps)`` with
``proj = <est, ref> ref / (|ref|^2 + eps)``. The operations and their order are asteroid's
``PairwiseNegSDR("sisdr")`` (0.7), so the values are bit-identical to it (a test checks this); used by
separation's PIT loss and long-file window alignment, and by the denoiser's validation metric.
:mod:`evaluation.metrics` has the numpy float64 metric (undefined for silent references) for
reports.
"""
from __future__ import annotations

import torch

EPS = 1e-8


def _zero_mean(x: torch.Tensor) -> torch.Tensor:
    return x - torch.mean(x, dim=-1, keepdim=True)


def _si_snr(est: torch.Tensor, ref: torch.Tensor, eps: float) -> torch.Tensor:
    """SI-SNR (dB) over the last axis of broadcastable zero-mean ``est`` and ``ref``."""
    dot = torch.sum(est * ref, dim=-1, keepdim=True)
    ref_energy = torch.sum(ref**2, dim=-1, keepdim=True) + eps
    proj = dot * ref / ref_energy
    noise = est - proj
    ratio = torch.sum(proj**2, dim=-1) / (torch.sum(noise**2, dim=-1) + eps)
    return 10 * torch.log10(ratio + eps)


def si_snr(est: torch.Tensor, ref: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """SI-SNR in dB of ``est[..., :]`` against ``ref[..., :]`` (same or broadcastable shapes
    ``(..., T)``) -> ``(...)``."""
    if est.shape[-1] != ref.shape[-1]:
        raise ValueError(f"est and ref need the same length, got {tuple(est.shape)} and {tuple(ref.shape)}")
    return _si_snr(_zero_mean(est), _zero_mean(ref), eps)


def pairwise_neg_si_snr(est: torch.Tensor, ref: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Negative SI-SNR (dB) of every estimate against every reference.

    Args:
        est: ``(B, K, T)`` estimates.
        ref: ``(B, C, T)`` references (``C`` may differ from ``K``).

    Returns:
        ``(B, K, C)``: ``[b, k, c]`` is ``-SI-SNR(est[b, k], ref[b, c])``.
    """
    if est.dim() != 3 or ref.dim() != 3 or est.shape[0] != ref.shape[0] or est.shape[-1] != ref.shape[-1]:
        raise ValueError(f"expected est (B, K, T) and ref (B, C, T), got {tuple(est.shape)} and {tuple(ref.shape)}")
    # means removed before broadcasting, as asteroid does: (B, K, 1, T) against (B, 1, C, T)
    return -_si_snr(_zero_mean(est).unsqueeze(2), _zero_mean(ref).unsqueeze(1), eps)
