"""Pipelines that chain model families (separation and generation never import each other).

``enhance_sources`` runs the WaveNet denoiser on each separated source (``voxsep separate
--enhance``); ``load_enhancer`` / ``load_vocoder`` load a bundled name or checkpoint and attach
the model's sample rate.
"""
from __future__ import annotations

import os

import torch

from frontend import resample


def load_enhancer(spec: str | os.PathLike = "default"):
    """The denoiser ``spec`` (bundled name or checkpoint) with ``.sample_rate`` set, eval mode."""
    from voxsep.registry import load_model

    model, ckpt = load_model(spec, "enhancement")
    model.sample_rate = int(ckpt["sample_rate"])
    return model


def load_vocoder(spec: str | os.PathLike = "default"):
    """The vocoder ``spec`` (bundled name or checkpoint) with ``.sample_rate`` set, eval mode."""
    from voxsep.registry import load_model

    model, ckpt = load_model(spec, "vocoder")
    model.sample_rate = int(ckpt["sample_rate"])
    return model


def enhance_sources(sources: torch.Tensor, sample_rate: int, enhancer) -> torch.Tensor:
    """Denoise every source: ``sources (K, T)`` at ``sample_rate`` -> ``(K, T)`` at the same rate.

    ``enhancer`` is a :class:`generation.enhancer.Enhancer` (its ``sample_rate`` attribute, set by
    :func:`load_enhancer`, says the rate it works at; without it ``sample_rate`` is assumed).
    Sources are resampled to the enhancer's rate and back when the two differ.
    """
    if sources.dim() != 2:
        raise ValueError(f"sources must be (K, T), got {tuple(sources.shape)}")
    model_rate = int(getattr(enhancer, "sample_rate", sample_rate))
    n = sources.shape[-1]
    x = sources.float()
    if model_rate != sample_rate:
        x = resample(x, sample_rate, model_rate)
    out = enhancer.enhance(x)
    if model_rate != sample_rate:
        out = resample(out, model_rate, sample_rate)
        out = torch.nn.functional.pad(out, (0, max(0, n - out.shape[-1])))[..., :n]
    return out.to(sources.dtype)
