"""Oracle time-frequency masks: the ceiling a mask-based separator could reach.

Both masks are computed from the references on a Hann STFT (:class:`frontend.STFT`, 32 ms window,
hop 8 ms) and applied to the mixture's complex STFT, then inverted:

* **IBM** (ideal binary mask): each time-frequency bin goes wholly to the source with the largest
  magnitude there.
* **IRM** (ideal ratio mask, magnitude form): ``M_i = |S_i| / sum_j |S_j|``.

They always output the true number of sources (count accuracy 100 % by construction).
"""
from __future__ import annotations

import torch

from frontend import STFT

WINDOW_SECONDS = 0.032


def _stft_for(sample_rate: int) -> STFT:
    n_fft = 1 << max(4, round(WINDOW_SECONDS * sample_rate - 1).bit_length())  # 256 at 8 kHz
    return STFT(n_fft=n_fft, hop_length=n_fft // 4)


def oracle_mask_separate(mix: torch.Tensor, sources: torch.Tensor, sample_rate: int, kind: str = "irm") -> torch.Tensor:
    """Separate ``mix (T,)`` with an ideal mask built from ``sources (C, T)``.

    Args:
        kind: ``"ibm"`` or ``"irm"``.

    Returns:
        ``(C, T)`` float32 estimates.
    """
    if mix.dim() != 1 or sources.dim() != 2 or sources.shape[-1] != mix.shape[-1]:
        raise ValueError(f"expected mix (T,) and sources (C, T), got {tuple(mix.shape)} and "
                         f"{tuple(sources.shape)}")
    stft = _stft_for(sample_rate)
    mix64 = mix.to(torch.float64)
    spec_mix = stft(mix64)  # (F, N)
    mag = stft(sources.to(torch.float64)).abs()  # (C, F, N)
    if kind == "ibm":
        mask = torch.nn.functional.one_hot(mag.argmax(dim=0), mag.shape[0]).permute(2, 0, 1).to(mag.dtype)
    elif kind == "irm":
        mask = mag / mag.sum(dim=0, keepdim=True).clamp_min(1e-12)
    else:
        raise ValueError(f"unknown oracle mask {kind!r} (expected 'ibm' or 'irm')")
    est = stft.inverse(mask * spec_mix[None], length=mix.shape[-1])  # (C, T)
    return est.to(torch.float32)
