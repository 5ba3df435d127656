"""Mixtures of 1..C talkers in the wsj0-mix and LibriMix styles.

The gain rules, length rules, noise and peak scaling live here as small functions so that the
offline dataset writer (``voxsep mix``, which plans with :func:`plan_mixtures` and renders with
:func:`render_mixture` and :func:`quantize`) and on-the-fly dynamic mixing
(:class:`separation.data.DynamicMixingDataset`) apply the very same recipe. Utterances come from
the project's one reader and split rule (:mod:`frontend.utterances`).

Conventions (see the wsj0-mix scripts of Hershey et al. 2016, arXiv 1508.04306, and LibriMix,
Cosentino et al. 2020, arXiv 2005.11262):

* ``wsj0`` gains: every utterance is normalised to its ITU-T P.56 active speech level, then given
  a random gain drawn uniformly within +-2.5 dB (so talkers differ by at most 5 dB).
* ``librimix`` gains: every utterance is set to a loudness drawn uniformly in [-33, -25] LUFS
  (ITU-R BS.1770).
* ``min`` mode truncates every utterance to the shortest one, ``max`` zero-pads to the longest.
* Optional noise is added at a uniform random SNR relative to the sum of the talkers.
* Mixture, sources and noise then share one scale, ``0.9 / max(1, peak)`` where ``peak`` is the
  largest absolute sample of any of them, so every written signal peaks at or below 0.9 and the
  sources (plus noise) still add up to the mixture.

Levels are measured on the segment that is written (after truncation or padding), so a source's
``gains_db`` entry equals its measured level divided by the shared ``scale``.
"""
from __future__ import annotations

import math
import os
from collections import OrderedDict, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from frontend import VoxsepError, active_speech_level, load_audio, loudness
from frontend.noise import COLOR_SLOPES, scale_to_snr
from frontend.noise import colored_noise as shaped_noise
from frontend.utterances import Utterance

GAIN_RULES = ("wsj0", "librimix")
MODES = ("min", "max")
NOISE_COLORS = ("white", "pink", "brown")
FORMATS = ("float", "pcm16")
WSJ0_GAIN_RANGE_DB = 2.5
LIBRIMIX_LOUDNESS_RANGE = (-33.0, -25.0)
PEAK_TARGET = 0.9
PCM16_SCALE = 32768  # libsndfile reads 16-bit PCM as int / 32768


def rate_folder(sample_rate: int) -> str:
    """wsj0-mix folder name of a sample rate: 8000 -> ``wav8k``, 16000 -> ``wav16k``."""
    return f"wav{sample_rate // 1000}k" if sample_rate % 1000 == 0 else f"wav{sample_rate}"


# ---------------------------------------------------------------------------------------------
# The recipe: gains, lengths, noise, shared scale


def sample_levels_db(rng: np.random.Generator, n: int, gains: str = "wsj0") -> np.ndarray:
    """Draw ``n`` target levels: dB re the active speech level (``wsj0``) or LUFS (``librimix``)."""
    if gains == "wsj0":
        return rng.uniform(-WSJ0_GAIN_RANGE_DB, WSJ0_GAIN_RANGE_DB, size=n)
    if gains == "librimix":
        lo, hi = LIBRIMIX_LOUDNESS_RANGE
        return rng.uniform(lo, hi, size=n)
    raise ValueError(f"gains must be one of {GAIN_RULES}, got {gains!r}")


def measure_level(wav: torch.Tensor, sample_rate: int, gains: str = "wsj0") -> float:
    """The level a gain rule controls: P.56 active speech level (dB) or BS.1770 loudness (LUFS)."""
    if gains == "wsj0":
        return active_speech_level(wav, sample_rate)
    if gains == "librimix":
        return loudness(wav, sample_rate)
    raise ValueError(f"gains must be one of {GAIN_RULES}, got {gains!r}")


def set_levels(
    sources: torch.Tensor, sample_rate: int, levels_db: Sequence[float], gains: str = "wsj0",
) -> torch.Tensor:
    """Scale each row of ``sources`` (C, T) to its target level; silent rows stay silent.

    Returns a float64 tensor (C, T).
    """
    out = sources.to(torch.float64).clone()
    for i, target in enumerate(levels_db):
        current = measure_level(out[i], sample_rate, gains)
        if math.isfinite(current):
            out[i] *= 10 ** ((float(target) - current) / 20)
    return out


def fit_lengths(wavs: Sequence[torch.Tensor], mode: str = "min") -> torch.Tensor:
    """Stack 1-D signals as (C, T): ``min`` truncates to the shortest, ``max`` zero-pads to the longest."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    lengths = [int(w.shape[-1]) for w in wavs]
    n = min(lengths) if mode == "min" else max(lengths)
    out = torch.zeros(len(wavs), n, dtype=wavs[0].dtype)
    for i, w in enumerate(wavs):
        k = min(n, w.shape[-1])
        out[i, :k] = w[:k]
    return out


def colored_noise(n_samples: int, color: str, rng: np.random.Generator) -> torch.Tensor:
    """Unit-RMS Gaussian noise of a named colour, white, pink (1/f) or brown (1/f^2), as a float64
    tensor (:func:`frontend.noise.colored_noise`, the one copy)."""
    if color not in COLOR_SLOPES:
        raise ValueError(f"color must be one of {NOISE_COLORS}, got {color!r}")
    return torch.from_numpy(shaped_noise(n_samples, COLOR_SLOPES[color], rng))


def shared_scale(signals: Sequence[torch.Tensor], peak_target: float = PEAK_TARGET) -> float:
    """``peak_target / max(1, peak)`` over all ``signals``: the wsj0-mix anti-clipping scale."""
    top = max(float(s.abs().max()) if s.numel() else 0.0 for s in signals)
    return peak_target / max(1.0, top)


@dataclass
class Mixture:
    """A rendered mixture: ``mix (T,)``, ``sources (C, T)``, optional ``noise (T,)`` (all float64,
    already scaled), the shared ``scale`` and the levels the gain rule set (before the scale)."""

    mix: torch.Tensor
    sources: torch.Tensor
    noise: torch.Tensor | None
    scale: float
    levels_db: list[float]
    noise_start: int | None = None  # first sample of a noise file's excerpt (0 when looped)


def combine(
    sources: torch.Tensor, noise: torch.Tensor | None = None, levels_db: Sequence[float] = (),
    peak_target: float = PEAK_TARGET,
) -> Mixture:
    """Sum the sources (+ noise) and apply the shared peak scale to everything."""
    sources = sources.to(torch.float64)
    total = sources.sum(0) + (noise.to(torch.float64) if noise is not None else 0)
    parts = [total, sources] + ([noise] if noise is not None else [])
    scale = shared_scale(parts, peak_target)
    sources = sources * scale
    noise = noise.to(torch.float64) * scale if noise is not None else None
    mix = sources.sum(0) + (noise if noise is not None else 0)
    return Mixture(mix, sources, noise, scale, [float(x) for x in levels_db])


# ---------------------------------------------------------------------------------------------
# Planning and rendering offline mixtures


@dataclass
class MixturePlan:
    """Everything random about one mixture, drawn up front so rendering is a pure function."""

    name: str
    split: str
    utterances: list[Utterance]
    levels_db: list[float]
    noise: dict | None = None  # {"kind": "colored", "color", "seed"} or {"kind": "file", "path", "offset"}
    snr_db: float | None = None

    @property
    def n_src(self) -> int:
        return len(self.utterances)


def plan_mixtures(
    utterances: Sequence[Utterance], n_src: int, split: str, n_mixtures: int, gains: str,
    rng: np.random.Generator, noise: str = "none", noise_files: Sequence[Path] = (),
    snr_range: tuple[float, float] = (10.0, 20.0), source_of: dict[str, int] | None = None,
    source_weights: Sequence[float] | None = None,
) -> list[MixturePlan]:
    """Draw ``n_mixtures`` mixtures of ``n_src`` distinct talkers of ``split``.

    With ``source_of`` (speaker -> source index) and ``source_weights``, each talker's source is
    drawn by weight (among sources with speakers left), then a speaker of that source uniformly.
    """
    by_speaker: dict[str, list[Utterance]] = defaultdict(list)
    for u in utterances:
        if u.split == split:
            by_speaker[u.speaker].append(u)
    speakers = sorted(by_speaker)
    if len(speakers) < n_src:
        raise VoxsepError(
            f"split {split} has {len(speakers)} speaker(s); {n_src}-speaker mixtures need at least "
            f"{n_src} (use more speakers, other splits or other split fractions)")
    pools = None
    if source_of is not None and source_weights is not None and len(source_weights) > 1:
        pools = [[k for k, spk in enumerate(speakers) if source_of[spk] == i] for i in range(len(source_weights))]
    plans = []
    for i in range(n_mixtures):
        if pools is None:
            chosen = rng.choice(len(speakers), size=n_src, replace=False)
        else:
            left = [list(p) for p in pools]
            chosen = []
            for _ in range(n_src):
                w = np.asarray(source_weights, float) * np.asarray([len(p) > 0 for p in left], float)
                src = int(rng.choice(len(left), p=w / w.sum()))
                chosen.append(left[src].pop(int(rng.integers(len(left[src])))))
        utts = [by_speaker[speakers[k]][rng.integers(len(by_speaker[speakers[k]]))] for k in chosen]
        levels = sample_levels_db(rng, n_src, gains).tolist()
        plan = MixturePlan(f"{n_src}spk_{split}_{i:06d}", split, utts, levels)
        if noise != "none":
            plan.snr_db = float(rng.uniform(*snr_range))
            if noise == "dir":
                plan.noise = {"kind": "file", "path": str(noise_files[rng.integers(len(noise_files))]),
                              "offset": float(rng.random())}
            else:
                color = NOISE_COLORS[rng.integers(3)] if noise == "colored" else noise
                plan.noise = {"kind": "colored", "color": color, "seed": int(rng.integers(2**63))}
        plans.append(plan)
    return plans


class AudioCache:
    """Decoded audio at one rate, kept in memory up to ``max_bytes`` (least recently used out)."""

    def __init__(self, sample_rate: int, max_bytes: int = 256 * 2**20):
        self.sample_rate = sample_rate
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._bytes = 0

    def load(self, path: str | os.PathLike) -> torch.Tensor:
        key = str(path)
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        wav, _ = load_audio(path, sample_rate=self.sample_rate)
        size = wav.numel() * wav.element_size()
        if size <= self.max_bytes:
            self._items[key] = wav
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, old = self._items.popitem(last=False)
                self._bytes -= old.numel() * old.element_size()
        return wav


def excerpt(wav: torch.Tensor, n_samples: int, offset_fraction: float) -> tuple[torch.Tensor, int]:
    """``n_samples`` of ``wav`` starting at ``offset_fraction`` of the free room, and the start;
    a file shorter than ``n_samples`` is looped from its beginning (start 0)."""
    if wav.shape[-1] < n_samples:
        reps = -(-n_samples // wav.shape[-1])
        return wav.repeat(reps)[:n_samples], 0
    start = int(offset_fraction * (wav.shape[-1] - n_samples))
    return wav[start:start + n_samples], start


def render_mixture(plan: MixturePlan, sample_rate: int, mode: str, gains: str,
                   load: Callable[[Path], torch.Tensor]) -> Mixture:
    """Load the plan's utterances and noise and apply the recipe (see the module docstring)."""
    wavs = [load(u.path) for u in plan.utterances]
    sources = fit_lengths(wavs, mode)
    sources = set_levels(sources, sample_rate, plan.levels_db, gains)
    noise, start = None, None
    if plan.noise is not None:
        n = sources.shape[-1]
        if plan.noise["kind"] == "colored":
            raw = colored_noise(n, plan.noise["color"], np.random.default_rng(plan.noise["seed"]))
        else:
            raw, start = excerpt(load(Path(plan.noise["path"])).to(torch.float64), n, plan.noise["offset"])
        noise = scale_to_snr(raw, sources.sum(0), plan.snr_db)
    mixture = combine(sources, noise, plan.levels_db)
    mixture.noise_start = start
    return mixture


# ---------------------------------------------------------------------------------------------
# Samples as written


def quantize(mixture: Mixture, fmt: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Samples as written: float32 (``float``) or int16 (``pcm16``), the mixture being the sum of
    the written sources (+ noise) - exactly for pcm16, to float32 rounding for float."""
    if fmt == "float":
        src = mixture.sources.to(torch.float32)
        noise = mixture.noise.to(torch.float32) if mixture.noise is not None else None
        total = src.to(torch.float64).sum(0) + (noise.to(torch.float64) if noise is not None else 0)
        return (total.to(torch.float32).numpy(), src.numpy(),
                noise.numpy() if noise is not None else None)
    if fmt == "pcm16":
        def q(x: torch.Tensor) -> np.ndarray:
            return np.clip(np.round(x.numpy() * PCM16_SCALE), -32768, 32767).astype(np.int32)
        src = q(mixture.sources)
        noise = q(mixture.noise) if mixture.noise is not None else None
        total = src.sum(0) + (noise if noise is not None else 0)
        # peaks <= 0.9 leave room for the rounding of C + 1 signals, so no clipping happens here
        return (total.astype(np.int16), src.astype(np.int16),
                noise.astype(np.int16) if noise is not None else None)
    raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
