"""Mel-conditioned WaveNet vocoder (Shen et al. 2018, Tacotron 2, arXiv 1712.05884).

The log-mel front end is :class:`frontend.LogMelSpectrogram` (its settings live in the config so
that a checkpoint carries them); features are standardised by fixed constants
(``(log_mel - mel_mean) / mel_std``) before the WaveNet's learned transposed-conv upsampler.
``vocode(mel)`` samples audio autoregressively with the fast generator.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from engine.checkpoint import config_from_dict, register_model
from frontend import LogMelSpectrogram
from generation.wavenet import WaveNet, WaveNetConfig, shift_right


def default_vocoder_wavenet() -> WaveNetConfig:
    return WaveNetConfig(layers_per_cycle=10, n_cycles=2, kernel_size=2, causal=True,
                         residual_channels=64, gate_channels=64, skip_channels=64, output="mulaw",
                         local_channels=80, upsample_factors=(4, 4, 4, 4))


@dataclass
class VocoderConfig:
    """``wavenet``: causal, mulaw or logistic_mixture output, ``local_channels == n_mels``,
    ``prod(upsample_factors) == hop_length``. Mel settings as :class:`frontend.LogMelSpectrogram`."""

    wavenet: WaveNetConfig = field(default_factory=default_vocoder_wavenet)
    sample_rate: int = 16000
    n_fft: int = 1024
    hop_length: int = 256
    n_mels: int = 80
    f_min: float = 0.0
    f_max: float | None = None
    mel_mean: float = -5.0
    mel_std: float = 4.0

    def __post_init__(self):
        if isinstance(self.wavenet, dict):
            self.wavenet = WaveNetConfig.from_dict(self.wavenet)
        w = self.wavenet
        if not w.causal or w.output == "regression":
            raise ValueError("the vocoder WaveNet must be causal with mulaw or logistic_mixture output")
        if w.local_channels != self.n_mels:
            raise ValueError(f"wavenet.local_channels ({w.local_channels}) must equal n_mels ({self.n_mels})")
        if w.hop_length != self.hop_length:
            raise ValueError(f"prod(wavenet.upsample_factors) = {w.hop_length} must equal hop_length "
                             f"({self.hop_length})")


@register_model("wavenet_vocoder")
class Vocoder(nn.Module):
    """``forward(wav (B, T), mel (B, n_mels, N))`` -> teacher-forced WaveNet output ``(B, C, T)``
    predicting ``wav``; ``mel_of(wav)`` -> features; ``vocode(mel)`` -> waveform."""

    config_class = VocoderConfig

    def __init__(self, config: VocoderConfig | None = None):
        super().__init__()
        self.config = c = config if config is not None else VocoderConfig()
        self.wavenet = WaveNet(c.wavenet)
        self.mel = LogMelSpectrogram(c.sample_rate, c.n_fft, c.hop_length, c.n_mels, c.f_min, c.f_max)
        # LogMelSpectrogram's filterbank/window are fixed buffers, not learned weights: keep them
        # out of the checkpoint so that old checkpoints load with newer front ends.
        for name, buf in list(self.mel.named_buffers()):
            owner = self.mel.get_submodule(name.rsplit(".", 1)[0]) if "." in name else self.mel
            owner._non_persistent_buffers_set.add(name.rsplit(".", 1)[-1])

    @classmethod
    def from_config(cls, config: dict) -> "Vocoder":
        return cls(config_from_dict(VocoderConfig, config, "Vocoder"))

    def mel_of(self, wav: torch.Tensor) -> torch.Tensor:
        """``wav (T,)`` or ``(B, T)`` -> standardised log-mel ``(..., n_mels, T // hop + 1)``."""
        return (self.mel(wav) - self.config.mel_mean) / self.config.mel_std

    def forward(self, wav: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
        return self.wavenet(shift_right(wav), local_cond=mel)

    @torch.inference_mode()
    def vocode(self, mel: torch.Tensor, n_samples: int | None = None, temperature: float = 1.0,
               generator: torch.Generator | None = None, method: str = "auto",
               progress: bool = False) -> torch.Tensor:
        """``mel (n_mels, N)`` or ``(B, n_mels, N)`` (from :meth:`mel_of`) -> ``wav (T,)`` / ``(B, T)``.

        ``n_samples`` defaults to ``(N - 1) * hop`` (the length whose centred frames are ``mel``).
        """
        squeeze = mel.dim() == 2
        mel = mel.unsqueeze(0) if squeeze else mel
        if mel.dim() != 3 or mel.shape[1] != self.config.n_mels:
            raise ValueError(f"mel must be ({self.config.n_mels}, N) or (B, {self.config.n_mels}, N), "
                             f"got {tuple(mel.shape)}")
        if n_samples is None:
            n_samples = max(1, (mel.shape[-1] - 1) * self.config.hop_length)
        wav = self.wavenet.generate(n_samples, local_cond=mel.to(next(self.parameters()).dtype),
                                    temperature=temperature, batch_size=mel.shape[0],
                                    generator=generator, method=method, progress=progress)
        return wav[0] if squeeze else wav
