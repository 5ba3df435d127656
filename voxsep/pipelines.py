"""Pipelines that chain model families (separation and generation never import each other).

``enhance_sources`` runs the WaveNet denoiser on each separated source and ``denoise`` adds the
one anti-clipping rule (``voxsep enhance`` and ``voxsep separate --enhance``); ``load_enhancer`` /
``load_vocoder`` load a bundled name or checkpoint and attach the model's sample rate.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from frontend import atomic_output, limit_peak, load_audio, resample, save_audio
from voxsep.registry import load_model


def load_enhancer(spec: str | os.PathLike):
    """The denoiser ``spec`` (bundled name or checkpoint) with ``.sample_rate`` set, eval mode."""
    model, ckpt = load_model(spec, "enhancement")
    model.sample_rate = int(ckpt["sample_rate"])
    return model


def load_vocoder(spec: str | os.PathLike):
    """The vocoder ``spec`` (bundled name or checkpoint) with ``.sample_rate`` set, eval mode."""
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


#: Peak the denoised audio is scaled down to when it would exceed it (the denoiser's output level
#: follows its input, so a loud input can come out above full scale): scaled, never clipped.
DENOISED_PEAK = 0.99


def denoise(sources: torch.Tensor, sample_rate: int, enhancer) -> torch.Tensor:
    """:func:`enhance_sources` without autograd, then scaled down together if any sample would
    exceed :data:`DENOISED_PEAK` (:func:`frontend.limit_peak`: one gain for all sources, so their
    levels stay relative). The one anti-clipping rule of ``voxsep enhance`` and ``separate --enhance``."""
    with torch.inference_mode():
        clean = enhance_sources(sources, sample_rate, enhancer)
    return limit_peak(clean, DENOISED_PEAK)


def enhance_folder(folder: str | os.PathLike, count: int, sample_rate: int, enhancer, name: str = "") -> None:
    """Denoise ``folder/s1.wav .. s{count}.wav`` in place (the layout `voxsep separate` writes).

    All sources are enhanced in memory first and then replaced one by one (each write atomic), so
    a failure while enhancing leaves the separated files as they were. Memory: the sources of the
    whole file (about 115 MB per talker-hour at 8 kHz).
    """
    folder = Path(folder)
    paths = [folder / f"s{i + 1}.wav" for i in range(count)]
    if not paths:
        return
    sources = torch.stack([load_audio(p, sample_rate=sample_rate)[0] for p in paths])
    clean = denoise(sources, sample_rate, enhancer)
    for p, wav in zip(paths, clean):
        save_audio(p, wav, sample_rate, subtype="FLOAT")
    summary_path = folder / "summary.json"
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        summary["enhanced_with"] = name or "enhancer"
        with atomic_output(summary_path) as tmp:
            tmp.write_text(json.dumps(summary, indent=2))
