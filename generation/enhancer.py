"""WaveNet speech denoiser (Rethage, Pons, Serra 2018, arXiv 1706.07162).

A non-causal WaveNet (kernel 3, regression output) maps a noisy waveform to the clean one. It is
trained on crops of ``target_field + receptive_field - 1`` samples and scored only on the central
``target_field`` outputs, whose whole receptive field lies inside the crop; :meth:`Enhancer.enhance`
runs long files the same way, one target field at a time with its context on both sides.

Levels: the input is scaled to ``input_rms`` before the network and the output scaled back, so
the model sees speech at the level it was trained on whatever the file's level.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from engine.checkpoint import config_from_dict, register_model
from generation.wavenet import WaveNet, WaveNetConfig


def default_denoiser_wavenet() -> WaveNetConfig:
    return WaveNetConfig(layers_per_cycle=10, n_cycles=2, kernel_size=3, causal=False,
                         residual_channels=48, gate_channels=48, skip_channels=64, output="regression")


@dataclass
class EnhancerConfig:
    """``wavenet``: the network (must be regression output); ``target_field``: output samples
    per pass; ``input_rms``: level the input is normalised to (linear RMS)."""

    wavenet: WaveNetConfig = field(default_factory=default_denoiser_wavenet)
    target_field: int = 4096
    input_rms: float = 0.05

    def __post_init__(self):
        if isinstance(self.wavenet, dict):
            self.wavenet = WaveNetConfig.from_dict(self.wavenet)
        if self.wavenet.output != "regression" or self.wavenet.regression_channels != 1:
            raise ValueError("the denoiser WaveNet needs output='regression' with regression_channels=1")
        if self.wavenet.local_channels or self.wavenet.global_channels:
            raise ValueError("the denoiser WaveNet takes no conditioning")
        if self.target_field < 1:
            raise ValueError(f"target_field must be >= 1, got {self.target_field}")


@register_model("wavenet_denoiser")
class Enhancer(nn.Module):
    """``forward(noisy (B, T)) -> est_clean (B, T)`` (same-length, zero-padded at the edges);
    ``enhance(noisy (T,) or (B, T)) -> clean`` for any length, level-normalised."""

    config_class = EnhancerConfig

    def __init__(self, config: EnhancerConfig | None = None):
        super().__init__()
        self.config = config if config is not None else EnhancerConfig()
        self.wavenet = WaveNet(self.config.wavenet)

    @classmethod
    def from_config(cls, config: dict) -> "Enhancer":
        return cls(config_from_dict(EnhancerConfig, config, "Enhancer"))

    @property
    def receptive_field(self) -> int:
        return self.wavenet.receptive_field

    @property
    def training_length(self) -> int:
        """Crop length for training: one target field plus its full context."""
        return self.config.target_field + self.receptive_field - 1

    def valid_slice(self, length: int) -> slice:
        """Outputs of a ``length``-sample crop whose receptive field lies inside the crop."""
        return slice(self.wavenet.lookback, length - self.wavenet.lookahead)

    def forward(self, noisy: torch.Tensor) -> torch.Tensor:
        return self.wavenet(noisy)[:, 0]

    @torch.inference_mode()
    def enhance(self, noisy: torch.Tensor, target_field: int | None = None) -> torch.Tensor:
        """Denoise ``noisy (T,)`` or ``(B, T)`` -> same shape; runs ``target_field`` samples a pass
        (default: the larger of the training target field and 16384)."""
        if noisy.dim() not in (1, 2):
            raise ValueError(f"noisy must be (T,) or (B, T), got {tuple(noisy.shape)}")
        squeeze = noisy.dim() == 1
        x = noisy.unsqueeze(0) if squeeze else noisy
        p = next(self.parameters())
        x = x.to(p.dtype)
        batch, n = x.shape
        rms = x.pow(2).mean(dim=-1, keepdim=True).sqrt().clamp(min=1e-6)
        scale = self.config.input_rms / rms
        x = x * scale
        # Any chunk size gives the same output (each chunk carries its full context); long chunks
        # waste less work on context than the training target field would.
        tf = target_field or max(self.config.target_field, 16384)
        lookback, lookahead = self.wavenet.lookback, self.wavenet.lookahead
        padded = F.pad(x, (lookback, lookahead + tf))
        out = torch.empty_like(x)
        for start in range(0, n, tf):
            m = min(tf, n - start)
            seg = padded[:, start:start + m + lookback + lookahead]
            out[:, start:start + m] = self(seg)[:, lookback:lookback + m]
        out = out / scale
        return out[0] if squeeze else out
