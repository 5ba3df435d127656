"""A tiny multi-voice speech corpus synthesized with espeak-ng, for tests.

``make_tiny_corpus(folder)`` writes ``folder/manifest_{k}k.jsonl`` (contract 1: ``path``,
``speaker``, ``split``, ``sample_rate``, ``duration``, ``engine``, ``voice``, ``text``) and FLAC
files under ``folder/wav{k}k/{speaker}/``. Each speaker is one espeak-ng voice variant with its own
pitch and rate, so voices are distinguishable. Splits are speaker-disjoint.

Use it through a session-scoped fixture so the corpus is built once per pytest run::

    @pytest.fixture(scope="session")
    def tiny_corpus(tmp_path_factory):
        return cached_tiny_corpus(tmp_path_factory, n_speakers=8)
"""
from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

from frontend import load_audio, save_audio

VARIANTS = ["m1", "f1", "m2", "f2", "m3", "f3", "m4", "f4", "m5", "f5", "m6", "m7", "klatt", "klatt2"]
TEXTS = [
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It is easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
]
_CACHE: dict[tuple, Path] = {}


def default_split_sizes(n_speakers: int) -> tuple[int, int, int]:
    """(train, valid, test) speaker counts: a quarter each for valid and test (at least one)."""
    n_valid = n_test = max(1, n_speakers // 4)
    return n_speakers - n_valid - n_test, n_valid, n_test


def make_tiny_corpus(
    folder: str | Path, n_speakers: int = 8, n_utts: int = 3, sample_rate: int = 8000,
    split_sizes: tuple[int, int, int] | None = None,
) -> Path:
    """Synthesize ``n_speakers`` x ``n_utts`` short utterances; returns the manifest path.

    Args:
        folder: output folder (created).
        n_speakers: number of voices (at most ``len(VARIANTS) * 3``).
        n_utts: utterances per voice (at most ``len(TEXTS)``), about 1.5-2.5 s each.
        sample_rate: rate of the written FLAC files (espeak-ng's 22.05 kHz is resampled).
        split_sizes: speakers in (train, valid, test); default :func:`default_split_sizes`.
    """
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("tests need espeak-ng (apt-get install espeak-ng) to synthesize speech")
    if n_utts > len(TEXTS) or n_speakers > 3 * len(VARIANTS):
        raise ValueError("make_tiny_corpus: too many speakers or utterances requested")
    sizes = split_sizes or default_split_sizes(n_speakers)
    if sum(sizes) != n_speakers:
        raise ValueError(f"split_sizes {sizes} do not add up to {n_speakers} speakers")
    splits = ["train"] * sizes[0] + ["valid"] * sizes[1] + ["test"] * sizes[2]
    folder = Path(folder)
    k = f"{sample_rate // 1000}k"
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        for s in range(n_speakers):
            variant = VARIANTS[s % len(VARIANTS)]
            pitch = 25 + (s * 23) % 60
            rate = 150 + (s * 11) % 40
            speaker = f"espeak-{variant}-p{pitch}-s{rate}"
            for j in range(n_utts):
                text = TEXTS[(s + j) % len(TEXTS)]
                raw = Path(tmp) / f"{s}_{j}.wav"
                subprocess.run(["espeak-ng", "-v", f"en-us+{variant}", "-p", str(pitch), "-s", str(rate),
                                "-w", str(raw), text], check=True, capture_output=True)
                wav, _ = load_audio(raw, sample_rate=sample_rate)
                rel = Path(f"wav{k}") / speaker / f"{speaker}_{j:02d}.flac"
                save_audio(folder / rel, wav, sample_rate)
                lines.append({
                    "path": rel.as_posix(), "speaker": speaker, "split": splits[s],
                    "sample_rate": sample_rate, "duration": round(wav.shape[-1] / sample_rate, 4),
                    "engine": "espeak-ng", "voice": {"variant": variant, "pitch": pitch, "rate": rate},
                    "text": text,
                })
    manifest = folder / f"manifest_{k}.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    return manifest


def cached_tiny_corpus(tmp_path_factory, **kwargs) -> Path:
    """:func:`make_tiny_corpus` built once per pytest session for each set of arguments."""
    key = tuple(sorted(kwargs.items()))
    if key not in _CACHE:
        folder = tmp_path_factory.mktemp("tiny_corpus")
        _CACHE[key] = make_tiny_corpus(folder, **kwargs)
    return _CACHE[key]


_MIX_CACHE: dict[tuple, Path] = {}


def cached_mixtures(tmp_path_factory, speech: Path, **settings) -> Path:
    """``voxsep.mixtures.make_mixtures`` output for ``speech``, built once per session per
    ``settings`` (fields of ``voxsep.mixtures.MixConfig``); returns the output folder."""
    from voxsep.mixtures import MixConfig, make_mixtures

    key = (str(speech),) + tuple(sorted((k, repr(v)) for k, v in settings.items()))
    if key not in _MIX_CACHE:
        out = tmp_path_factory.mktemp("mixtures") / "out"
        make_mixtures(MixConfig(speech=str(speech), out=str(out), progress=False, **settings))
        _MIX_CACHE[key] = out
    return _MIX_CACHE[key]
