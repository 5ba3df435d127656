"""The one utterance-table reader and the one speaker-split rule of the project.

Every task (separation mixtures and dynamic mixing, the denoiser, the vocoder, the corpus builder)
reads single-talker speech through :func:`read_utterances`, so the same folder always gives the
same train / valid / test speakers.

Accepted sources:

* an utterance **table** (CSV) with a header holding ``path`` and ``speaker`` (or ``speaker_id``),
  optionally ``split``, ``corpus``, and a duration column (``seconds``, ``duration`` or
  ``duration_s``), as ``DATA/speech/manifest.csv``;
* a **jsonl manifest** (one object a line: ``path``, ``speaker``, optionally ``split``,
  ``duration``, ``corpus``), as written by ``voxsep corpus``;
* a **folder** holding one of those (``manifest_<rate>.jsonl`` of the requested rate first, then
  the highest rate, then ``manifest.csv``), or a folder of audio files whose first sub-folder is
  the speaker (LibriSpeech ``speaker/chapter/x.flac``), or any layout with a ``speaker_rule``
  (a regular expression whose first group is the speaker id).

Paths in tables and manifests are relative to the file's folder (absolute paths are kept).

Noise recordings (:func:`noise_recordings`: a folder of audio files or a table with a ``path``
column, as ``DATA/noise/manifest.csv``) are split by file with the same rule, each file its own
"speaker", so that validation mixes in recordings training never heard (separation's dynamic
mixing and the denoiser's training data share it).

The split rule (:func:`assign_speaker_splits`): records that name their split keep it; the others
get a split from their speaker alone. Speakers are ordered by the SHA-1 of their id (independent
of file order and of any seed) and cut into consecutive groups sized by ``fractions``, separately
within each ``corpus`` (a table's ``corpus`` column), so that every corpus is represented in every
split. Default fractions 0.8 / 0.1 / 0.1.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from frontend.audio import find_audio_files
from frontend.errors import VoxsepError

SPLITS = ("tr", "cv", "tt")
SPLIT_ALIASES = {
    "tr": "tr", "train": "tr", "training": "tr",
    "cv": "cv", "valid": "cv", "validation": "cv", "dev": "cv",
    "tt": "tt", "test": "tt", "eval": "tt",
}
#: long names of the splits (``tr`` -> ``train``), as the corpus manifests write them
SPLIT_NAMES = {"tr": "train", "cv": "valid", "tt": "test"}
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)
#: default shares of noise recordings in train / valid / test (11 files: 8 / 3 / 0)
NOISE_FRACTIONS = (0.75, 0.25, 0.0)
SPEAKER_COLUMNS = ("speaker", "speaker_id")
DURATION_COLUMNS = ("seconds", "duration", "duration_s")


def normalize_split(split: str) -> str:
    """Map ``train``/``valid``/``test`` (and ``tr``/``cv``/``tt``) to ``tr``/``cv``/``tt``."""
    key = str(split).strip().lower()
    if key not in SPLIT_ALIASES:
        raise VoxsepError(f"unknown split {split!r} (expected one of {', '.join(SPLIT_ALIASES)})")
    return SPLIT_ALIASES[key]


@dataclass(frozen=True)
class Utterance:
    """One single-talker recording.

    Attributes:
        path: path of the audio file (absolute when the source was given absolute).
        speaker: talker identity (unique per voice across corpora).
        split: ``tr``, ``cv`` or ``tt``.
        uid: short id: the path relative to the source's folder, without extension.
        duration: seconds, when the source says (else ``None``).
        corpus: the corpus a table names (``None`` when it names none).
    """

    path: Path
    speaker: str
    split: str
    uid: str
    duration: float | None = None
    corpus: str | None = None


# ----------------------------------------------------------------------------------------------
# The split rule
# ----------------------------------------------------------------------------------------------
def _check_fractions(fractions: Sequence[float], n_splits: int) -> np.ndarray:
    if len(fractions) != n_splits:
        raise VoxsepError(f"split fractions: {len(fractions)} values for {n_splits} splits")
    frac = np.asarray(fractions, dtype=float)
    if (frac < 0).any() or frac.sum() <= 0:
        raise VoxsepError("split fractions must be non-negative and not all zero")
    return frac / frac.sum()


def _split_group(speakers: list[str], splits: Sequence[str], frac: np.ndarray) -> dict[str, str]:
    speakers = sorted(set(speakers), key=lambda s: hashlib.sha1(s.encode()).hexdigest())
    n = len(speakers)
    raw = frac * n
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    # give every split with a positive fraction at least one speaker, taken from the largest
    for i in range(len(splits)):
        if counts[i] == 0 and frac[i] > 0 and counts.max() > 1:
            counts[int(np.argmax(counts))] -= 1
            counts[i] += 1
    out, start = {}, 0
    for split, k in zip(splits, counts):
        for s in speakers[start:start + k]:
            out[s] = split
        start += k
    return out


def assign_speaker_splits(
    speakers: Iterable[str], splits: Sequence[str] = SPLITS,
    fractions: Sequence[float] = DEFAULT_FRACTIONS, groups: Mapping[str, str | None] | None = None,
) -> dict[str, str]:
    """The project's speaker-disjoint split: speaker id -> split.

    Within each group (``groups[speaker]``, e.g. its corpus; one group when ``None``) speakers are
    ordered by the SHA-1 of their id and cut into consecutive runs sized by ``fractions``
    (largest-remainder rounding; every split with a positive fraction gets at least one speaker
    of a group that has more than one).

    Args:
        speakers: speaker ids (duplicates are ignored).
        splits: split names, in the order of ``fractions``.
        fractions: relative shares of the speakers (normalised).
        groups: optional speaker -> group; each group is split on its own.
    """
    frac = _check_fractions(fractions, len(splits))
    speakers = list(dict.fromkeys(speakers))
    by_group: dict[str, list[str]] = {}
    for s in speakers:
        key = "" if groups is None else str(groups.get(s) or "")
        by_group.setdefault(key, []).append(s)
    out: dict[str, str] = {}
    for members in by_group.values():
        out.update(_split_group(members, splits, frac))
    return out


def _with_splits(records: list[dict], splits: Sequence[str], fractions: Sequence[float]) -> list[Utterance]:
    """Records (dicts with ``path``, ``speaker``, ``split`` or None, ...) -> utterances, the
    missing splits filled in by :func:`assign_speaker_splits` (grouped by corpus)."""
    need = [r for r in records if r["split"] is None]
    if need:
        groups = {r["speaker"]: r["corpus"] for r in need}
        split_of = assign_speaker_splits(groups, splits, fractions, groups)
        for r in need:
            r["split"] = split_of[r["speaker"]]
    return [Utterance(r["path"], r["speaker"], r["split"], r["uid"], r["duration"], r["corpus"]) for r in records]


# ----------------------------------------------------------------------------------------------
# Readers
# ----------------------------------------------------------------------------------------------
def _record(root: Path, rel: str, speaker: str, split, duration, corpus, where: str) -> dict:
    if not rel:
        raise VoxsepError(f"{where}: empty path")
    if not speaker:
        raise VoxsepError(f"{where}: empty speaker")
    p = Path(rel)
    full = p if p.is_absolute() else root / p
    try:
        dur = float(duration) if duration not in (None, "") else None
    except ValueError:
        raise VoxsepError(f"{where}: duration {duration!r} is not a number") from None
    return {"path": full, "speaker": str(speaker), "uid": str(p.with_suffix("")),
            "split": normalize_split(split) if split not in (None, "") else None,
            "duration": dur, "corpus": str(corpus) if corpus not in (None, "") else None}


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise VoxsepError(f"{path}: cannot read utterance list ({err.__class__.__name__})") from None


def _read_jsonl(path: Path) -> list[dict]:
    out = []
    for n, line in enumerate(_read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            rec = json.loads(line)
            rel, speaker = rec["path"], rec["speaker"]
        except json.JSONDecodeError:
            raise VoxsepError(f"{where}: not a valid utterance record (invalid JSON)") from None
        except (KeyError, TypeError) as err:
            raise VoxsepError(f"{where}: not a valid utterance record (missing key {err})") from None
        out.append(_record(path.parent, str(rel), str(speaker), rec.get("split"), rec.get("duration"),
                           rec.get("corpus"), where))
    return out


def _read_csv(path: Path) -> list[dict]:
    rows = list(csv.reader(_read_text(path).splitlines()))
    if not rows:
        raise VoxsepError(f"{path}: empty utterance table")
    header = [h.strip() for h in rows[0]]
    speaker_col = next((c for c in SPEAKER_COLUMNS if c in header), None)
    if "path" not in header or speaker_col is None:
        raise VoxsepError(f"{path}: an utterance table needs the columns 'path' and 'speaker' "
                          f"(header: {', '.join(header)})")
    duration_col = next((c for c in DURATION_COLUMNS if c in header), None)
    out = []
    for n, row in enumerate(rows[1:], 2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise VoxsepError(f"{path}:{n}: {len(row)} fields, the header has {len(header)}")
        rec = dict(zip(header, row))
        out.append(_record(path.parent, rec["path"].strip(), rec[speaker_col].strip(), rec.get("split"),
                           rec.get(duration_col) if duration_col else None, rec.get("corpus"), f"{path}:{n}"))
    return out


def _scan_folder(root: Path, speaker_rule: str | None) -> list[dict]:
    files = find_audio_files(root)
    if not files:
        raise VoxsepError(f"{root}: no audio files found")
    rule = None
    if speaker_rule is not None:
        try:
            rule = re.compile(speaker_rule)
        except re.error as err:
            raise VoxsepError(f"speaker rule {speaker_rule!r}: invalid regular expression ({err})") from None
        if rule.groups < 1:
            raise VoxsepError(f"speaker rule {speaker_rule!r} needs a group: (...) capturing the speaker id")
    out = []
    for f in files:
        rel = f.relative_to(root).as_posix()
        if rule is not None:
            m = rule.search(rel)
            if m is None or not m.group(1):
                raise VoxsepError(f"{f}: path does not match the speaker rule {speaker_rule!r}")
            speaker = m.group(1)
        else:
            parts = rel.split("/")
            if len(parts) < 2:
                raise VoxsepError(f"{f}: cannot tell the speaker (expected speaker/.../file); give a speaker rule")
            speaker = parts[0]
        out.append({"path": f.resolve(), "speaker": speaker, "uid": str(Path(rel).with_suffix("")),
                    "split": None, "duration": None, "corpus": None})
    return out


def _rate_of(path: Path) -> int:
    m = re.search(r"(\d+)k", path.stem)
    return int(m.group(1)) if m else 0


def utterance_source(source: str | os.PathLike, sample_rate: int | None = None) -> Path:
    """The file :func:`read_utterances` reads for ``source``: the source itself when it is a file,
    else the folder's ``manifest_<rate>.jsonl`` (the requested rate, else the highest rate; down-
    sampling loses nothing), else its ``manifest.csv``, else the folder itself (scanned)."""
    source = Path(source)
    if not source.exists():
        raise VoxsepError(f"{source}: no such file or folder")
    if source.is_file():
        return source
    if sample_rate:
        preferred = source / f"manifest_{sample_rate // 1000}k.jsonl"
        if preferred.is_file():
            return preferred
    manifests = sorted(source.glob("manifest*.jsonl"))
    if manifests:
        return max(manifests, key=_rate_of)
    if (source / "manifest.csv").is_file():
        return source / "manifest.csv"
    return source


def read_utterances(
    source: str | os.PathLike, split: str | None = None, *, sample_rate: int | None = None,
    speaker_rule: str | None = None, splits: Sequence[str] = SPLITS,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
) -> list[Utterance]:
    """Utterances of a table, a manifest or a folder (see the module docstring).

    Args:
        source: a ``.csv`` table, a ``.jsonl`` manifest, or a folder.
        split: keep only this split (``train``/``valid``/``test`` or ``tr``/``cv``/``tt``).
        sample_rate: prefer a folder's manifest of this rate.
        speaker_rule: scan the folder's audio files with this regular expression (first group =
            speaker), even when the folder holds a manifest.
        splits, fractions: the split rule for records that do not name their split.

    Raises:
        VoxsepError: a missing source, an unreadable line (naming the file and line), no
            utterances.
    """
    source = Path(source)
    if speaker_rule is not None and not source.is_dir():
        raise VoxsepError(f"{source}: a speaker rule needs a folder of audio files")
    path = source if speaker_rule is not None else utterance_source(source, sample_rate)
    if path.is_dir():
        records = _scan_folder(path, speaker_rule)
    elif path.suffix.lower() == ".csv":
        records = _read_csv(path)
    else:
        records = _read_jsonl(path)
    if not records:
        raise VoxsepError(f"{path}: lists no utterances")
    utts = _with_splits(records, [normalize_split(s) for s in splits], fractions)
    if split is not None:
        wanted = normalize_split(split)
        utts = [u for u in utts if u.split == wanted]
    return utts


def keep_corpora(utts: list[Utterance], corpora: Sequence[str], source: str | os.PathLike = "") -> list[Utterance]:
    """The utterances of ``corpora`` (their ``corpus``); one-line error naming the source and the
    corpora it has when a name matches nothing."""
    have = sorted({u.corpus for u in utts if u.corpus})
    missing = [c for c in corpora if c not in have]
    if missing:
        raise VoxsepError(f"{source}: no corpus {missing[0]!r} (its corpora: {', '.join(have) or 'none named'})")
    wanted = set(corpora)
    return [u for u in utts if u.corpus in wanted]


def utterance_root(source: str | os.PathLike, sample_rate: int | None = None) -> Path:
    """The folder that :attr:`Utterance.uid` is relative to for ``source``."""
    path = utterance_source(source, sample_rate)
    return path if path.is_dir() else path.parent


def noise_recordings(source: str | os.PathLike, split: str | None,
                     fractions: Sequence[float] = NOISE_FRACTIONS) -> list[Path]:
    """Noise recordings of one split: a folder of audio files or a table with a ``path`` column
    (as ``DATA/noise/manifest.csv``), split by file with the project's split rule (each file is its
    own "speaker"), so validation mixes in recordings that training never heard.

    Args:
        source: a folder (its ``manifest.csv`` when it has one, else its audio files) or a table.
        split: ``train``/``valid``/``test`` (or ``tr``/``cv``/``tt``); ``None`` returns every file.
        fractions: shares of the files in train, valid, test.

    Raises:
        VoxsepError: no recordings, an unreadable table, or no file in ``split``.
    """
    source = Path(source)
    if source.is_dir() and not (source / "manifest.csv").is_file():
        files = find_audio_files(source)
        if not files:
            raise VoxsepError(f"{source}: no noise recordings found")
        table = source / "manifest.csv"
        rows = [{"path": str(f.resolve())} for f in files]
    else:
        table = source / "manifest.csv" if source.is_dir() else source
        try:
            with open(table, newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
        except OSError as err:
            raise VoxsepError(f"{table}: cannot read noise list ({err.__class__.__name__})") from None
        if not rows or "path" not in rows[0]:
            raise VoxsepError(f"{table}: a noise table needs a 'path' column")
    paths = [Path(r["path"]) if Path(r["path"]).is_absolute() else table.parent / r["path"] for r in rows]
    split_of = assign_speaker_splits([p.name for p in paths], fractions=fractions)
    if split is None:
        return paths
    wanted = normalize_split(split)
    chosen = [p for p in paths if split_of[p.name] == wanted]
    if not chosen:
        raise VoxsepError(f"{table}: no noise recording falls in split {split} (fractions {list(fractions)})")
    return chosen
