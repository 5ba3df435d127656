"""Mu-law companding and quantisation (torchaudio.functional), e.g. for WaveNet's softmax output.

``mulaw_encode(x, 256)`` maps ``[-1, 1]`` to integer codes ``0..255``; ``mulaw_decode`` maps codes
back to the centre value of each code, so ``encode(decode(code)) == code`` for every code.
"""
from __future__ import annotations

import torch
import torchaudio.functional as AF


def mulaw_encode(wav: torch.Tensor, quantization_channels: int = 256) -> torch.Tensor:
    """Float ``wav`` in [-1, 1] -> int64 codes in ``0..quantization_channels-1`` (values clipped)."""
    if quantization_channels < 2:
        raise ValueError(f"quantization_channels must be >= 2, got {quantization_channels}")
    if not wav.is_floating_point():
        raise ValueError(f"mulaw_encode expects a float tensor, got {wav.dtype}")
    return AF.mu_law_encoding(wav.clamp(-1.0, 1.0), quantization_channels).long()


def mulaw_decode(codes: torch.Tensor, quantization_channels: int = 256) -> torch.Tensor:
    """Integer codes -> float values in [-1, 1] (float32 unless ``codes`` is float64)."""
    if quantization_channels < 2:
        raise ValueError(f"quantization_channels must be >= 2, got {quantization_channels}")
    dtype = torch.float64 if codes.dtype == torch.float64 else torch.float32
    return AF.mu_law_decoding(codes.to(dtype), quantization_channels)
