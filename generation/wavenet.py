"""WaveNet (van den Oord et al. 2016, arXiv 1609.03499) with an explicit incremental state.

One model covers the three uses in voxsep:

- autoregressive synthesis: causal, 256-way mu-law softmax or a mixture of logistics
  (Salimans et al. 2017, arXiv 1701.05517; Oord et al. 2017, arXiv 1711.10433), optionally
  conditioned on a speaker (global) and on mel frames (local, upsampled by transposed convs);
- denoising (Rethage, Pons, Serra 2018, arXiv 1706.07162): non-causal, kernel 3, regression.

Time convention for autoregressive use: ``forward(x)`` returns at index ``t`` a prediction made
from ``x[..t]`` (and conditioning at ``t``); callers feed ``x`` shifted right by one sample
(``shift_right``) so that output ``t`` predicts the target sample ``t``.

Incremental generation (Paine et al. 2016, arXiv 1611.09482): :meth:`WaveNet.init_state` makes one
ring buffer per layer holding the last ``(kernel_size - 1) * dilation + 1`` layer inputs;
:meth:`WaveNet.step` consumes one input sample and runs every layer once, using the same modules
(and the same gated unit / projections) as :meth:`WaveNet.forward`. Zero-initialised buffers
reproduce the zero padding of ``forward``, so the step loop equals ``forward`` exactly.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from engine.checkpoint import config_from_dict, register_model
from frontend import mulaw_decode, mulaw_encode
from generation.fast import FastGenerator, generate_reference

OUTPUT_TYPES = ("mulaw", "logistic_mixture", "regression")


@dataclass
class WaveNetConfig:
    """Hyper-parameters of :class:`WaveNet` (plain data; ``asdict``/``from_dict`` round-trip).

    Args:
        layers_per_cycle: dilations ``1, 2, 4, ..., 2**(layers_per_cycle-1)`` per cycle.
        n_cycles: how many times the dilation cycle repeats.
        kernel_size: taps of each dilated convolution (2 or 3).
        causal: causal (autoregressive) or centred (denoiser) convolutions.
        residual_channels: channels of the residual stream.
        gate_channels: channels of each half of the gated unit (tanh half, sigmoid half).
        skip_channels: channels of the skip connections and of the output head.
        output: ``"mulaw"`` (softmax over ``quantization_channels`` codes), ``"logistic_mixture"``
            (``n_mixtures`` discretised logistics) or ``"regression"`` (``regression_channels``
            real values per sample).
        quantization_channels: mu-law codes (input embedding and softmax size for ``"mulaw"``).
        n_mixtures: logistic components for ``"logistic_mixture"``.
        regression_channels: outputs per sample for ``"regression"``.
        n_speakers: size of the speaker table for global conditioning by id (0: none).
        global_channels: global conditioning vector size (speaker embedding size, or the size of
            an embedding the caller passes directly when ``n_speakers == 0``); 0: no global cond.
        local_channels: local conditioning channels (e.g. mel bands); 0: no local cond.
        upsample_factors: strides of the transposed convolutions that bring local conditioning
            frames to the sample rate; their product is the frame hop in samples.
    """

    layers_per_cycle: int = 10
    n_cycles: int = 3
    kernel_size: int = 2
    causal: bool = True
    residual_channels: int = 64
    gate_channels: int = 64
    skip_channels: int = 64
    output: str = "mulaw"
    quantization_channels: int = 256
    n_mixtures: int = 10
    regression_channels: int = 1
    n_speakers: int = 0
    global_channels: int = 0
    local_channels: int = 0
    upsample_factors: tuple[int, ...] = field(default_factory=tuple)

    def __post_init__(self):
        self.upsample_factors = tuple(int(f) for f in self.upsample_factors)
        if self.output not in OUTPUT_TYPES:
            raise ValueError(f"output must be one of {OUTPUT_TYPES}, got {self.output!r}")
        if self.kernel_size < 2:
            raise ValueError(f"kernel_size must be >= 2, got {self.kernel_size}")
        if self.layers_per_cycle < 1 or self.n_cycles < 1:
            raise ValueError("layers_per_cycle and n_cycles must be >= 1")
        if self.n_speakers and not self.global_channels:
            raise ValueError("n_speakers > 0 needs global_channels > 0 (the speaker embedding size)")
        if self.local_channels and not self.upsample_factors:
            raise ValueError("local_channels > 0 needs upsample_factors (frame hop = their product)")

    @classmethod
    def from_dict(cls, config: dict) -> "WaveNetConfig":
        return config_from_dict(cls, config, "WaveNet")

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["upsample_factors"] = list(self.upsample_factors)
        return out

    @property
    def dilations(self) -> list[int]:
        return [2 ** i for i in range(self.layers_per_cycle)] * self.n_cycles

    @property
    def hop_length(self) -> int:
        return math.prod(self.upsample_factors) if self.upsample_factors else 1

    @property
    def output_channels(self) -> int:
        if self.output == "mulaw":
            return self.quantization_channels
        if self.output == "logistic_mixture":
            return 3 * self.n_mixtures
        return self.regression_channels


def shift_right(x: torch.Tensor) -> torch.Tensor:
    """``x (B, T)`` -> ``x`` delayed by one sample with a leading zero (teacher-forcing input)."""
    return F.pad(x, (1, 0))[..., :-1]


class ConditionUpsampler(nn.Module):
    """Frames ``(B, C, N)`` -> per-sample features ``(B, C, N * hop)`` by learned transposed convs.

    Each stage is a ``ConvTranspose1d`` with stride ``f`` and kernel ``2 f`` (overlapping, so the
    result is smooth across frame edges) trimmed to exactly ``f`` times its input length, followed
    by a leaky ReLU. Frame ``n`` is centred on sample ``n * hop`` (as with centred STFT frames).
    """

    def __init__(self, channels: int, factors: tuple[int, ...]):
        super().__init__()
        self.factors = tuple(factors)
        self.stages = nn.ModuleList(
            nn.ConvTranspose1d(channels, channels, kernel_size=2 * f, stride=f) for f in self.factors)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames
        for f, stage in zip(self.factors, self.stages):
            n = x.shape[-1]
            x = stage(x)[..., f // 2: f // 2 + n * f]  # (B, C, n * f)
            x = F.leaky_relu(x, 0.4)
        return x


def pointwise(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """A 1x1 ``conv`` applied to ``x (B, C, T)`` as a matrix product (fast for T = 1 and float64)."""
    return F.linear(x.transpose(1, 2), conv.weight[:, :, 0], conv.bias).transpose(1, 2)


class ResidualLayer(nn.Module):
    """One WaveNet layer: dilated conv -> + conditioning -> tanh * sigmoid -> 1x1 residual, 1x1 skip."""

    def __init__(self, config: WaveNetConfig, dilation: int):
        super().__init__()
        k = config.kernel_size
        self.dilation = dilation
        self.kernel_size = k
        # Taps sit at offsets -lookback*d .. +lookahead*d around the output sample.
        self.lookahead_taps = 0 if config.causal else k // 2
        self.lookback_taps = k - 1 - self.lookahead_taps
        self.gate_channels = config.gate_channels
        self.dilated = nn.Conv1d(config.residual_channels, 2 * config.gate_channels, k, dilation=dilation)
        self.local_proj = (nn.Conv1d(config.local_channels, 2 * config.gate_channels, 1, bias=False)
                           if config.local_channels else None)
        self.global_proj = (nn.Conv1d(config.global_channels, 2 * config.gate_channels, 1, bias=False)
                            if config.global_channels else None)
        self.residual = nn.Conv1d(config.gate_channels, config.residual_channels, 1)
        self.skip = nn.Conv1d(config.gate_channels, config.skip_channels, 1)

    @property
    def buffer_size(self) -> int:
        return (self.kernel_size - 1) * self.dilation + 1

    def condition(self, local: torch.Tensor | None, global_emb: torch.Tensor | None):
        """Conditioning added before the gate: ``local (B, Cl, T)``, ``global (B, Cg, 1)``."""
        out = 0.0
        if self.local_proj is not None:
            out = out + pointwise(self.local_proj, local)
        if self.global_proj is not None:
            out = out + pointwise(self.global_proj, global_emb)
        return out

    def gated_output(self, pre: torch.Tensor, x: torch.Tensor):
        """Shared by ``forward`` and ``step``: ``pre (B, 2G, T)`` -> (next residual input, skip)."""
        filt, gate = pre.split(self.gate_channels, dim=1)
        z = torch.tanh(filt) * torch.sigmoid(gate)
        return x + pointwise(self.residual, z), pointwise(self.skip, z)

    def forward(self, x, local, global_emb):
        d = self.dilation
        padded = F.pad(x, (self.lookback_taps * d, self.lookahead_taps * d))
        return self.gated_output(self.dilated(padded) + self.condition(local, global_emb), x)

    def step(self, x_t, buffer, position, local_t, global_emb):
        """``x_t (B, R, 1)``; ``buffer (B, R, buffer_size)`` ring buffer of this layer's inputs."""
        size = self.buffer_size
        buffer[:, :, position % size] = x_t[:, :, 0]
        # Tap i of the conv reads the input (k - 1 - i) * d samples back (causal layers only).
        idx = [(position - (self.kernel_size - 1 - i) * self.dilation) % size for i in range(self.kernel_size)]
        taps = buffer[:, :, idx]  # (B, R, k)
        # the dilated conv evaluated at one output: a product with the flattened kernel
        w = self.dilated.weight
        pre = F.linear(taps.reshape(taps.shape[0], -1), w.reshape(w.shape[0], -1), self.dilated.bias)
        pre = pre.unsqueeze(-1)  # (B, 2G, 1)
        return self.gated_output(pre + self.condition(local_t, global_emb), x_t)


@dataclass
class WaveNetState:
    """Incremental state of a causal :class:`WaveNet` (see :meth:`WaveNet.init_state`).

    Attributes:
        buffers: per layer, ``(B, residual_channels, (k-1)*dilation + 1)`` ring buffer of inputs.
        position: index of the next sample ``step`` consumes.
        local: upsampled local conditioning ``(B, Cl, T)`` for the whole utterance, or None.
        global_emb: ``(B, Cg, 1)`` global conditioning vector, or None.
    """

    buffers: list[torch.Tensor]
    position: int
    local: torch.Tensor | None
    global_emb: torch.Tensor | None


@register_model("wavenet")
class WaveNet(nn.Module):
    """WaveNet. ``forward(x (B, T), local_cond, global_cond) -> (B, output_channels, T)``.

    ``x`` is a float waveform in [-1, 1] (mu-law models quantise and embed it, others read the
    value through a 1x1 conv). ``local_cond (B, local_channels, N)`` frames (``N * hop >= T``);
    ``global_cond`` speaker ids ``(B,)`` (when ``n_speakers > 0``) or vectors ``(B, global_channels)``.
    """

    config_class = WaveNetConfig

    def __init__(self, config: WaveNetConfig | None = None):
        super().__init__()
        config = config if config is not None else WaveNetConfig()
        if isinstance(config, dict):
            config = WaveNetConfig.from_dict(config)
        self.config = config
        c = config
        if c.output == "mulaw":
            self.input_embedding = nn.Embedding(c.quantization_channels, c.residual_channels)
            self.input_conv = None
        else:
            self.input_embedding = None
            self.input_conv = nn.Conv1d(1, c.residual_channels, 1)
        self.speaker_embedding = nn.Embedding(c.n_speakers, c.global_channels) if c.n_speakers else None
        self.upsampler = ConditionUpsampler(c.local_channels, c.upsample_factors) if c.local_channels else None
        self.layers = nn.ModuleList(ResidualLayer(c, d) for d in c.dilations)
        self.head1 = nn.Conv1d(c.skip_channels, c.skip_channels, 1)
        self.head2 = nn.Conv1d(c.skip_channels, c.output_channels, 1)

    @classmethod
    def from_config(cls, config: dict) -> "WaveNet":
        return cls(WaveNetConfig.from_dict(config))

    # -- properties --------------------------------------------------------------------------------
    @property
    def receptive_field(self) -> int:
        """Input samples that one output sample depends on: ``1 + sum((k-1) * dilation)``."""
        return 1 + sum((self.config.kernel_size - 1) * d for d in self.config.dilations)

    @property
    def lookahead(self) -> int:
        """Future input samples one output depends on (0 for causal models)."""
        return sum(layer.lookahead_taps * layer.dilation for layer in self.layers)

    @property
    def lookback(self) -> int:
        return self.receptive_field - 1 - self.lookahead

    # -- conditioning ------------------------------------------------------------------------------
    def embed_input(self, x: torch.Tensor) -> torch.Tensor:
        """``x (B, T)`` float -> ``(B, residual_channels, T)``."""
        if self.input_embedding is not None:
            codes = mulaw_encode(x, self.config.quantization_channels)
            return self.input_embedding(codes).transpose(1, 2)
        return pointwise(self.input_conv, x.unsqueeze(1))

    def upsample_local(self, local_cond: torch.Tensor | None, n_samples: int, batch: int) -> torch.Tensor | None:
        """``local_cond (B, Cl, N)`` -> ``(B, Cl, n_samples)``; checks shapes."""
        c = self.config
        if not c.local_channels:
            if local_cond is not None:
                raise ValueError("this WaveNet has no local conditioning (local_channels=0)")
            return None
        if local_cond is None or local_cond.dim() != 3 or local_cond.shape[1] != c.local_channels \
                or local_cond.shape[0] != batch:
            got = None if local_cond is None else tuple(local_cond.shape)
            raise ValueError(f"local_cond must be (B={batch}, {c.local_channels}, N), got {got}")
        up = self.upsampler(local_cond)
        if up.shape[-1] < n_samples:
            raise ValueError(f"local_cond has {local_cond.shape[-1]} frames = {up.shape[-1]} samples "
                             f"at hop {c.hop_length}, fewer than the {n_samples} needed")
        return up[..., :n_samples]

    def embed_global(self, global_cond: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        """Speaker ids ``(B,)`` or vectors ``(B, Cg)`` -> ``(B, Cg, 1)``."""
        c = self.config
        if not c.global_channels:
            if global_cond is not None:
                raise ValueError("this WaveNet has no global conditioning (global_channels=0)")
            return None
        if global_cond is None:
            raise ValueError("this WaveNet needs global_cond (speaker ids or embeddings)")
        if self.speaker_embedding is not None and not global_cond.is_floating_point():
            if global_cond.shape != (batch,):
                raise ValueError(f"speaker ids must be ({batch},), got {tuple(global_cond.shape)}")
            emb = self.speaker_embedding(global_cond)
        else:
            if global_cond.shape != (batch, c.global_channels):
                raise ValueError(f"global_cond must be ({batch}, {c.global_channels}), got {tuple(global_cond.shape)}")
            emb = global_cond
        return emb.unsqueeze(-1)

    def head(self, skip: torch.Tensor) -> torch.Tensor:
        return pointwise(self.head2, F.relu(pointwise(self.head1, F.relu(skip))))

    # -- teacher-forced forward --------------------------------------------------------------------
    def forward(self, x: torch.Tensor, local_cond: torch.Tensor | None = None,
                global_cond: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() != 2:
            raise ValueError(f"x must be (B, T), got {tuple(x.shape)}")
        batch, n = x.shape
        local = self.upsample_local(local_cond, n, batch)
        global_emb = self.embed_global(global_cond, batch)
        h = self.embed_input(x)
        skip = 0.0
        for layer in self.layers:
            h, s = layer(h, local, global_emb)
            skip = skip + s
        return self.head(skip)

    # -- incremental state -------------------------------------------------------------------------
    def init_state(self, batch_size: int, local_cond: torch.Tensor | None = None,
                   global_cond: torch.Tensor | None = None, n_samples: int | None = None) -> WaveNetState:
        """Zeroed ring buffers and the utterance's conditioning, ready for :meth:`step`.

        ``n_samples`` (needed with local conditioning): total samples the state will step through.
        """
        if not self.config.causal:
            raise ValueError("incremental generation needs a causal WaveNet (config.causal=True)")
        p = next(self.parameters())
        local = None
        if self.config.local_channels:
            if n_samples is None:
                n_samples = local_cond.shape[-1] * self.config.hop_length if local_cond is not None else 0
            local = self.upsample_local(local_cond, n_samples, batch_size)
        global_emb = self.embed_global(global_cond, batch_size)
        buffers = [torch.zeros(batch_size, self.config.residual_channels, layer.buffer_size,
                               dtype=p.dtype, device=p.device) for layer in self.layers]
        return WaveNetState(buffers=buffers, position=0, local=local, global_emb=global_emb)

    def step(self, x_t: torch.Tensor, state: WaveNetState) -> torch.Tensor:
        """Consume input sample ``x_t (B,)`` at ``state.position``; return that output ``(B, C_out)``.

        Equals ``forward(x)[:, :, t]`` for the sequence of inputs stepped so far.
        """
        t = state.position
        local_t = None
        if state.local is not None:
            if t >= state.local.shape[-1]:
                raise ValueError(f"local conditioning covers {state.local.shape[-1]} samples; step {t} is past it")
            local_t = state.local[:, :, t:t + 1]
        h = self.embed_input(x_t.unsqueeze(-1))  # (B, R, 1)
        skip = 0.0
        for layer, buffer in zip(self.layers, state.buffers):
            h, s = layer.step(h, buffer, t, local_t, state.global_emb)
            skip = skip + s
        state.position = t + 1
        return self.head(skip)[:, :, 0]

    # -- generation --------------------------------------------------------------------------------
    @torch.inference_mode()
    def generate(self, n_samples: int, local_cond: torch.Tensor | None = None,
                 global_cond: torch.Tensor | None = None, temperature: float = 1.0,
                 batch_size: int | None = None, seed: torch.Tensor | None = None,
                 generator: torch.Generator | None = None, method: str = "auto",
                 progress: bool = False) -> torch.Tensor:
        """Sample ``n_samples`` new samples per batch item -> ``(B, n_samples)`` in [-1, 1].

        Args:
            local_cond: ``(B, Cl, N)`` frames covering ``len(seed) + n_samples`` samples.
            global_cond: speaker ids ``(B,)`` or vectors ``(B, Cg)``.
            temperature: 0 = argmax (deterministic); 1 = sample the model's distribution.
            seed: ``(B, S)`` waveform to continue (teacher-forced into the state first).
            generator: torch RNG for reproducible sampling.
            method: ``"reference"`` (module-level :meth:`step` loop), ``"fast"`` (fused
                weights; compiled kernel when available) or ``"auto"`` (= fast).
            progress: show a tqdm bar (fast method).
        """
        if batch_size is None:
            for t in (seed, global_cond, local_cond):
                if t is not None:
                    batch_size = t.shape[0]
                    break
            else:
                batch_size = 1
        if method == "reference":
            return generate_reference(self, n_samples, local_cond, global_cond, temperature,
                                      batch_size, seed, generator)
        if method not in ("fast", "auto"):
            raise ValueError(f"method must be 'auto', 'fast' or 'reference', got {method!r}")
        return FastGenerator(self).generate(n_samples, local_cond, global_cond, temperature,
                                            batch_size, seed, generator, progress=progress)


def decode_output(config: WaveNetConfig, values: torch.Tensor) -> torch.Tensor:
    """Mu-law codes -> waveform (identity for float values); helper for callers of step()."""
    if config.output == "mulaw" and not values.is_floating_point():
        return mulaw_decode(values, config.quantization_channels)
    return values
