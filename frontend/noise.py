"""Noise at a chosen level: coloured Gaussian noise, excerpts of recordings, and scaling/mixing noise at an SNR.

One copy for every task: separation's noisy mixtures (:mod:`separation.mixing`, dynamic mixing)
and the denoiser's training data (:mod:`generation.noise`). Functions take a
``numpy.random.Generator`` so the same seed gives the same noise anywhere; the SNR helpers accept
numpy arrays or torch tensors and keep the type (and dtype) of what they are given.
"""
from __future__ import annotations

import math

import numpy as np
import torch

#: Named colours as spectral slopes (power ~ f^-slope).
COLOR_SLOPES = {"white": 0.0, "pink": 1.0, "brown": 2.0}


def colored_noise(n_samples: int, slope: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS Gaussian noise with power spectrum ``~ f^-slope``: 0 white, 1 pink, 2 brown, -1 blue.

    Shaped in the frequency domain (the DC bin takes the lowest non-zero frequency's weight) and
    made zero-mean; white noise is returned as drawn (scaled to unit RMS).

    Args:
        n_samples: length.
        slope: spectral slope (any real; the frequency axis is in bins, so the rate does not matter).
        rng: the random source (draws ``n_samples`` standard normals).

    Returns:
        ``(n_samples,)`` float64.
    """
    x = rng.standard_normal(n_samples)
    if slope != 0 and n_samples > 2:
        spec = np.fft.rfft(x)
        f = np.arange(spec.shape[0], dtype=float)
        f[0] = f[1]
        spec /= f ** (slope / 2)
        x = np.fft.irfft(spec, n=n_samples)
        x = x - x.mean()
    rms = np.sqrt(np.mean(x ** 2))
    return x / max(rms, 1e-12)


def _power(x) -> float:
    if isinstance(x, torch.Tensor):
        return float(x.to(torch.float64).pow(2).mean())
    return float(np.mean(np.asarray(x, dtype=np.float64) ** 2))


def snr_gain(noise, speech, snr_db: float) -> float:
    """The gain ``g`` with ``10 log10(power(speech) / power(g * noise)) = snr_db`` (0 when either is silent)."""
    p_speech, p_noise = _power(speech), _power(noise)
    if p_noise <= 0 or p_speech <= 0:
        return 0.0
    return math.sqrt(p_speech / (p_noise * 10 ** (snr_db / 10)))


def scale_to_snr(noise, speech, snr_db: float):
    """``noise`` scaled so that ``10 log10(power(speech) / power(noise)) = snr_db`` (zeros when
    either is silent); an array or tensor like ``noise``."""
    return noise * snr_gain(noise, speech, snr_db)


def mix_at_snr(speech, noise, snr_db: float):
    """``speech + g * noise`` at ``snr_db`` (see :func:`snr_gain`), in the type and dtype of ``speech``."""
    mixed = speech + scale_to_snr(noise, speech, snr_db)
    if isinstance(speech, torch.Tensor):
        return mixed.to(speech.dtype)
    return np.asarray(mixed).astype(np.asarray(speech).dtype, copy=False)


def loop_excerpt(wav, n_samples: int, rng: np.random.Generator):
    """A random stretch of ``n_samples`` of ``wav (T,)`` (a noise recording), looped when shorter;
    an array or tensor like ``wav``. Draws one integer from ``rng`` (the start)."""
    size = int(wav.shape[-1])
    if size == 0:
        raise ValueError("loop_excerpt: empty recording")
    if size < n_samples:
        reps = n_samples // size + 1
        wav = wav.repeat(reps) if isinstance(wav, torch.Tensor) else np.tile(wav, reps)
    start = int(rng.integers(0, int(wav.shape[-1]) - n_samples + 1))
    return wav[start:start + n_samples]
