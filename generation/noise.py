"""Synthetic noise for training and testing the denoiser (no noise corpus needed).

Every generator takes ``(n_samples, sample_rate, rng)`` with a ``numpy.random.Generator`` and
returns float32 ``(n_samples,)`` at unit RMS, so the same seed gives the same noise anywhere.
Kinds: coloured noise (spectral slope from blue to brown), band-pass filtered noise, mains hum
with harmonics and drift, clicks and crackle, tonal whistles/sweeps, amplitude-modulated
(fluctuating) noise, and babble made from other utterances (the caller passes them in).
:func:`make_noise` draws a kind (or a sum of two) at random; :func:`mix_at_snr`
(:mod:`frontend.noise`, shared with separation's mixtures) scales noise to a signal-to-noise ratio.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from scipy import signal

from frontend.noise import colored_noise as shaped_noise
from frontend.noise import mix_at_snr  # noqa: F401  (re-exported: the one copy, in frontend)

NOISE_KINDS = ("colored", "bandpass", "hum", "clicks", "tonal", "modulated", "babble")


def _unit_rms(x: np.ndarray) -> np.ndarray:
    rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))
    return (x / rms if rms > 0 else x).astype(np.float32)


def colored_noise(n_samples: int, sample_rate: int, rng: np.random.Generator, slope: float | None = None) -> np.ndarray:
    """Gaussian noise with power spectrum ``~ f^-slope`` (0 white, 1 pink, 2 brown, -1 blue); a random
    slope in [-1, 2) when not given (:func:`frontend.noise.colored_noise`)."""
    if slope is None:
        slope = float(rng.uniform(-1.0, 2.0))
    return _unit_rms(shaped_noise(n_samples, slope, rng))


def bandpass_noise(n_samples: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """White noise through a random 4th-order Butterworth band-pass (e.g. fans, engines, hiss)."""
    nyq = sample_rate / 2
    centre = float(np.exp(rng.uniform(np.log(80.0), np.log(0.8 * nyq))))
    width = float(rng.uniform(0.2, 1.5))  # octaves
    low = max(20.0, centre / 2 ** (width / 2))
    high = min(0.95 * nyq, centre * 2 ** (width / 2))
    if high <= low * 1.05:
        low, high = 0.5 * high, high
    sos = signal.butter(4, [low, high], btype="bandpass", fs=sample_rate, output="sos")
    return _unit_rms(signal.sosfilt(sos, rng.standard_normal(n_samples + 512))[512:])


def hum(n_samples: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Mains-like hum: fundamental 45-130 Hz, harmonics with random decaying levels, slow drift."""
    f0 = float(rng.choice([50.0, 60.0])) if rng.random() < 0.6 else float(rng.uniform(45.0, 130.0))
    t = np.arange(n_samples) / sample_rate
    drift = 1.0 + 0.003 * np.sin(2 * np.pi * rng.uniform(0.05, 0.5) * t + rng.uniform(0, 2 * np.pi))
    phase = 2 * np.pi * f0 * np.cumsum(drift) / sample_rate
    out = np.zeros(n_samples)
    n_harm = int(rng.integers(3, 12))
    decay = rng.uniform(0.3, 0.9)
    for h in range(1, n_harm + 1):
        if h * f0 >= sample_rate / 2:
            break
        out += decay ** (h - 1) * rng.uniform(0.3, 1.0) * np.sin(h * phase + rng.uniform(0, 2 * np.pi))
    out += 0.02 * rng.standard_normal(n_samples)  # a little hiss so it is never purely tonal
    return _unit_rms(out)


def clicks(n_samples: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Sparse clicks and crackle: Poisson-timed decaying bursts of random sign and level."""
    rate = float(rng.uniform(2.0, 60.0))  # clicks per second
    n_clicks = max(1, int(rng.poisson(rate * n_samples / sample_rate)))
    out = 1e-3 * rng.standard_normal(n_samples)
    length = max(4, int(sample_rate * rng.uniform(0.0005, 0.004)))
    env = np.exp(-np.arange(length) / (length / 4))
    for pos in rng.integers(0, n_samples, n_clicks):
        burst = env * rng.standard_normal(length) * rng.uniform(0.2, 1.0)
        end = min(n_samples, pos + length)
        out[pos:end] += burst[: end - pos]
    return _unit_rms(out)


def tonal(n_samples: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Whistles and beeps: a few sines or linear sweeps, some gated on and off."""
    t = np.arange(n_samples) / sample_rate
    out = np.zeros(n_samples)
    for _ in range(int(rng.integers(1, 4))):
        f_start, f_end = rng.uniform(200.0, 0.45 * sample_rate, 2)
        if rng.random() < 0.5:
            f_end = f_start
        duration = max(t[-1], 1e-3) if n_samples > 1 else 1.0
        inst = f_start + (f_end - f_start) * t / duration
        tone = np.sin(2 * np.pi * np.cumsum(inst) / sample_rate + rng.uniform(0, 2 * np.pi))
        if rng.random() < 0.5:  # on/off gating (beeps)
            gate_hz = rng.uniform(0.5, 6.0)
            tone *= (np.sin(2 * np.pi * gate_hz * t) > 0).astype(float)
        out += rng.uniform(0.3, 1.0) * tone
    out += 0.01 * rng.standard_normal(n_samples)
    return _unit_rms(out)


def modulated_noise(n_samples: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Coloured noise with a slow random amplitude envelope (traffic, wind, crowds)."""
    base = colored_noise(n_samples, sample_rate, rng)
    n_knots = max(2, int(n_samples / sample_rate * rng.uniform(1.0, 8.0)) + 2)
    knots = np.exp(rng.normal(0.0, 0.8, n_knots))
    env = np.interp(np.linspace(0, n_knots - 1, n_samples), np.arange(n_knots), knots)
    return _unit_rms(base * env)


def babble(n_samples: int, sample_rate: int, rng: np.random.Generator,
           utterances: Sequence[np.ndarray]) -> np.ndarray:
    """Sum of the given other talkers' utterances, each looped/cropped at a random offset."""
    if not utterances:
        return colored_noise(n_samples, sample_rate, rng)
    out = np.zeros(n_samples)
    for utt in utterances:
        utt = np.asarray(utt, dtype=np.float64)
        if utt.size == 0:
            continue
        reps = int(np.ceil((n_samples + utt.size) / utt.size))
        looped = np.tile(utt, reps)
        start = int(rng.integers(0, utt.size))
        part = looped[start:start + n_samples]
        rms = np.sqrt(np.mean(part ** 2))
        if rms > 0:
            out += part / rms * rng.uniform(0.5, 1.0)
    return _unit_rms(out) if np.any(out) else colored_noise(n_samples, sample_rate, rng)


_GENERATORS: dict[str, Callable] = {
    "colored": colored_noise, "bandpass": bandpass_noise, "hum": hum, "clicks": clicks,
    "tonal": tonal, "modulated": modulated_noise,
}


def make_noise(n_samples: int, sample_rate: int, rng: np.random.Generator,
               kinds: Sequence[str] = NOISE_KINDS,
               babble_source: Callable[[int, np.random.Generator], list[np.ndarray]] | None = None,
               p_combo: float = 0.3) -> tuple[np.ndarray, str]:
    """A random noise of one of ``kinds`` (or, with probability ``p_combo``, the sum of two).

    ``babble_source(n_talkers, rng)`` returns other utterances for ``"babble"`` (skipped if None).
    Returns ``(noise (n_samples,) float32 at unit RMS, description)``.
    """
    unknown = set(kinds) - set(NOISE_KINDS)
    if unknown:
        raise ValueError(f"unknown noise kinds {sorted(unknown)}; known: {NOISE_KINDS}")
    usable = [k for k in kinds if k != "babble" or babble_source is not None]
    if not usable:
        raise ValueError("no usable noise kind (babble needs a babble source)")
    n_parts = 2 if rng.random() < p_combo and len(usable) > 1 else 1
    chosen = list(rng.choice(usable, size=n_parts, replace=False))
    out = np.zeros(n_samples)
    for kind in chosen:
        if kind == "babble":
            part = babble(n_samples, sample_rate, rng, babble_source(int(rng.integers(2, 7)), rng))
        else:
            part = _GENERATORS[kind](n_samples, sample_rate, rng)
        out += part * rng.uniform(0.5, 1.0)
    return _unit_rms(out), "+".join(chosen)
