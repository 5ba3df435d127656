"""Training losses for the WaveNet family (models never compute losses; these sit beside them).

- :func:`mulaw_cross_entropy`: 256-way softmax over mu-law codes (Oord et al. 2016, arXiv 1609.03499).
- :func:`discretized_logistic_mixture_nll`: negative log-likelihood of a mixture of logistics
  discretised to ``n_bins`` levels in [-1, 1] (PixelCNN++, Salimans et al. 2017, arXiv 1701.05517,
  as used by Parallel WaveNet, arXiv 1711.10433). Hand-written: no installed library provides it.
- :func:`denoising_l1`: Rethage et al. 2018 (arXiv 1706.07162): L1 on the speech estimate plus
  L1 on the implied noise estimate ``noisy - est_clean``.
- :func:`multi_resolution_stft_loss`: spectral convergence plus L1 of log STFT magnitudes, averaged
  over several FFT sizes (Yamamoto et al. 2020, Parallel WaveGAN, arXiv 1910.11480): a term for
  what listeners hear (the spectral envelope at several time/frequency resolutions), which
  SI-SNR alone does not weigh. Equal to auraloss' ``MultiResolutionSTFTLoss`` with its defaults
  (a test compares them).
- :func:`pesq_loss`: the PESQ model (ITU P.862's disturbance densities) as a differentiable loss,
  from the ``torch-pesq`` package (Schmidt, AudioLabs; the ``train`` extra), which follows the
  reference without its time alignment. Listeners' quality as PESQ scores it; meant beside SI-SNR
  (alone it does not suppress noise, as its authors note).
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from typing import Sequence

from frontend import mulaw_encode
from frontend.sisnr import si_snr  # noqa: F401  (re-exported: the one torch SI-SNR)
from generation.sampling import LOG_SCALE_MIN


def mulaw_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``logits (B, Q, T)``, ``target (B, T)`` waveform in [-1, 1] -> mean cross-entropy (nats)."""
    return F.cross_entropy(logits, mulaw_encode(target, logits.shape[1]))


def discretized_logistic_mixture_nll(params: torch.Tensor, target: torch.Tensor, n_bins: int = 65536) -> torch.Tensor:
    """``params (B, 3M, T)`` = (mixture logits, means, log-scales), ``target (B, T)`` -> mean NLL.

    Each logistic's probability of the bin ``[x - 1/(n_bins-1), x + 1/(n_bins-1)]``; the edge bins
    take the whole tails (``x = -1`` gets ``(-inf, -1 + h]``, ``x = 1`` gets ``[1 - h, inf)``).
    """
    m = params.shape[1] // 3
    logit_probs, means, log_scales = params[:, :m], params[:, m:2 * m], params[:, 2 * m:]
    log_scales = log_scales.clamp(min=LOG_SCALE_MIN)
    x = target.unsqueeze(1).clamp(-1.0, 1.0)  # (B, 1, T)
    centered = x - means
    inv_s = torch.exp(-log_scales)
    half_bin = 1.0 / (n_bins - 1)
    plus_in = inv_s * (centered + half_bin)
    min_in = inv_s * (centered - half_bin)
    cdf_plus = torch.sigmoid(plus_in)
    cdf_min = torch.sigmoid(min_in)
    log_cdf_plus = plus_in - F.softplus(plus_in)        # log sigmoid(plus_in): x = -1 edge
    log_one_minus_cdf_min = -F.softplus(min_in)          # log (1 - sigmoid(min_in)): x = 1 edge
    cdf_delta = cdf_plus - cdf_min
    mid_in = inv_s * centered
    # log density at the bin centre x bin width: used when the bin mass underflows
    log_pdf_mid = mid_in - log_scales - 2.0 * F.softplus(mid_in) + math.log(2 * half_bin)
    log_mass = torch.where(cdf_delta > 1e-5, torch.log(cdf_delta.clamp(min=1e-12)), log_pdf_mid)
    log_probs = torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_mass))
    log_probs = log_probs + F.log_softmax(logit_probs, dim=1)
    return -torch.logsumexp(log_probs, dim=1).mean()


def denoising_l1(est_clean: torch.Tensor, clean: torch.Tensor, noisy: torch.Tensor) -> torch.Tensor:
    """Rethage et al.'s two-term L1: ``|clean - est| + |noise - (noisy - est)|`` (means)."""
    noise = noisy - clean
    est_noise = noisy - est_clean
    return (est_clean - clean).abs().mean() + (est_noise - noise).abs().mean()


#: (FFT size, hop, window length) of :func:`multi_resolution_stft_loss`: Yamamoto et al.'s three
#: resolutions (also auraloss' and DEMUCS' defaults)
STFT_RESOLUTIONS: tuple[tuple[int, int, int], ...] = ((1024, 120, 600), (2048, 240, 1200), (512, 50, 240))


def stft_magnitude(x: torch.Tensor, n_fft: int, hop_length: int, win_length: int, eps: float = 1e-8) -> torch.Tensor:
    """``x (B, T)`` -> magnitude ``(B, n_fft // 2 + 1, frames)``: Hann window of ``win_length``
    (centred frames, reflect padding), ``sqrt(max(|X|^2, eps))`` so the log stays finite."""
    window = torch.hann_window(win_length, dtype=x.dtype, device=x.device)
    spec = torch.stft(x, n_fft, hop_length, win_length, window, return_complex=True)
    return torch.sqrt(torch.clamp(spec.real ** 2 + spec.imag ** 2, min=eps))


def multi_resolution_stft_loss(est: torch.Tensor, ref: torch.Tensor,
                               resolutions: Sequence[Sequence[int]] = STFT_RESOLUTIONS,
                               eps: float = 1e-8) -> torch.Tensor:
    """Multi-resolution STFT loss (Yamamoto et al. 2020, arXiv 1910.11480), averaged over ``resolutions``.

    Per resolution: spectral convergence ``||S_ref - S_est||_F / ||S_ref||_F`` (Frobenius norms over
    the whole batch) plus the mean absolute difference of ``log S``, with ``S`` the STFT magnitude
    of :func:`stft_magnitude`.

    Args:
        est, ref: ``(..., T)`` waveforms of the same shape; ``T`` must exceed half the largest FFT
            size (reflect padding).
        resolutions: ``(n_fft, hop_length, win_length)`` triples.

    Returns:
        a scalar tensor.
    """
    if est.shape != ref.shape:
        raise ValueError(f"est and ref need the same shape, got {tuple(est.shape)} and {tuple(ref.shape)}")
    longest = max(int(r[0]) for r in resolutions)
    if est.shape[-1] <= longest // 2:
        raise ValueError(f"multi-resolution STFT loss: {est.shape[-1]} samples, need more than {longest // 2} "
                         f"(half the largest FFT size {longest})")
    x, y = est.reshape(-1, est.shape[-1]), ref.reshape(-1, ref.shape[-1])
    total = est.new_zeros(())
    for n_fft, hop, win in resolutions:
        x_mag = stft_magnitude(x, int(n_fft), int(hop), int(win), eps)
        y_mag = stft_magnitude(y, int(n_fft), int(hop), int(win), eps)
        convergence = torch.linalg.norm(y_mag - x_mag) / torch.linalg.norm(y_mag)
        log_magnitude = F.l1_loss(torch.log(x_mag), torch.log(y_mag))
        total = total + convergence + log_magnitude
    return total / len(resolutions)


def pesq_module():
    """``torch_pesq.PesqLoss``, or one clear error when the ``train`` extra is not installed."""
    try:
        from torch_pesq import PesqLoss
    except ImportError:
        from frontend.errors import VoxsepError
        raise VoxsepError('task_options.loss.pesq needs the torch-pesq package: pip install "voxsep[train]"') from None
    return PesqLoss


@functools.lru_cache(maxsize=None)
def _pesq_at(sample_rate: int) -> torch.nn.Module:
    return pesq_module()(1.0, sample_rate=sample_rate).requires_grad_(False)  # its filters stay fixed


def pesq_loss(est: torch.Tensor, ref: torch.Tensor, sample_rate: int,
              active: torch.Tensor | None = None) -> torch.Tensor:
    """Mean PESQ disturbance of ``est (B, T)`` against ``ref (B, T)`` (``torch_pesq.PesqLoss``
    with factor 1: ``0.1 d_sym + 0.0309 d_asym``, the two distances that PESQ's MOS subtracts from
    4.5), over the items where ``active`` is true (default: references with energy; the level
    alignment is undefined for silence). Zero (with a gradient path) when no item is active.

    Raises:
        VoxsepError: ``torch-pesq`` is not installed (``pip install "voxsep[train]"``).
    """
    if active is None:
        active = ref.pow(2).sum(-1) > 1e-8
    if not bool(active.any()):
        return est.sum() * 0.0
    module = _pesq_at(int(sample_rate)).to(est.device)
    return module(ref[active].float(), est[active].float()).mean()


def neg_si_snr(est: torch.Tensor, ref: torch.Tensor, active: torch.Tensor | None = None) -> torch.Tensor:
    """Mean negative SI-SNR (dB) of ``est (B, T)`` against ``ref (B, T)``, over the items where
    ``active`` is true (default: references with energy; SI-SNR is undefined for silence).
    Zero (with a gradient path) when no item is active."""
    if active is None:
        active = ref.pow(2).sum(-1) > 1e-8
    if not bool(active.any()):
        return est.sum() * 0.0
    return -si_snr(est[active], ref[active]).mean()
