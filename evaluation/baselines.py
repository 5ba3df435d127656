"""Signal-processing baselines for the enhancement and vocoder tables (no learned models).

Denoisers, ``noisy (T,) -> estimate (T,)`` float64 at the given rate:

* :func:`wiener_filter` - ``scipy.signal.wiener`` (time-domain local-statistics Wiener filter,
  window 15), the baseline of the first denoiser recipe.
* :func:`stft_wiener` - a short-time spectral Wiener filter with the decision-directed a priori
  SNR (Ephraim and Malah 1984; Scalart and Filho 1996), the noise spectrum taken from the quietest
  frames: the classical "Wiener" row of enhancement papers (2.22 PESQ on VoiceBank-DEMAND there).
* :func:`spectral_gating` - non-stationary spectral gating by the ``noisereduce`` package
  (Sainburg et al. 2020), the ``[eval]`` extra.

Vocoder baseline: :func:`griffin_lim` - magnitudes from a log-mel spectrogram (torchaudio's
``InverseMelScale``) and Griffin-Lim phase retrieval (64 iterations).
"""
from __future__ import annotations

import numpy as np
import torch
import torchaudio
from scipy import signal


def _as_float64(noisy) -> np.ndarray:
    x = noisy.detach().cpu().numpy() if isinstance(noisy, torch.Tensor) else np.asarray(noisy)
    if x.ndim != 1:
        raise ValueError(f"a denoiser baseline takes one (T,) signal, got shape {x.shape}")
    return x.astype(np.float64)


def wiener_filter(noisy, sample_rate: int, window: int = 15) -> np.ndarray:
    """``scipy.signal.wiener(noisy, window)`` (``sample_rate`` unused: the window is in samples)."""
    x = _as_float64(noisy)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = signal.wiener(x, window)
    return np.nan_to_num(out)


def stft_wiener(noisy, sample_rate: int, frame_ms: float = 32.0, alpha: float = 0.98,
                noise_quantile: float = 0.1, gain_floor_db: float = -25.0) -> np.ndarray:
    """Spectral Wiener filter with the decision-directed a priori SNR.

    Args:
        noisy: ``(T,)``.
        sample_rate: Hz (sets the frame: ``frame_ms``, Hann, 75 % overlap).
        alpha: smoothing of the decision-directed estimate.
        noise_quantile: the noise power spectrum is the mean of the frames whose energy is in this
            lowest share (pauses between words).
        gain_floor_db: the smallest gain (limits musical noise).

    Returns:
        ``(T,)`` float64.
    """
    x = _as_float64(noisy)
    n_fft = 1 << max(4, int(round(frame_ms * sample_rate / 1000)) - 1).bit_length()
    _, _, spec = signal.stft(x, nperseg=n_fft, noverlap=3 * n_fft // 4, window="hann", boundary="even")
    power = np.abs(spec) ** 2  # (F, N)
    energy = power.sum(axis=0)
    k = max(1, int(round(noise_quantile * power.shape[1])))
    noise = power[:, np.argsort(energy)[:k]].mean(axis=1) + 1e-12  # (F,)
    floor = 10 ** (gain_floor_db / 20)
    out = np.empty_like(spec)
    previous = np.zeros(power.shape[0])
    for t in range(power.shape[1]):
        gamma = power[:, t] / noise  # a posteriori SNR
        xi = alpha * previous / noise + (1 - alpha) * np.maximum(gamma - 1.0, 0.0)
        gain = np.maximum(xi / (1.0 + xi), floor)
        out[:, t] = gain * spec[:, t]
        previous = np.abs(out[:, t]) ** 2
    _, y = signal.istft(out, nperseg=n_fft, noverlap=3 * n_fft // 4, window="hann", boundary=True)
    y = y[: x.size]
    return np.pad(y, (0, x.size - y.size))


def spectral_gating(noisy, sample_rate: int) -> np.ndarray:
    """``noisereduce.reduce_noise`` in its non-stationary mode (the package's default settings).

    Raises:
        ImportError: ``noisereduce`` is not installed (the ``[eval]`` extra).
    """
    import noisereduce

    x = _as_float64(noisy)
    y = noisereduce.reduce_noise(y=x, sr=sample_rate, stationary=False, n_jobs=1)
    return np.asarray(y, dtype=np.float64)[: x.size]


def griffin_lim(log_mel: torch.Tensor, n_samples: int, sample_rate: int, n_fft: int, hop_length: int,
                f_min: float = 0.0, f_max: float | None = None, n_iter: int = 64) -> torch.Tensor:
    """A waveform ``(n_samples,)`` whose log-mel is close to ``log_mel (n_mels, N)``.

    ``log_mel`` is the natural log of a slaney-normalised mel magnitude spectrogram
    (:class:`frontend.LogMelSpectrogram` with the same settings); magnitudes come from
    torchaudio's ``InverseMelScale`` and the phase from Griffin-Lim (``n_iter`` iterations).
    """
    n_mels = log_mel.shape[-2]
    inv = torchaudio.transforms.InverseMelScale(n_fft // 2 + 1, n_mels, sample_rate, f_min, f_max,
                                                norm="slaney", mel_scale="slaney")
    gl = torchaudio.transforms.GriffinLim(n_fft, hop_length=hop_length, power=1.0, n_iter=n_iter)
    wav = gl(inv(torch.exp(log_mel.float())))
    return torch.nn.functional.pad(wav, (0, max(0, n_samples - wav.shape[-1])))[:n_samples]
