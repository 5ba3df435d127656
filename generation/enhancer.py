"""WaveNet speech denoiser (Rethage, Pons, Serra 2018, arXiv 1706.07162).

A non-causal WaveNet (kernel 3, regression output) maps a noisy waveform to the clean one. It is
trained on crops of ``target_field + receptive_field - 1`` samples and scored only on the central
``target_field`` outputs, whose whole receptive field lies inside the crop; :meth:`Enhancer.enhance`
runs long files the same way, one target field at a time with its context on both sides.

Levels: the input is scaled to ``input_rms`` before the network and the output scaled back, so
the model sees speech at the level it was trained on whatever the file's level.

:class:`FrameEnhancer` (``wavenet_tf_denoiser``) is the same WaveNet run over STFT frames instead of
samples: the log-magnitude frame is the input (a pointwise convolution from the frequency bins to the
residual channels), the regression head gives one magnitude mask per bin (sigmoid), and the masked
mixture STFT is inverted with the mixture's phase. A frame hop of 128 samples makes each layer 128
times cheaper than on samples, so a wider and deeper network with a receptive field of seconds fits
the CPU budget of the sample-level one.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from engine.checkpoint import config_from_dict, register_model
from frontend.spectral import STFT
from generation.wavenet import WaveNet, WaveNetConfig, pointwise


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

    def init_missing(self, missing: set[str]) -> dict:
        """After ``init_from`` (``engine.train.init_weights``): WaveNet layers that no checkpoint gave
        (``model.config.wavenet.n_cycles=3`` on a 2-cycle checkpoint) start with zero residual and
        skip convolutions, so they add nothing and the deeper model computes the checkpoint's output;
        their dilated convolutions keep their random start, so both learn from the first step.
        Returns ``{"wavenet_layers_grown": [indices]}`` (nothing when no whole layer was missing)."""
        grown = []
        for i, layer in enumerate(self.wavenet.layers):
            keys = {f"wavenet.layers.{i}.{name}" for name, _ in layer.named_parameters()}
            if not keys <= missing:
                continue
            for conv in (layer.residual, layer.skip):
                nn.init.zeros_(conv.weight)
                nn.init.zeros_(conv.bias)
            grown.append(i)
        return {"wavenet_layers_grown": grown} if grown else {}

    @property
    def receptive_field(self) -> int:
        return self.wavenet.receptive_field

    @property
    def training_length(self) -> int:
        """Crop length for training: one target field plus its full context."""
        return self.config.target_field + self.receptive_field - 1

    @property
    def lookback(self) -> int:
        """Past input samples each output sample depends on."""
        return self.wavenet.lookback

    @property
    def lookahead(self) -> int:
        """Future input samples each output sample depends on."""
        return self.wavenet.lookahead

    def valid_slice(self, length: int) -> slice:
        """Outputs of a ``length``-sample crop whose receptive field lies inside the crop."""
        return slice(self.lookback, length - self.lookahead)

    def _chunk_size(self, samples: int) -> int:
        """Output samples per pass of :meth:`enhance` (any size gives the same output)."""
        return samples

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
        tf = self._chunk_size(target_field or max(self.config.target_field, 16384))
        lookback, lookahead = self.lookback, self.lookahead
        padded = F.pad(x, (lookback, lookahead + tf))
        out = torch.empty_like(x)
        for start in range(0, n, tf):
            m = min(tf, n - start)
            seg = padded[:, start:start + m + lookback + lookahead]
            out[:, start:start + m] = self(seg)[:, lookback:lookback + m]
        out = out / scale
        return out[0] if squeeze else out


def default_frame_wavenet() -> WaveNetConfig:
    return WaveNetConfig(layers_per_cycle=6, n_cycles=2, kernel_size=3, causal=False, residual_channels=128,
                         gate_channels=128, skip_channels=128, output="regression", regression_channels=257)


@dataclass
class FrameEnhancerConfig:
    """``wavenet``: the network over frames (regression output, one channel per frequency bin:
    ``n_fft // 2 + 1``); ``n_fft``, ``hop_length``: the STFT; ``target_field``: output samples per
    training crop (the crop adds the receptive field on both sides, as the sample-level denoiser's);
    ``input_rms``: level the input is normalised to (linear RMS); ``mask_floor``: the mask's lowest
    gain (``floor + (1 - floor) * sigmoid``): a little of the noisy bin is kept instead of none, which
    trades a little residual noise for fewer suppression artefacts (an inference setting too:
    ``voxsep export --set mask_floor=F``)."""

    wavenet: WaveNetConfig = field(default_factory=default_frame_wavenet)
    n_fft: int = 512
    hop_length: int = 128
    target_field: int = 32000
    input_rms: float = 0.05
    mask_floor: float = 0.0

    def __post_init__(self):
        if isinstance(self.wavenet, dict):
            self.wavenet = WaveNetConfig.from_dict(self.wavenet)
        n_bins = self.n_fft // 2 + 1
        if self.wavenet.output != "regression" or self.wavenet.regression_channels != n_bins:
            raise ValueError(f"the frame denoiser's WaveNet needs output='regression' with regression_channels="
                             f"{n_bins} (n_fft // 2 + 1)")
        if self.wavenet.local_channels or self.wavenet.global_channels:
            raise ValueError("the denoiser WaveNet takes no conditioning")
        if not 1 <= self.hop_length <= self.n_fft // 2:
            raise ValueError(f"hop_length must be in 1..n_fft/2, got {self.hop_length}")
        if self.target_field < 1:
            raise ValueError(f"target_field must be >= 1, got {self.target_field}")
        if not 0.0 <= self.mask_floor < 1.0:
            raise ValueError(f"mask_floor must be in [0, 1), got {self.mask_floor}")


@register_model("wavenet_tf_denoiser")
class FrameEnhancer(Enhancer):
    """The WaveNet denoiser on STFT frames: ``forward(noisy (B, T)) -> est_clean (B, T)`` by a
    sigmoid magnitude mask per bin and frame; ``enhance`` as :class:`Enhancer` (long files in
    chunks, each with its full context)."""

    config_class = FrameEnhancerConfig

    def __init__(self, config: FrameEnhancerConfig | None = None):
        nn.Module.__init__(self)
        self.config = config if config is not None else FrameEnhancerConfig()
        c = self.config
        self.stft = STFT(c.n_fft, c.hop_length)
        self.wavenet = WaveNet(c.wavenet)
        # the frames' log magnitudes replace the sample-level input embedding
        self.wavenet.input_conv = None
        self.wavenet.input_embedding = None
        self.input_conv = nn.Conv1d(c.n_fft // 2 + 1, c.wavenet.residual_channels, 1)

    @classmethod
    def from_config(cls, config: dict) -> "FrameEnhancer":
        return cls(config_from_dict(FrameEnhancerConfig, config, "FrameEnhancer"))

    @property
    def receptive_field(self) -> int:
        """Input samples that can reach one output sample: the frames that overlap it (a window each
        side), their receptive field in frames, and the windows of those frames."""
        return (self.wavenet.receptive_field - 1) * self.config.hop_length + 2 * self.config.n_fft + 1

    def _chunk_size(self, samples: int) -> int:
        # whole hops, so that every chunk's frames sit on the same grid
        hop = self.config.hop_length
        return -(-int(samples) // hop) * hop

    @property
    def lookback(self) -> int:
        return (self.receptive_field - 1) // 2

    @property
    def lookahead(self) -> int:
        return self.receptive_field - 1 - self.lookback

    def forward(self, noisy: torch.Tensor) -> torch.Tensor:
        if noisy.dim() != 2:
            raise ValueError(f"noisy must be (B, T), got {tuple(noisy.shape)}")
        spec = self.stft(noisy)  # (B, F, N) complex
        h = pointwise(self.input_conv, torch.log1p(spec.abs() * 10.0))
        skip = 0.0
        for layer in self.wavenet.layers:
            h, s = layer(h, None, None)
            skip = skip + s
        floor = self.config.mask_floor
        mask = floor + (1.0 - floor) * torch.sigmoid(self.wavenet.head(skip))  # (B, F, N)
        return self.stft.inverse(spec * mask, noisy.shape[-1])
