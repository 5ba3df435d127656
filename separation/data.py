"""Separation datasets: readers for the three on-disk mixture formats and dynamic mixing.

Every dataset yields dicts ``{"mix": (T,), "sources": (C, T), "n_src": int, "id": str,
"length": int}`` (float32 tensors; ``length`` is the number of real samples, less than ``T`` only
when a segment was padded). :func:`collate_mixtures` batches items with different talker counts.

Readers:

* :class:`Wsj0MixDataset` - the wsj0-mix tree ``ROOT/{C}speakers/wav8k/{min,max}/{tr,cv,tt}/``.
* :class:`LibriMixDataset` - LibriMix metadata CSVs (``mixture_ID, mixture_path,
  source_1_path, ..., length``).
* :class:`MixtureManifestDataset` - our jsonl mixture manifests (``voxsep mix``, contract 2).

Segments (``segment=None|seconds``): ``None`` returns whole mixtures. With a segment length
``L``, longer mixtures give a random crop of ``L`` samples (the same span of mixture and sources);
shorter ones are zero-padded to ``L`` (``length`` keeps the real length) or, with
``short="drop"``, left out of the dataset (their lengths are read from the metadata or the file
header when the dataset is built).

Crops are random: with ``seed=None`` they use torch's global generator (which a ``DataLoader``
seeds per worker); with an integer ``seed`` they depend only on ``(seed, epoch, index)``, where
``epoch`` is set by :meth:`set_epoch`.

:class:`DynamicMixingDataset` draws fresh mixtures from single utterances (contract 1 manifests)
with the same gain, length and scaling rules as ``voxsep mix`` (:mod:`separation.mixing`).
"""
from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torchaudio.functional as AF
from torch.utils.data import Dataset

from frontend import VoxsepError, audio_info, load_audio, resample
from frontend.noise import loop_excerpt
from frontend.rooms import RoomBank, room_config
from frontend.utterances import (  # noise_recordings: re-exported (moved to frontend, shared with generation)
    DEFAULT_FRACTIONS, Utterance, keep_corpora, noise_recordings, normalize_split, read_utterances,
)
from separation.mixing import (
    NOISE_COLORS, AudioCache, colored_noise, combine, fit_lengths, rate_folder, sample_levels_db,
    scale_to_snr, set_levels,
)

__all__ = [
    "MixtureRecord", "MixtureDataset", "Wsj0MixDataset", "LibriMixDataset", "MixtureManifestDataset",
    "DynamicMixingDataset", "collate_mixtures", "DEFAULT_AUGMENT", "noise_recordings",
]


@dataclass(frozen=True)
class MixtureRecord:
    """Where one mixture and its sources are on disk (absolute paths)."""

    id: str
    mixture_path: Path
    source_paths: tuple[Path, ...]
    length: int | None = None  # samples at the file's rate, when the metadata says
    sample_rate: int | None = None

    @property
    def n_src(self) -> int:
        return len(self.source_paths)


def _as_list(x) -> list:
    if x is None:
        return []
    return list(x) if isinstance(x, (list, tuple)) else [x]


class _EpochRandom:
    """Random numbers per ``(seed, epoch, index)``, or from torch's generator when ``seed`` is None."""

    seed: int | None
    epoch: int

    def set_epoch(self, epoch: int) -> None:
        """Use the random stream of ``epoch`` (call at the start of each training epoch)."""
        self.epoch = int(epoch)

    def _rng(self, index: int) -> np.random.Generator:
        if self.seed is None:
            return np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))
        return np.random.default_rng([int(self.seed), int(self.epoch), int(index)])


class MixtureDataset(Dataset, _EpochRandom):
    """Mixtures listed as :class:`MixtureRecord`; the base of the three readers.

    Args:
        records: the mixtures.
        sample_rate: rate in Hz to return (files at other rates are resampled); ``None`` keeps the
            files' rate.
        segment: ``None`` for whole mixtures, or a crop length in seconds (see the module doc).
        short: ``"pad"`` (default) or ``"drop"``: what to do with mixtures shorter than a segment.
        seed: ``None`` or an int for crops reproducible per (seed, epoch, index).
        cache: keep decoded files in memory (for small datasets read many times).
    """

    def __init__(self, records: Sequence[MixtureRecord], sample_rate: int | None = None,
                 segment: float | None = None, short: str = "pad", seed: int | None = None,
                 cache: bool = False):
        if short not in ("pad", "drop"):
            raise ValueError(f"short must be 'pad' or 'drop', got {short!r}")
        if segment is not None and segment <= 0:
            raise ValueError(f"segment must be positive seconds or None, got {segment}")
        self.sample_rate = sample_rate
        self.segment = segment
        self.short = short
        self.seed = seed
        self.epoch = 0
        self._cache: dict[str, tuple[torch.Tensor, int]] | None = {} if cache else None
        records = list(records)
        if segment is not None and short == "drop":
            records = [r for r in records if self._length_at_rate(r) >= self._segment_samples(r)]
        self.records = records

    def __len__(self) -> int:
        return len(self.records)

    @property
    def n_srcs(self) -> list[int]:
        """Talker count of every item (without reading audio)."""
        return [r.n_src for r in self.records]

    def _file_rate(self, rec: MixtureRecord) -> int:
        return rec.sample_rate or audio_info(rec.mixture_path).sample_rate

    def _segment_samples(self, rec: MixtureRecord) -> int:
        rate = self.sample_rate or self._file_rate(rec)
        return int(round(self.segment * rate))

    def _length_at_rate(self, rec: MixtureRecord) -> int:
        length = rec.length if rec.length is not None else audio_info(rec.mixture_path).frames
        rate = self._file_rate(rec)
        if self.sample_rate is None or self.sample_rate == rate:
            return length
        return int(math.ceil(length * self.sample_rate / rate))

    def _load(self, path: Path, start: int = 0, frames: int | None = None) -> torch.Tensor:
        """Mono float32 at ``self.sample_rate``; partial reads only when no resampling is needed."""
        if self._cache is not None:
            key = str(path)
            if key not in self._cache:
                self._cache[key] = load_audio(path, sample_rate=self.sample_rate)
            wav = self._cache[key][0]
            return wav[start:start + frames] if frames is not None else wav[start:]
        wav, _ = load_audio(path, sample_rate=self.sample_rate, start=start, frames=frames)
        return wav

    def __getitem__(self, index: int) -> dict:
        rec = self.records[index]
        info = audio_info(rec.mixture_path)
        rate = self.sample_rate or info.sample_rate
        direct = self._cache is None and rate == info.sample_rate
        total = info.frames if rate == info.sample_rate else None
        start, frames = 0, None
        if self.segment is not None and direct:
            seg = int(round(self.segment * rate))
            if total > seg:
                start, frames = int(self._rng(index).integers(0, total - seg + 1)), seg
        mix = self._load(rec.mixture_path, start, frames)
        sources = torch.stack([self._checked(self._load(p, start, frames), p, mix.shape[-1])
                               for p in rec.source_paths])
        if self.segment is not None and not direct:
            mix, sources = self._crop(mix, sources, int(round(self.segment * rate)), index)
        return self._item(rec.id, mix, sources, self.segment and int(round(self.segment * rate)))

    @staticmethod
    def _checked(wav: torch.Tensor, path: Path, n: int) -> torch.Tensor:
        if wav.shape[-1] != n:
            raise VoxsepError(f"{path}: {wav.shape[-1]} samples, but its mixture has {n}")
        return wav

    def _crop(self, mix: torch.Tensor, sources: torch.Tensor, seg: int, index: int):
        if mix.shape[-1] > seg:
            start = int(self._rng(index).integers(0, mix.shape[-1] - seg + 1))
            return mix[start:start + seg], sources[:, start:start + seg]
        return mix, sources

    @staticmethod
    def _item(uid: str, mix: torch.Tensor, sources: torch.Tensor, seg: int | None) -> dict:
        length = int(mix.shape[-1])
        if seg and length < seg:
            mix = torch.nn.functional.pad(mix, (0, seg - length))
            sources = torch.nn.functional.pad(sources, (0, seg - length))
        return {"mix": mix, "sources": sources, "n_src": int(sources.shape[0]), "id": uid,
                "length": length}


def _split_name(split: str) -> str:
    return normalize_split(split)


class Wsj0MixDataset(MixtureDataset):
    """The wsj0-mix tree ``root/{C}speakers/wav{8k,16k}/{mode}/{split}/{mix,s1..sC}/NAME.wav``.

    Args:
        root: the tree's root (``voxsep mix --out`` or the original wsj0-mix folder).
        n_src: a talker count or a list of counts (items of all listed counts, sorted by count).
        split: ``tr``/``cv``/``tt`` (or ``train``/``valid``/``test``).
        sample_rate: selects ``wav8k``/``wav16k`` and is the returned rate.
        mode: ``min`` or ``max``.
        **kwargs: :class:`MixtureDataset` options (segment, short, seed, cache).
    """

    def __init__(self, root: str | os.PathLike, n_src: int | Sequence[int] = 2, split: str = "tt",
                 sample_rate: int = 8000, mode: str = "min", **kwargs):
        root = Path(root)
        split = _split_name(split)
        records = []
        for c in _as_list(n_src):
            folder = root / f"{c}speakers" / rate_folder(sample_rate) / mode / split
            mix_dir = folder / "mix"
            if not mix_dir.is_dir():
                raise VoxsepError(f"{mix_dir}: no such folder (wsj0-mix tree for {c} speakers, "
                                  f"{split}, {mode}, {sample_rate} Hz)")
            for mix_path in sorted(mix_dir.glob("*.wav")):
                if mix_path.name.startswith("."):
                    continue
                srcs = tuple(folder / f"s{i + 1}" / mix_path.name for i in range(c))
                for s in srcs:
                    if not s.exists():
                        raise VoxsepError(f"{s}: missing source of {mix_path}")
                records.append(MixtureRecord(mix_path.stem, mix_path, srcs, None, sample_rate))
        if not records:
            raise VoxsepError(f"{root}: no mixtures found for n_src={n_src}, split={split}, mode={mode}")
        super().__init__(records, sample_rate=sample_rate, **kwargs)


def _resolve(path: str, candidates: Sequence[Path]) -> Path:
    p = Path(path)
    if p.is_absolute():
        return p
    for base in candidates:
        if (base / p).exists():
            return base / p
    return candidates[0] / p


class LibriMixDataset(MixtureDataset):
    """LibriMix metadata CSVs (one or several; counts may differ between files).

    Relative paths are looked up under ``root`` if given, else beside the CSV, else in the CSV's
    parent folder (``voxsep mix`` writes ``OUT/metadata/*.csv`` with paths relative to ``OUT``).
    The talker count of a row is its number of non-empty ``source_k_path`` columns.
    """

    def __init__(self, csv_paths: str | os.PathLike | Sequence[str | os.PathLike],
                 root: str | os.PathLike | None = None, sample_rate: int | None = None, **kwargs):
        records = []
        for csv_path in _as_list(csv_paths):
            csv_path = Path(csv_path)
            bases = [Path(root)] if root is not None else [csv_path.parent, csv_path.parent.parent]
            try:
                with open(csv_path, newline="", encoding="utf-8") as f:
                    rows = list(csv.DictReader(f))
            except (OSError, UnicodeDecodeError, csv.Error) as err:
                raise VoxsepError(f"{csv_path}: cannot read CSV ({err.__class__.__name__})") from None
            for n, row in enumerate(rows, 2):
                try:
                    k = sorted(int(key.split("_")[1]) for key in row
                               if key and key.startswith("source_") and key.endswith("_path") and row[key])
                    srcs = tuple(_resolve(row[f"source_{i}_path"], bases) for i in k)
                    length = int(float(row["length"])) if row.get("length") else None
                    records.append(MixtureRecord(row["mixture_ID"], _resolve(row["mixture_path"], bases),
                                                 srcs, length, None))
                except (KeyError, ValueError, TypeError) as err:
                    raise VoxsepError(f"{csv_path}:{n}: not a LibriMix metadata row ({err})") from None
                if not srcs:
                    raise VoxsepError(f"{csv_path}:{n}: row has no source_k_path columns")
        super().__init__(records, sample_rate=sample_rate, **kwargs)


class MixtureManifestDataset(MixtureDataset):
    """Our jsonl mixture manifests (contract 2); paths relative to the manifest's folder.

    Args:
        manifests: one or several jsonl files.
        n_src: keep only these talker counts (int or list); ``None`` keeps all.
        sample_rate: returned rate; ``None`` uses each manifest's ``sample_rate``.
        max_per_count: keep only the first N records of each talker count (a small validation set
            that still covers every count; manifests written by ``voxsep mix`` are sorted by count).
    """

    def __init__(self, manifests: str | os.PathLike | Sequence[str | os.PathLike],
                 n_src: int | Sequence[int] | None = None, sample_rate: int | None = None,
                 max_per_count: int | None = None, **kwargs):
        keep = set(_as_list(n_src))
        if max_per_count is not None and int(max_per_count) < 1:
            raise ValueError(f"max_per_count must be >= 1, got {max_per_count}")
        per_count: dict[int, int] = {}
        records = []
        for manifest in _as_list(manifests):
            manifest = Path(manifest)
            try:
                lines = manifest.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as err:
                raise VoxsepError(f"{manifest}: cannot read manifest ({err.__class__.__name__})") from None
            for n, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    r = json.loads(line)
                    rec = MixtureRecord(
                        str(r["id"]), manifest.parent / r["mixture_path"],
                        tuple(manifest.parent / p for p in r["source_paths"]),
                        int(r["length"]) if r.get("length") is not None else None,
                        int(r["sample_rate"]) if r.get("sample_rate") else None)
                except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
                    raise VoxsepError(f"{manifest}:{n}: not a mixture record ({err.__class__.__name__}: {err})") from None
                if keep and rec.n_src not in keep:
                    continue
                if max_per_count is not None and per_count.get(rec.n_src, 0) >= int(max_per_count):
                    continue
                per_count[rec.n_src] = per_count.get(rec.n_src, 0) + 1
                records.append(rec)
        super().__init__(records, sample_rate=sample_rate, **kwargs)


def collate_mixtures(batch: Sequence[dict], max_speakers: int | None = None) -> dict:
    """Batch items with different lengths and talker counts.

    Mixtures are zero-padded to the longest item, sources to ``max_speakers`` channels (default:
    the largest count in the batch) and the longest item.

    Returns:
        ``{"mix": (B, T), "sources": (B, C_max, T), "n_src": (B,) long, "lengths": (B,) long,
        "ids": list[str]}``; ``sources[b, n_src[b]:]`` and samples past ``lengths[b]`` are zero.
    """
    if not batch:
        raise ValueError("collate_mixtures: empty batch")
    n_src = [int(item["n_src"]) for item in batch]
    c_max = max(n_src) if max_speakers is None else int(max_speakers)
    if max(n_src) > c_max:
        raise ValueError(f"collate_mixtures: an item has {max(n_src)} sources, more than max_speakers={c_max}")
    t_max = max(int(item["mix"].shape[-1]) for item in batch)
    mix = torch.zeros(len(batch), t_max, dtype=batch[0]["mix"].dtype)
    sources = torch.zeros(len(batch), c_max, t_max, dtype=batch[0]["mix"].dtype)
    lengths = []
    for b, item in enumerate(batch):
        t = item["mix"].shape[-1]
        if item["sources"].shape != (n_src[b], t):
            raise ValueError(f"collate_mixtures: item {b} sources shape {tuple(item['sources'].shape)}, "
                             f"expected ({n_src[b]}, {t})")
        mix[b, :t] = item["mix"]
        sources[b, : n_src[b], :t] = item["sources"]
        lengths.append(int(item.get("length", t)))
    return {"mix": mix, "sources": sources, "n_src": torch.tensor(n_src, dtype=torch.long),
            "lengths": torch.tensor(lengths, dtype=torch.long), "ids": [item["id"] for item in batch]}


# ---------------------------------------------------------------------------------------------
# Dynamic mixing

#: Augmentations a config may enable, with their default settings (all off unless listed).
DEFAULT_AUGMENT = {
    "speed": {"prob": 0.5, "range": [0.9, 1.1]},          # resampling factor (tempo and pitch)
    "gain": {"prob": 0.5, "range_db": [-3.0, 3.0]},       # per talker, after the gain rule
    "filter": {"prob": 0.3, "lowpass_hz": [1500.0, 3800.0], "bandpass_hz": [500.0, 2000.0], "q": 0.707},
    "noise": {"prob": 0.3, "snr_db": [10.0, 30.0], "colors": list(NOISE_COLORS), "files": None,
              "file_prob": 0.5, "file_fractions": [0.75, 0.25, 0.0]},
    # method "synthetic": exponentially decaying noise IR; "rooms": simulated shoebox rooms
    # (pyroomacoustics, the [rooms] extra; frontend.rooms), a bank of n_rooms drawn from the seed
    "reverb": {"prob": 0.3, "rt60": [0.1, 0.5], "method": "synthetic", "n_rooms": 64},
}


def _augment_config(augment: dict | None) -> dict:
    if not augment:
        return {}
    unknown = set(augment) - set(DEFAULT_AUGMENT)
    if unknown:
        raise ValueError(f"unknown augmentation(s) {sorted(unknown)}; known: {sorted(DEFAULT_AUGMENT)}")
    out = {}
    for name, settings in augment.items():
        if settings is False or settings is None:
            continue
        merged = dict(DEFAULT_AUGMENT[name])
        if isinstance(settings, dict):
            bad = set(settings) - set(merged)
            if bad:
                raise ValueError(f"augmentation {name!r}: unknown setting(s) {sorted(bad)}")
            merged.update(settings)
        out[name] = merged
    return out


def synthetic_rir(rt60: float, sample_rate: int, rng: np.random.Generator) -> torch.Tensor:
    """A simple room impulse response: a unit direct path followed by Gaussian noise whose
    amplitude decays by 60 dB over ``rt60`` seconds (energy normalised to the direct path + tail)."""
    n = max(2, int(rt60 * sample_rate))
    t = np.arange(n) / sample_rate
    tail = rng.standard_normal(n) * np.exp(-6.9078 * t / rt60)  # ln(1000) = 6.9078: -60 dB at rt60
    tail[0] = 0.0
    tail *= 0.3 / max(np.sqrt(np.sum(tail ** 2)), 1e-12)
    tail[0] = 1.0
    return torch.from_numpy(tail)


def _source_specs(utterances) -> list[dict]:
    """Normalise the ``utterances`` argument of :class:`DynamicMixingDataset` to a list of
    ``{"path" or "utterances", "weight", "fractions", "corpora"}`` specs."""
    if isinstance(utterances, (str, os.PathLike)):
        return [{"path": utterances, "weight": 1.0}]
    items = list(utterances)
    if items and all(isinstance(u, Utterance) for u in items):
        return [{"utterances": items, "weight": 1.0}]
    specs = []
    for item in items:
        if isinstance(item, (str, os.PathLike)):
            item = {"path": item}
        if not isinstance(item, dict) or "path" not in item:
            raise ValueError(f"dynamic mixing: a source is a path or {{path, weight, fractions}}, got {item!r}")
        unknown = set(item) - {"path", "weight", "fractions", "corpora"}
        if unknown:
            raise ValueError(f"dynamic mixing source {item['path']}: unknown key(s) {sorted(unknown)}")
        specs.append({"weight": 1.0, **item})
    if not specs:
        raise ValueError("dynamic mixing: no utterance source given")
    return specs


class DynamicMixingDataset(Dataset, _EpochRandom):
    """Fresh mixtures of distinct talkers drawn from single utterances every epoch.

    Item ``index`` of epoch ``e`` depends only on ``(seed, e, index)``: call :meth:`set_epoch`
    at the start of every epoch to get new mixtures (otherwise every epoch repeats epoch 0).

    Args:
        utterances: one source or a list of sources. A source is anything
            :func:`frontend.utterances.read_utterances` reads (an utterance table such as
            ``DATA/speech/manifest.csv``, a corpus manifest or folder, a LibriSpeech-style tree),
            or a dict ``{path, weight, fractions, corpora}``: each talker of a mixture comes from
            source ``i`` with probability proportional to ``weight`` (e.g. 0.7 real, 0.3 TTS),
            ``fractions`` sets the split rule for that source's records that name no split, and
            ``corpora`` keeps the utterances of these corpora of a table (after the split rule ran
            over the whole table: the same table twice with other corpora and weights gives each
            corpus its own share of the talkers).
            A list of :class:`frontend.utterances.Utterance` is accepted too.
        counts: talker counts to draw from (uniformly, or by ``count_weights``).
        segment: crop length in seconds (each utterance is cropped at a random offset), or
            ``None`` for whole utterances.
        sample_rate: rate in Hz (utterances are resampled on load).
        gains: ``wsj0`` or ``librimix`` rule (as ``voxsep mix --gains``).
        mode: ``min`` (truncate to the shortest talker) or ``max`` (pad to the longest).
        epoch_size: items per epoch.
        seed: base seed.
        split: keep utterances of this split (``train``/``valid``/``test`` or ``tr``/``cv``/``tt``);
            ``None`` keeps all.
        fractions: default split fractions (train, valid, test) of sources that name no split.
        augment: ``None`` (off) or a dict enabling entries of :data:`DEFAULT_AUGMENT`, e.g.
            ``{"speed": {"prob": 1.0}, "reverb": True}``. ``noise.files`` names real noise
            recordings (a folder or a table with a ``path`` column), split by file with
            ``noise.file_fractions`` so that validation uses held-back files; ``noise.file_prob``
            is the share of noisy mixtures that get a recording rather than generated noise.
        count_weights: relative probability of each entry of ``counts`` (default uniform).
        fill: with a ``segment``, a talker whose utterance is shorter than the crop goes on with
            other utterances of the same speaker (drawn at random, back to back) until the crop
            is full, so that ``min`` mode does not cut the mixture to the shortest utterance and
            the training step spends no compute on zero padding (read speech of a few seconds
            per utterance otherwise pads about a fifth of 4 s crops). Off by default.
        cache: ``True``/``False``, or ``"auto"``: keep decoded utterances in memory when they fit
            in ``max_cache_bytes`` (estimated from the manifest durations). Call :meth:`preload`
            before a ``DataLoader`` forks its workers to decode once and share the cache.

    Items are those of :class:`MixtureDataset` (padded to the segment, with ``length``), plus
    ``speakers`` (list of ids), ``gains_db`` (the levels the gain rule set, before the shared
    scale) and ``scale`` (the shared peak scale). With noise augmentation the mixture holds noise that is not in
    ``sources``; reverberation and filtering are applied to the sources themselves.
    """

    def __init__(self, utterances: str | os.PathLike | Sequence,
                 counts: Sequence[int] = (1, 2, 3, 4, 5), segment: float | None = 4.0,
                 sample_rate: int = 8000, gains: str = "wsj0", mode: str = "min",
                 epoch_size: int = 1000, seed: int = 0, split: str | None = "train",
                 augment: dict | None = None, cache: bool | str = "auto",
                 max_cache_bytes: int = 1 << 30, fractions: Sequence[float] = DEFAULT_FRACTIONS,
                 count_weights: Sequence[float] | None = None, fill: bool = False):
        wanted = normalize_split(split) if split is not None else None
        self.sources: list[list[str]] = []  # speakers of each source
        self.source_weights: list[float] = []
        by_speaker: dict[str, list[Utterance]] = {}
        utts_all: list[Utterance] = []
        for spec in _source_specs(utterances):
            if "utterances" in spec:
                utts = list(spec["utterances"])
            else:
                utts = read_utterances(spec["path"], sample_rate=sample_rate,
                                       fractions=spec.get("fractions") or fractions)
                if spec.get("corpora") is not None:
                    utts = keep_corpora(utts, list(spec["corpora"]), spec["path"])
            if wanted is not None:
                utts = [u for u in utts if u.split == wanted]
            speakers = sorted({u.speaker for u in utts})
            twice = set(speakers) & set(by_speaker)
            if twice:
                raise VoxsepError(f"dynamic mixing: speaker {sorted(twice)[0]!r} appears in two sources")
            for u in utts:
                by_speaker.setdefault(u.speaker, []).append(u)
            if speakers and float(spec["weight"]) > 0:
                self.sources.append(speakers)
                self.source_weights.append(float(spec["weight"]))
            utts_all += utts
        self.speakers = sorted(by_speaker)
        self.by_speaker = by_speaker
        self.counts = [int(c) for c in counts]
        if not self.counts or min(self.counts) < 1:
            raise ValueError(f"counts must be positive, got {counts}")
        if count_weights is not None and (len(count_weights) != len(self.counts) or min(count_weights) < 0
                                          or sum(count_weights) <= 0):
            raise ValueError(f"count_weights must be {len(self.counts)} non-negative weights, got {count_weights}")
        self.count_weights = None if count_weights is None else np.asarray(count_weights, float) / sum(count_weights)
        if max(self.counts) > len(self.speakers):
            raise VoxsepError(f"dynamic mixing: split {split} has {len(self.speakers)} speakers, "
                              f"{max(self.counts)}-talker mixtures need more")
        if gains not in ("wsj0", "librimix"):
            raise ValueError(f"gains must be 'wsj0' or 'librimix', got {gains!r}")
        self.segment = segment
        self.fill = bool(fill)
        self.sample_rate = sample_rate
        self.gains = gains
        self.mode = mode
        self.epoch_size = int(epoch_size)
        self.seed = int(seed)
        self.epoch = 0
        self.augment = _augment_config(augment)
        self._rooms = None
        reverb = self.augment.get("reverb")
        if reverb and reverb["method"] not in ("synthetic", "rooms"):
            raise ValueError(f"augmentation reverb: method must be 'synthetic' or 'rooms', got {reverb['method']!r}")
        if reverb and reverb["method"] == "rooms":
            self._rooms = RoomBank(room_config({"rt60": reverb["rt60"], "n_rooms": reverb["n_rooms"], "prob": 1.0,
                                                "target": "reverberant"}), sample_rate, seed)
        self.noise_files: list[Path] = []
        noise_cfg = self.augment.get("noise")
        if noise_cfg and noise_cfg.get("files"):
            self.noise_files = noise_recordings(noise_cfg["files"], split, noise_cfg["file_fractions"])
        if cache == "auto":
            total = sum(u.duration or 0.0 for u in utts_all)
            known = all(u.duration is not None for u in utts_all)
            cache = known and total * sample_rate * 4 <= max_cache_bytes
        self._audio = AudioCache(sample_rate, max_cache_bytes if cache else 0)
        self._noise_audio = AudioCache(sample_rate, max_cache_bytes if self.noise_files else 0)

    def _draw_speakers(self, rng: np.random.Generator, n_src: int) -> list[str]:
        """``n_src`` distinct speakers; each talker's source is drawn by the source weights."""
        if len(self.sources) == 1:
            pool = self.sources[0]
            return [pool[k] for k in rng.choice(len(pool), size=n_src, replace=False)]
        chosen: list[str] = []
        left = [list(src) for src in self.sources]
        weights = np.asarray(self.source_weights, float)
        for _ in range(n_src):
            w = weights * np.asarray([len(src) > 0 for src in left], float)
            i = int(rng.choice(len(left), p=w / w.sum()))
            spk = left[i].pop(int(rng.integers(len(left[i]))))
            chosen.append(spk)
        return chosen

    def __len__(self) -> int:
        return self.epoch_size

    def preload(self) -> None:
        """Decode every utterance now (before ``DataLoader`` workers fork, so they share it)."""
        for utts in self.by_speaker.values():
            for u in utts:
                self._audio.load(u.path)

    def _crop(self, wav: torch.Tensor, rng: np.random.Generator, speed: float) -> torch.Tensor:
        if self.segment is None:
            need = wav.shape[-1]
        else:
            need = int(math.ceil(self.segment * self.sample_rate * speed)) + 1
        if wav.shape[-1] > need:
            start = int(rng.integers(0, wav.shape[-1] - need + 1))
            wav = wav[start:start + need]
        if speed != 1.0:
            # treat the signal as recorded at sample_rate * speed: tempo and pitch scale by `speed`
            wav = resample(wav, int(round(self.sample_rate * speed)), self.sample_rate)
        if self.segment is not None:
            wav = wav[: int(round(self.segment * self.sample_rate))]
        return wav

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.epoch_size:
            raise IndexError(index)
        rng = self._rng(index)
        aug = self.augment
        n_src = self.counts[int(rng.choice(len(self.counts), p=self.count_weights))]
        chosen = self._draw_speakers(rng, n_src)
        wavs = []
        for spk in chosen:
            utt = self.by_speaker[spk][int(rng.integers(len(self.by_speaker[spk])))]
            speed = 1.0
            if "speed" in aug and rng.random() < aug["speed"]["prob"]:
                speed = round(float(rng.uniform(*aug["speed"]["range"])), 2)  # 1 % steps: small filters
            wav = self._audio.load(utt.path)
            if self.fill and self.segment is not None:
                need = int(math.ceil(self.segment * self.sample_rate * speed)) + 1
                parts = [wav]
                while sum(p.shape[-1] for p in parts) < need and len(parts) < 64:
                    more = self.by_speaker[spk][int(rng.integers(len(self.by_speaker[spk])))]
                    parts.append(self._audio.load(more.path))
                wav = torch.cat(parts) if len(parts) > 1 else wav
            wav = self._crop(wav.to(torch.float64), rng, speed)
            if "reverb" in aug and rng.random() < aug["reverb"]["prob"]:
                if self._rooms is not None:
                    wav = torch.from_numpy(self._rooms.apply(wav.numpy(), rng)[0]).to(torch.float64)
                else:
                    rir = synthetic_rir(float(rng.uniform(*aug["reverb"]["rt60"])), self.sample_rate, rng)
                    wav = AF.fftconvolve(wav, rir)[: wav.shape[-1]]
            wavs.append(wav)
        sources = fit_lengths(wavs, self.mode)
        if "filter" in aug and rng.random() < aug["filter"]["prob"]:
            sources = self._filter(sources, rng, aug["filter"])
        levels = sample_levels_db(rng, n_src, self.gains)
        sources = set_levels(sources, self.sample_rate, levels, self.gains)
        if "gain" in aug:
            for i in range(n_src):
                if rng.random() < aug["gain"]["prob"]:
                    sources[i] *= 10 ** (float(rng.uniform(*aug["gain"]["range_db"])) / 20)
        noise = None
        if "noise" in aug and rng.random() < aug["noise"]["prob"]:
            if self.noise_files and rng.random() < aug["noise"]["file_prob"]:
                raw = self._noise_excerpt(sources.shape[-1], rng)
            else:
                color = aug["noise"]["colors"][int(rng.integers(len(aug["noise"]["colors"])))]
                raw = colored_noise(sources.shape[-1], color, rng)
            noise = scale_to_snr(raw, sources.sum(0), float(rng.uniform(*aug["noise"]["snr_db"])))
        mixture = combine(sources, noise, levels)
        seg = int(round(self.segment * self.sample_rate)) if self.segment is not None else None
        item = MixtureDataset._item(f"dm_e{self.epoch}_{index}", mixture.mix.to(torch.float32),
                                    mixture.sources.to(torch.float32), seg)
        item.update(speakers=chosen, gains_db=mixture.levels_db, scale=mixture.scale)
        return item

    def _noise_excerpt(self, n_samples: int, rng: np.random.Generator) -> torch.Tensor:
        """A random stretch of a random noise recording (looped when shorter)."""
        wav = self._noise_audio.load(self.noise_files[int(rng.integers(len(self.noise_files)))]).to(torch.float64)
        return loop_excerpt(wav, n_samples, rng)

    def _filter(self, sources: torch.Tensor, rng: np.random.Generator, cfg: dict) -> torch.Tensor:
        """One random low-pass or band-pass biquad applied to every talker (a shared channel)."""
        # torchaudio's biquads clamp to [-1, 1]; keep the input well inside that range
        top = float(sources.abs().max())
        if top == 0:
            return sources
        x = (sources / (2 * top)).to(torch.float32)
        nyquist_cap = 0.45 * self.sample_rate
        if rng.random() < 0.5:
            cutoff = min(float(rng.uniform(*cfg["lowpass_hz"])), nyquist_cap)
            y = AF.lowpass_biquad(x, self.sample_rate, cutoff, cfg["q"])
        else:
            centre = min(float(rng.uniform(*cfg["bandpass_hz"])), nyquist_cap)
            y = AF.bandpass_biquad(x, self.sample_rate, centre, cfg["q"])
        return y.to(torch.float64) * (2 * top)
