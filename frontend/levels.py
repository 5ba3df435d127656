"""Signal levels: active speech level (ITU-T P.56, method B), loudness (ITU-R BS.1770), peaks.

The mixer uses these to set talker gains the way wsj0-mix (active level) and LibriMix (LUFS) do.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torchaudio.functional as AF

_EPS = 1e-20


def active_speech_level(wav: torch.Tensor | np.ndarray, sample_rate: int) -> float:
    """Active speech level in dB re full scale (a full-scale sine's RMS is -3.01 dB), ITU-T P.56.

    Implements method B of P.56 (the algorithm of the ITU's ``sv56`` tool): the envelope is the
    signal magnitude smoothed twice with a 30 ms time constant; a sample counts as active above a
    threshold when its envelope exceeds it or did within the last 200 ms (hangover); the active
    level is the mean power over active samples at the threshold where the level sits
    ``M = 15.9 dB`` above it (linear interpolation between the thresholds ``2**-k``).

    Returns ``-inf`` for digital silence. Written by hand: no maintained Python library offers P.56.
    """
    x = torch.as_tensor(wav, dtype=torch.float64).reshape(-1).numpy()
    n = x.size
    if n == 0 or not np.any(x):
        return -math.inf
    g = math.exp(-1.0 / (sample_rate * 0.03))
    hangover = int(round(0.2 * sample_rate))
    margin_db = 15.9
    # two first-order smoothers of |x| (IIR filters via scipy for speed)
    from scipy.signal import lfilter

    p = lfilter([1 - g], [1, -g], np.abs(x))
    q = lfilter([1 - g], [1, -g], p)
    total_energy = float(np.dot(x, x))
    # thresholds c_j = 2**-j for j = 0..n_thresholds-1 (covers 1.0 down to ~1e-5)
    n_thresholds = 16
    thresholds = 2.0 ** -np.arange(n_thresholds)
    # activity with hangover: active while q >= c or within `hangover` samples after it was
    active_counts = np.empty(n_thresholds)
    for j, c in enumerate(thresholds):
        above = q >= c
        if not above.any():
            active_counts[j] = 0
            continue
        # samples since the last "above" sample; active if <= hangover
        idx = np.where(above, np.arange(n), -hangover - 1)
        last = np.maximum.accumulate(idx)
        active_counts[j] = np.count_nonzero(np.arange(n) - last <= hangover)
    level_db = np.full(n_thresholds, -np.inf)
    ok = active_counts > 0
    level_db[ok] = 10 * np.log10(total_energy / active_counts[ok] + _EPS)
    thr_db = 20 * np.log10(thresholds)
    diff = level_db - thr_db  # large at low thresholds, falls as the threshold rises
    # like sv56, scan from the lowest threshold upwards and stop at the first one where the level
    # is no longer M dB above it (at the highest thresholds few samples are active and the
    # difference can rise again, so a top-down scan finds a spurious crossing)
    for j in range(n_thresholds - 1, -1, -1):
        if not ok[j]:
            break
        if diff[j] <= margin_db:
            if j == n_thresholds - 1:
                return float(level_db[j])
            t = (margin_db - diff[j + 1]) / (diff[j] - diff[j + 1])
            return float(level_db[j + 1] + t * (level_db[j] - level_db[j + 1]))
    # very low-level signals: fall back to the long-term level over the whole signal
    return float(10 * np.log10(total_energy / n + _EPS))


def rms_db(wav: torch.Tensor) -> float:
    """Long-term RMS level in dB re full scale (``-inf`` for silence)."""
    power = float(torch.as_tensor(wav, dtype=torch.float64).pow(2).mean())
    return 10 * math.log10(power) if power > 0 else -math.inf


def loudness(wav: torch.Tensor, sample_rate: int) -> float:
    """Integrated loudness in LUFS (ITU-R BS.1770-4) via ``torchaudio.functional.loudness``.

    Signals shorter than one 400 ms gating block are zero-padded to it. Silence gives ``-inf``.
    """
    x = torch.as_tensor(wav, dtype=torch.float32).reshape(1, -1)
    block = int(0.4 * sample_rate)
    if x.shape[-1] < block:
        x = torch.nn.functional.pad(x, (0, block - x.shape[-1]))
    if not torch.any(x):
        return -math.inf
    value = float(AF.loudness(x, sample_rate))
    return value if math.isfinite(value) else -math.inf


def gain_to_level(current_db: float, target_db: float) -> float:
    """Linear gain that moves a level ``current_db`` to ``target_db`` (1.0 for silence)."""
    if not math.isfinite(current_db):
        return 1.0
    return 10 ** ((target_db - current_db) / 20)


def peak(wav: torch.Tensor) -> float:
    """Largest absolute sample value."""
    return float(torch.as_tensor(wav).abs().max()) if torch.as_tensor(wav).numel() else 0.0


def limit_peak(wav: torch.Tensor, ceiling: float) -> torch.Tensor:
    """Scale ``wav`` down so that its peak is ``ceiling`` if it is above; otherwise return it as is
    (for outputs of no fixed scale, e.g. SI-SNR-trained separators, before writing them)."""
    top = peak(wav)
    return wav * (ceiling / top) if top > ceiling else wav


def scale_to_mixture(est_sources: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
    """Give estimates ``(K, T)`` their share of the mixture ``(T,)``'s level: one gain per estimate,
    chosen jointly so that their weighted sum is the least-squares fit of the mixture (a gain may be
    negative: SI-SNR training leaves the sign free). Estimates of no fixed scale then sound at the
    level they have in the mixture."""
    if est_sources.dim() != 2 or mix.dim() != 1 or est_sources.shape[-1] != mix.shape[-1]:
        raise ValueError(f"expected est_sources (K, T) and mix (T,), got {tuple(est_sources.shape)} "
                         f"and {tuple(mix.shape)}")
    if est_sources.shape[0] == 0:
        return est_sources
    basis = est_sources.to(torch.float64).T  # (T, K)
    gains = torch.linalg.lstsq(basis, mix.to(torch.float64)[:, None], rcond=None).solution[:, 0]  # (K,)
    return (est_sources.to(torch.float64) * gains[:, None]).to(est_sources.dtype)
