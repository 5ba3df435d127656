"""Mixtures of 1..C talkers in the wsj0-mix and LibriMix styles.

The gain rules, length rules, noise and peak scaling live here as small functions so that the
offline generator (:func:`make_mixtures`, the ``voxsep mix`` command) and on-the-fly dynamic
mixing (:class:`separation.data.DynamicMixingDataset`) apply the very same recipe.

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

import contextlib
import csv
import io
import json
import math
import os
import shutil
import sys
from collections import OrderedDict, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import soundfile as sf
import torch

from frontend.utterances import (  # noqa: F401  (re-exported: the one reader and split rule)
    DEFAULT_FRACTIONS, SPLITS, Utterance, assign_speaker_splits, normalize_split, read_utterances, utterance_root,
)
from frontend import (
    VoxsepError, active_speech_level, atomic_output, audio_info, find_audio_files, load_audio,
    loudness, save_audio,
)
from frontend.noise import COLOR_SLOPES, scale_to_snr  # noqa: F401  (scale_to_snr: re-exported)
from frontend.noise import colored_noise as shaped_noise

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
# Speech inputs: the project's one reader and split rule (frontend.utterances)


def load_utterance_manifest(path: str | os.PathLike) -> list[Utterance]:
    """Every utterance of one table or manifest file (see :func:`frontend.utterances.read_utterances`)."""
    return read_utterances(path)


def find_speech(
    speech: str | os.PathLike, sample_rate: int, speaker_rule: str | None = None,
    splits: Sequence[str] = SPLITS, fractions: Sequence[float] = DEFAULT_FRACTIONS,
) -> tuple[list[Utterance], Path]:
    """Utterances of a table, a manifest, a corpus folder or a folder of audio files (the split
    rule fills in missing splits), and the folder their ids are relative to."""
    utts = read_utterances(speech, sample_rate=sample_rate, speaker_rule=speaker_rule, splits=splits,
                           fractions=fractions)
    return utts, (Path(speech) if speaker_rule is not None else utterance_root(speech, sample_rate))


FULL_CHECK_BYTES = 256 * 2**20


def check_audio_files(paths: Sequence[Path], check: str = "auto", progress: bool = True) -> None:
    """Validate input files before anything is written; raises :class:`frontend.AudioError`
    naming the first bad file.

    Args:
        check: ``header`` reads each header (catches missing, empty, non-audio and unreadable
            files); ``full`` also decodes every file (catches corrupt data and NaN/Inf samples);
            ``auto`` is ``full`` when the files total at most 256 MiB, else ``header`` (then a
            bad sample in a file is still caught, and reported, when a mixture first uses it).
    """
    from tqdm import tqdm

    if check not in ("auto", "full", "header"):
        raise ValueError(f"check must be auto, full or header, got {check!r}")
    if check == "auto":
        total = 0
        for p in paths:
            with contextlib.suppress(OSError):
                total += Path(p).stat().st_size
        check = "full" if total <= FULL_CHECK_BYTES else "header"
    for p in tqdm(paths, desc=f"checking inputs ({check})", unit="file",
                  disable=None if progress else True, leave=False, file=sys.stderr):
        if check == "full":
            load_audio(p)
        else:
            audio_info(p)


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
            f"{n_src} (use more speakers, --splits, or --split-fractions)")
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
# Writing


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


def write_wav(path: Path, data: np.ndarray, sample_rate: int) -> None:
    """Write float32 data as FLOAT wav, int16 data as 16-bit PCM wav (bit-exact), atomically."""
    if data.dtype == np.int16:
        with atomic_output(path) as tmp:
            sf.write(str(tmp), data, sample_rate, subtype="PCM_16", format="WAV")
    else:
        save_audio(path, data, sample_rate, subtype="FLOAT")


@dataclass
class MixConfig:
    """Settings of :func:`make_mixtures` (the ``voxsep mix`` flags). ``speech`` is one source or a
    list of sources; with several, ``speech_weights`` gives each one's share of the talkers."""

    speech: str | list[str]
    out: str
    speakers: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5])
    n_mixtures: dict[str, int] = field(default_factory=lambda: {"tr": 100, "cv": 20, "tt": 20})
    sample_rate: int = 8000
    mode: str = "min"
    gains: str = "wsj0"
    noise: str = "none"  # none | colored | white | pink | brown | a folder of noise files
    snr: tuple[float, float] = (10.0, 20.0)
    speaker_rule: str | None = None
    splits: list[str] = field(default_factory=lambda: list(SPLITS))
    split_fractions: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])
    seed: int = 0
    workers: int = 1
    format: str = "float"
    overwrite: bool = False
    check: str = "auto"  # input validation: auto | full | header (see check_audio_files)
    progress: bool = True
    speech_weights: list[float] | None = None


def _output_paths(plan: MixturePlan, cfg: MixConfig, has_noise: bool) -> dict[str, str]:
    base = Path(f"{plan.n_src}speakers") / rate_folder(cfg.sample_rate) / cfg.mode / plan.split
    name = f"{plan.name}.wav"
    paths = {"mix": (base / "mix" / name).as_posix()}
    for i in range(plan.n_src):
        paths[f"s{i + 1}"] = (base / f"s{i + 1}" / name).as_posix()
    if has_noise:
        paths["noise"] = (base / "noise" / name).as_posix()
    return paths


_WORKER: dict = {}


def _init_worker(cfg: MixConfig, staging: str) -> None:
    torch.set_num_threads(1)
    _WORKER["cfg"] = cfg
    _WORKER["staging"] = Path(staging)
    _WORKER["cache"] = AudioCache(cfg.sample_rate)


def _render_and_write(plan: MixturePlan) -> tuple[str, dict | str]:
    """Worker task; returns ("ok", record) or ("error", message) (errors cross processes as text)."""
    cfg: MixConfig = _WORKER["cfg"]
    staging: Path = _WORKER["staging"]
    try:
        mixture = render_mixture(plan, cfg.sample_rate, cfg.mode, cfg.gains, _WORKER["cache"].load)
        mix, src, noise = quantize(mixture, cfg.format)
        paths = _output_paths(plan, cfg, noise is not None)
        write_wav(staging / paths["mix"], mix, cfg.sample_rate)
        for i in range(plan.n_src):
            write_wav(staging / paths[f"s{i + 1}"], src[i], cfg.sample_rate)
        if noise is not None:
            write_wav(staging / paths["noise"], noise, cfg.sample_rate)
    except VoxsepError as err:
        return "error", str(err)
    return "ok", {"plan": plan, "paths": paths, "length": int(mix.shape[-1]), "scale": mixture.scale,
                  "noise_start": mixture.noise_start}


def _record(result: dict, cfg: MixConfig, speech_root: Path) -> dict:
    plan: MixturePlan = result["plan"]
    paths = result["paths"]
    rec = {
        "id": plan.name,
        "mixture_path": paths["mix"],
        "source_paths": [paths[f"s{i + 1}"] for i in range(plan.n_src)],
        "n_src": plan.n_src,
        "speakers": [u.speaker for u in plan.utterances],
        "gains_db": [round(g, 6) for g in plan.levels_db],
        "sample_rate": cfg.sample_rate,
        "length": result["length"],
        "split": plan.split,
        "mode": cfg.mode,
        "gain_rule": cfg.gains,
        "scale": result["scale"],
        "utterances": [_relative(u.path, speech_root) for u in plan.utterances],
    }
    if "noise" in paths:
        rec["noise_path"] = paths["noise"]
        rec["snr_db"] = round(plan.snr_db, 6)
        if plan.noise["kind"] == "colored":
            rec["noise"] = plan.noise["color"]
        else:
            rec["noise"] = str(plan.noise["path"])
            rec["noise_start"] = result["noise_start"]
    return rec


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def _prepare_out(out: Path, overwrite: bool, speech: Path) -> None:
    if out.exists() and not out.is_dir():
        raise VoxsepError(f"{out}: exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise VoxsepError(f"{out}: folder exists and is not empty (use --overwrite to replace it)")
    speech_r, out_r = speech.resolve(), out.resolve()
    if speech_r == out_r or out_r in speech_r.parents:
        raise VoxsepError(f"{out}: output folder would contain (and replace) the speech input {speech}")


def make_mixtures(cfg: MixConfig) -> dict[str, int]:
    """Generate the mixture dataset described by ``cfg`` under ``cfg.out``.

    Writes the wsj0-mix tree, LibriMix CSVs (``metadata/mixture_{split}_{C}spk.csv``), one jsonl
    manifest per split (``manifest_{split}.jsonl``, contract 2) and ``mix_config.json``. Everything
    is built in a hidden staging folder beside ``out`` that is renamed into place at the end, so a
    failure leaves no partial output.

    Returns:
        Number of mixtures per split.

    Raises:
        VoxsepError: bad input file (named), too few speakers, existing output, bad settings.
    """
    from tqdm import tqdm

    out = Path(cfg.out)
    sources = [Path(p) for p in ([cfg.speech] if isinstance(cfg.speech, (str, os.PathLike)) else cfg.speech)]
    _check_config(cfg)
    weights = cfg.speech_weights
    if weights is not None and (len(weights) != len(sources) or min(weights) < 0 or sum(weights) <= 0):
        raise VoxsepError(f"speech weights {weights}: give one non-negative weight per speech source "
                          f"({len(sources)}), not all zero")
    utterances, roots, source_of = [], [], {}
    for i, speech in enumerate(sources):
        _prepare_out(out, cfg.overwrite, speech)
        utts, root = find_speech(speech, cfg.sample_rate, cfg.speaker_rule, SPLITS, cfg.split_fractions)
        for u in utts:
            if source_of.setdefault(u.speaker, i) != i:
                raise VoxsepError(f"{speech}: speaker {u.speaker!r} is also in {sources[source_of[u.speaker]]}")
        utterances += utts
        roots.append(root)
    speech_root = roots[0] if len(roots) == 1 else Path(os.path.commonpath([r.resolve() for r in roots]))
    noise_mode, noise_files = "none", []
    if cfg.noise in ("none", "colored") or cfg.noise in NOISE_COLORS:
        noise_mode = cfg.noise
    else:
        noise_dir = Path(cfg.noise)
        if not noise_dir.is_dir():
            raise VoxsepError(f"{noise_dir}: --noise must be none, colored, white, pink, brown or a folder")
        noise_files = find_audio_files(noise_dir)
        if not noise_files:
            raise VoxsepError(f"{noise_dir}: no audio files found for --noise")
        noise_mode = "dir"

    check_audio_files([u.path for u in utterances] + list(noise_files), cfg.check, cfg.progress)
    # plan everything first (cheap, deterministic), then render
    plans: list[MixturePlan] = []
    for c in cfg.speakers:
        for k, split in enumerate(cfg.splits):
            n = cfg.n_mixtures.get(split, 0)
            if n <= 0:
                continue
            rng = np.random.default_rng([cfg.seed, c, SPLITS.index(split)])
            plans += plan_mixtures(utterances, c, split, n, cfg.gains, rng, noise_mode, noise_files,
                                   cfg.snr, source_of, weights if len(sources) > 1 else None)
    if not plans:
        raise VoxsepError("nothing to make: --n-mixtures is 0 for every split")

    staging = out.parent / f".{out.name}.staging-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        results = []
        bar = tqdm(total=len(plans), desc="mixing", unit="mix", disable=None if cfg.progress else True,
                   file=sys.stderr)
        with bar, _pool(cfg, staging) as imap:
            for status, payload in imap(_render_and_write, plans):
                if status == "error":
                    raise VoxsepError(payload)
                results.append(payload)
                bar.update(1)
        counts = _write_metadata(results, cfg, staging, speech_root)
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return counts


@contextlib.contextmanager
def _pool(cfg: MixConfig, staging: Path):
    """Yield an ordered ``imap``: in-process for one worker, a process pool otherwise."""
    if cfg.workers <= 1:
        saved = dict(_WORKER)
        threads = torch.get_num_threads()
        _init_worker(cfg, str(staging))
        try:
            yield map
        finally:
            _WORKER.clear()
            _WORKER.update(saved)
            torch.set_num_threads(threads)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    # spawn: torch is not fork-safe once its thread pools exist. An executor (unlike
    # multiprocessing.Pool) fails instead of hanging when a worker dies.
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(cfg.workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(cfg, str(staging))) as pool:
        try:
            yield lambda fn, items: pool.map(fn, items, chunksize=4)
        except BrokenProcessPool:
            raise RuntimeError("a mixing worker process died (out of memory?); rerun with --workers 1") from None
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _check_config(cfg: MixConfig) -> None:
    if cfg.mode not in MODES:
        raise VoxsepError(f"--mode must be one of {', '.join(MODES)}, got {cfg.mode!r}")
    if cfg.gains not in GAIN_RULES:
        raise VoxsepError(f"--gains must be one of {', '.join(GAIN_RULES)}, got {cfg.gains!r}")
    if cfg.format not in FORMATS:
        raise VoxsepError(f"--format must be one of {', '.join(FORMATS)}, got {cfg.format!r}")
    if not cfg.speakers or min(cfg.speakers) < 1:
        raise VoxsepError("--speakers must list counts >= 1")
    if cfg.sample_rate <= 0:
        raise VoxsepError(f"--sample-rate must be positive, got {cfg.sample_rate}")
    for s in cfg.splits:
        if s not in SPLITS:
            raise VoxsepError(f"unknown split {s!r} (expected tr, cv, tt)")
    if cfg.snr[0] > cfg.snr[1]:
        raise VoxsepError(f"--snr range {cfg.snr[0]}-{cfg.snr[1]} is reversed")


def _write_metadata(results: list[dict], cfg: MixConfig, staging: Path, speech_root: Path) -> dict[str, int]:
    records = [_record(r, cfg, speech_root) for r in results]
    counts: dict[str, int] = {}
    for split in cfg.splits:
        recs = [r for r in records if r["split"] == split]
        if not recs:
            continue
        counts[split] = len(recs)
        with atomic_output(staging / f"manifest_{split}.jsonl") as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")
        for c in sorted({r["n_src"] for r in recs}):
            rows = [r for r in recs if r["n_src"] == c]
            has_noise = "noise_path" in rows[0]
            header = (["mixture_ID", "mixture_path"] + [f"source_{i + 1}_path" for i in range(c)]
                      + (["noise_path"] if has_noise else []) + ["length"])
            buf = io.StringIO()
            writer = csv.writer(buf, lineterminator="\n")
            writer.writerow(header)
            for r in rows:
                writer.writerow([r["id"], r["mixture_path"], *r["source_paths"]]
                                + ([r["noise_path"]] if has_noise else []) + [r["length"]])
            with atomic_output(staging / "metadata" / f"mixture_{split}_{c}spk.csv") as tmp:
                tmp.write_text(buf.getvalue(), encoding="utf-8")
    settings = asdict(cfg)
    speech = ([str(Path(cfg.speech).resolve())] if isinstance(cfg.speech, (str, os.PathLike))
              else [str(Path(p).resolve()) for p in cfg.speech])
    settings.update(speech=speech[0] if len(speech) == 1 else speech, out=str(Path(cfg.out)), counts=counts)
    with atomic_output(staging / "mix_config.json") as tmp:
        tmp.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    return counts
