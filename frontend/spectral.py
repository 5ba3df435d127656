"""Short-time Fourier transforms and mel spectrograms (thin modules over torch/torchaudio).

``STFT`` uses a Hann window with hop ``n_fft // 4`` by default, which satisfies the
constant-overlap-add condition, so ``inverse(forward(x))`` reconstructs ``x`` to float precision.
"""
from __future__ import annotations

import torch
import torchaudio


class STFT(torch.nn.Module):
    """Complex STFT and its inverse.

    Args:
        n_fft: FFT size in samples.
        hop_length: hop in samples (default ``n_fft // 4``).
        win_length: window length (default ``n_fft``).
    """

    def __init__(self, n_fft: int = 512, hop_length: int | None = None, win_length: int | None = None):
        super().__init__()
        self.n_fft = n_fft
        self.hop_length = hop_length or n_fft // 4
        self.win_length = win_length or n_fft

    def _window(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        # made in the signal's dtype (a float32 window cast to float64 loses precision)
        return torch.hann_window(self.win_length, dtype=dtype, device=device)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """``wav (..., T)`` -> complex ``spec (..., F, N)`` with ``F = n_fft // 2 + 1``."""
        shape = wav.shape
        spec = torch.stft(wav.reshape(-1, shape[-1]), self.n_fft, self.hop_length, self.win_length,
                          window=self._window(wav.dtype, wav.device), center=True, return_complex=True)
        return spec.reshape(*shape[:-1], *spec.shape[-2:])

    def inverse(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        """Complex ``spec (..., F, N)`` -> ``wav (..., length)``."""
        shape = spec.shape
        real_dtype = torch.float64 if spec.dtype == torch.complex128 else torch.float32
        wav = torch.istft(spec.reshape(-1, *shape[-2:]), self.n_fft, self.hop_length, self.win_length,
                          window=self._window(real_dtype, spec.device), center=True, length=length)
        return wav.reshape(*shape[:-2], length)


class LogMelSpectrogram(torch.nn.Module):
    """Log-compressed mel spectrogram, ``wav (..., T)`` -> ``mel (..., n_mels, N)``.

    ``N = T // hop_length + 1`` (centred frames), values ``log(clamp(mel, min=1e-5))``.
    """

    def __init__(self, sample_rate: int = 16000, n_fft: int = 1024, hop_length: int = 256,
                 n_mels: int = 80, f_min: float = 0.0, f_max: float | None = None):
        super().__init__()
        self.hop_length = hop_length
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels,
            f_min=f_min, f_max=f_max, power=1.0, norm="slaney", mel_scale="slaney", center=True)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return torch.log(torch.clamp(self.mel(wav), min=1e-5))
