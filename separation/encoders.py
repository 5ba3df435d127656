"""Encoder/decoder pairs of the composed multi-head separator.

An encoder turns ``mix (B, T)`` into frames of features ``(B, F, feature_size)`` at ``hop``
samples per frame and keeps what its decoder needs; the decoder turns each head's per-frame output
``(B, F, C, head_size)`` into ``est_sources (B, C, T)``.

* ``conv``: SVoice's learned encoder (Conv1d + ReLU, Nachmani et al. 2020, arXiv:2003.01531) and its
  parameter-free decoder (average groups of ``decoder_frame_length`` features into frame samples,
  overlap-add with the hop). The heads map features to waveform frames: no mask.
* ``stft``: the ``frontend`` STFT (Hann window); features are ``log(1 + |X|)`` (``features: log1p``),
  or that and ``log(|X| + 0.01)`` side by side (``log1p+log``: a ``log1p`` model grows into it with
  ``init_from`` and keeps its function, ``MultiHeadSeparator.upgrade_state_dict``); the heads output
  one mask per talker (``sigmoid`` magnitude masks; ``sigmoid+phase``: the same magnitude times a
  phase rotation ``exp(j phi)`` per bin, which a ``sigmoid`` model grows into with ``init_from`` and
  keeps its function, the phase rows starting at zero; or ``complex`` masks with a tanh-bounded
  magnitude, Choi et al. 2019, arXiv:1903.03107), applied to the mixture's STFT and inverted with
  the ``frontend`` iSTFT.

Adding an encoder: a class with a ``Config`` dataclass registered in :data:`ENCODERS`
(:class:`separation.parts.PartRegistry`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from frontend.spectral import STFT
from separation.parts import PartRegistry


def overlap_add(frames: torch.Tensor, hop: int) -> torch.Tensor:
    """``(B, n_frames, frame_length) -> (B, (n_frames - 1) * hop + frame_length)`` by overlap-add."""
    batch, n_frames, frame_length = frames.shape
    out_len = (n_frames - 1) * hop + frame_length
    out = F.fold(frames.transpose(1, 2), (1, out_len), kernel_size=(1, frame_length), stride=(1, hop))
    return out.view(batch, out_len)


class ConvEncoder(nn.Conv1d):
    """SVoice's encoder ``Conv1d(1, n_filters, kernel_size, stride)`` + ReLU and its parameter-free
    decoder. (A ``Conv1d`` itself, so its weight is ``encoder.weight`` as in SVoice-layout
    checkpoints.)"""

    @dataclass
    class Config:
        n_filters: int = 128
        kernel_size: int = 8
        stride: int | None = None
        decoder_frame_length: int = 16

        def __post_init__(self):
            if self.stride is None:
                self.stride = self.kernel_size // 2
            if self.n_filters % self.decoder_frame_length:
                raise ValueError(f"n_filters ({self.n_filters}) must be a multiple of decoder_frame_length "
                                 f"({self.decoder_frame_length})")
            if not 1 <= self.stride <= self.decoder_frame_length:
                raise ValueError(f"stride ({self.stride}) must be in 1..decoder_frame_length "
                                 f"({self.decoder_frame_length}) so decoded frames cover the signal")

    def __init__(self, config: "ConvEncoder.Config"):
        super().__init__(1, config.n_filters, config.kernel_size, stride=config.stride, bias=False)
        self.config = config
        self.hop = config.stride
        self.feature_size = config.n_filters
        self.head_size = config.n_filters

    def n_frames(self, length: int) -> int:
        cfg = self.config
        return max(1, -(-(length - cfg.kernel_size) // cfg.stride) + 1)

    def frame_lengths(self, lengths: torch.Tensor, n_frames: int) -> torch.Tensor:
        cfg = self.config
        frames = torch.div(lengths - cfg.kernel_size + cfg.stride - 1, cfg.stride, rounding_mode="floor") + 1
        return frames.clamp(1, n_frames)

    def encode(self, mix: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """``(B, T) -> (B, n_frames, n_filters)``; the end is zero-padded to whole frames."""
        cfg = self.config
        length = mix.shape[-1]
        n_frames = self.n_frames(length)
        padded = F.pad(mix, (0, (n_frames - 1) * cfg.stride + cfg.kernel_size - length))
        return F.relu(super().forward(padded.unsqueeze(1))).transpose(1, 2), None

    def decode(self, head_out: torch.Tensor, context: Any, length: int) -> torch.Tensor:
        """``(B, F, C, n_filters) -> (B, C, length)``."""
        cfg = self.config
        batch, n_frames, n_src, _ = head_out.shape
        samples = head_out.reshape(batch, n_frames, n_src, cfg.decoder_frame_length, -1).mean(-1)
        samples = samples.transpose(1, 2).reshape(batch * n_src, n_frames, cfg.decoder_frame_length)
        wav = overlap_add(samples, cfg.stride).view(batch, n_src, -1)
        if wav.shape[-1] < length:
            wav = F.pad(wav, (0, length - wav.shape[-1]))
        return wav[..., :length]


MASKS = ("sigmoid", "sigmoid+phase", "complex")
#: masks whose head gives two numbers per bin (the magnitude's first, so a ``sigmoid`` head's rows grow in place)
TWO_PER_BIN = ("sigmoid+phase", "complex")
#: STFT features: ``log1p`` = ``log(1 + |X|)``; ``log1p+log`` adds ``log(|X| + 0.01)`` beside it, which
#: spreads the quiet bins that ``log1p`` leaves nearly linear (half the bins of an RMS-normalised
#: mixture are below 0.7, where ``log1p(x) ~ x``): the detail of the quieter talkers.
FEATURES = ("log1p", "log1p+log")
LOG_FLOOR = 0.01


class STFTEncoder(nn.Module):
    """STFT features in, masks out, inverted with the ``frontend`` STFT."""

    @dataclass
    class Config:
        n_fft: int = 256
        hop_length: int = 64
        mask: str = "sigmoid"
        features: str = "log1p"

        def __post_init__(self):
            if self.mask not in MASKS:
                raise ValueError(f"mask must be one of {MASKS}, got {self.mask!r}")
            if self.features not in FEATURES:
                raise ValueError(f"features must be one of {FEATURES}, got {self.features!r}")
            if not 1 <= self.hop_length <= self.n_fft // 2:
                raise ValueError(f"hop_length must be in 1..n_fft/2 ({self.n_fft // 2}), got {self.hop_length}")

    def __init__(self, config: "STFTEncoder.Config"):
        super().__init__()
        self.config = config
        self.stft = STFT(config.n_fft, config.hop_length)
        self.hop = config.hop_length
        self.n_bins = config.n_fft // 2 + 1
        # the log1p block first: a model that grows from log1p to log1p+log keeps its input columns
        self.feature_size = self.n_bins * (2 if config.features == "log1p+log" else 1)
        self.head_size = self.n_bins * (2 if config.mask in TWO_PER_BIN else 1)

    def n_frames(self, length: int) -> int:
        return length // self.hop + 1

    def frame_lengths(self, lengths: torch.Tensor, n_frames: int) -> torch.Tensor:
        return (torch.div(lengths, self.hop, rounding_mode="floor") + 1).clamp(1, n_frames)

    def encode(self, mix: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """``(B, T) -> (B, n_frames, feature_size)`` log-magnitudes; the complex STFT is the context."""
        spec = self.stft(mix)  # (B, n_bins, n_frames) complex
        magnitude = spec.abs()
        features = torch.log1p(magnitude)
        if self.config.features == "log1p+log":
            features = torch.cat([features, torch.log(magnitude + LOG_FLOOR)], dim=1)
        return features.transpose(1, 2), spec

    def decode(self, head_out: torch.Tensor, context: torch.Tensor, length: int) -> torch.Tensor:
        """``(B, F, C, head_size)`` -> masks on the mixture's STFT -> ``(B, C, length)``."""
        spec = context.unsqueeze(1)  # (B, 1, n_bins, F)
        out = head_out.permute(0, 2, 3, 1)  # (B, C, head_size, F)
        if self.config.mask == "sigmoid":
            est = spec * torch.sigmoid(out)
        elif self.config.mask == "sigmoid+phase":
            magnitude, phase = torch.sigmoid(out[:, :, :self.n_bins]), out[:, :, self.n_bins:]
            est = spec * torch.polar(magnitude.float(), phase.float())
        else:
            real, imag = out[:, :, :self.n_bins], out[:, :, self.n_bins:]
            magnitude = torch.sqrt(real.pow(2) + imag.pow(2) + 1e-8)
            mask = torch.complex(real, imag) * (torch.tanh(magnitude) / magnitude)
            est = spec * mask
        return self.stft.inverse(est, length)


ENCODERS = PartRegistry("encoder")
ENCODERS.register("conv")(ConvEncoder)
ENCODERS.register("stft")(STFTEncoder)


def encoder_config(config: Mapping[str, Any]) -> dict:
    """An encoder spec ``{type: NAME, **sizes}`` with every default filled in."""
    return ENCODERS.full_config(config)


def build_encoder(config: Mapping[str, Any]) -> nn.Module:
    return ENCODERS.build(config)
