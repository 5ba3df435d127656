"""Fixed noisy/clean pairs for evaluating denoisers: ``voxsep mix --enhancement CONFIG``.

The pairs are made by the denoiser's own training-data code (:class:`generation.data.NoisySpeechDataset`)
with the settings of an enhancement config's ``data`` section: the same speaker split (``fractions``),
noise recordings of the held-back files (``noise_files``, split by file), generated noise kinds,
SNR range and simulated rooms. Each pair is a whole utterance (cut to ``max_seconds``) of the
chosen split, so a validation set made from ``valid`` holds only speakers and noise recordings
that training never sees. Utterances are taken in a seeded order (every speaker early on) and
reused with fresh noise when more pairs than utterances are asked for; pair ``i`` depends only on
``(seed, i)`` and the settings.

Layout (what :func:`evaluation.enhancement.read_pairs` reads)::

    OUT/pairs_<split>.csv            id, noisy, clean, speaker, utterance, seconds, snr_db, noise, room
    OUT/<split>/noisy/<id>.wav       32-bit float WAV
    OUT/<split>/clean/<id>.wav       the training target (the dry speech, or its early part with a room)
    OUT/settings.json                the data settings, seed and rate the pairs were made with

Noisy and clean are scaled by one gain when the noisy peak would exceed 0.99 (the SNR and every
metric are unchanged). The folder appears only when every pair is written.
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from tqdm import tqdm

from frontend import VoxsepError, atomic_folder, atomic_output, load_audio, save_audio
from frontend.utterances import DEFAULT_FRACTIONS, NOISE_FRACTIONS, SPLIT_NAMES, noise_recordings, normalize_split
from frontend.utterances import read_utterances
from generation.data import NoisySpeechDataset, noise_settings

PEAK = 0.99
COLUMNS = ["id", "noisy", "clean", "speaker", "utterance", "seconds", "snr_db", "noise", "room"]


def write_noisy_pairs(data: Mapping[str, Any], sample_rate: int, out: str | os.PathLike,
                      n_pairs: Mapping[str, int], max_seconds: float | None = 8.0, seed: int = 0,
                      overwrite: bool = False, progress: bool = True) -> dict[str, int]:
    """Write noisy/clean pairs of each split (module docstring).

    Args:
        data: an enhancement config's ``data`` section (``manifest``, ``fractions``, ``snr_db``,
            ``noise_kinds``, ``noise_files``, ``noise_file_prob``, ``noise_file_fractions``, ``rooms``, ``babble``).
        sample_rate: Hz.
        out: output folder (must not exist or be empty, unless ``overwrite``).
        n_pairs: split -> number of pairs (``cv``/``valid``, ``tt``/``test``, ...).
        max_seconds: utterances are cut to this length (``None``: whole).
        seed: pair ``i`` of a split depends only on ``(seed, i)``.

    Returns:
        split -> pairs written.
    """
    if not data.get("manifest"):
        raise VoxsepError("the enhancement config names no speech (data.manifest; or give --speech)")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise VoxsepError(f"{out}: exists and is not empty (use --overwrite to replace it)")
    written: dict[str, int] = {}
    with atomic_folder(out) as staging:
        for split, n in n_pairs.items():
            split = normalize_split(split)
            if n > 0:
                written[split] = _write_split(data, sample_rate, staging, split, int(n), max_seconds, seed, progress)
        settings = {"data": dict(data), "sample_rate": sample_rate, "seed": seed, "max_seconds": max_seconds,
                    "pairs": written}
        (staging / "settings.json").write_text(json.dumps(settings, indent=2, default=str) + "\n")
    return written


def _write_split(data: Mapping[str, Any], sample_rate: int, root: Path, split: str, n: int,
                 max_seconds: float | None, seed: int, progress: bool) -> int:
    fractions = data.get("fractions") or DEFAULT_FRACTIONS
    utts = sorted(read_utterances(data["manifest"], split, fractions=fractions), key=lambda u: str(u.path))
    if not utts:
        raise VoxsepError(f"{data['manifest']}: no utterances in split {SPLIT_NAMES[split]} "
                          f"(fractions {list(fractions)})")
    noise_files = ()
    if data.get("noise_files"):
        noise_files = noise_recordings(data["noise_files"], split, data.get("noise_file_fractions") or NOISE_FRACTIONS)
    max_samples = int(max_seconds * sample_rate) if max_seconds else None
    maker = NoisySpeechDataset(utts, n_samples=max_samples or sample_rate, sample_rate=sample_rate, length=n,
                               fixed=True, seed=seed, noise_files=noise_files, **noise_settings(data))
    order = np.random.default_rng([seed, 17]).permutation(len(utts))
    rows = []
    for i in tqdm(range(n), desc=f"pairs {split}", unit="pair", disable=not progress):
        utt = utts[int(order[i % len(utts)])]
        clean = load_audio(utt.path, sample_rate=sample_rate)[0].numpy()
        if max_samples:
            clean = clean[:max_samples]
        pair = maker.make_pair(clean.astype(np.float32), utt.speaker, np.random.default_rng([seed, 104729, i]))
        peak = float(max(np.max(np.abs(pair.noisy)), np.max(np.abs(pair.clean)), 1e-12))
        gain = min(1.0, PEAK / peak)
        uid = f"{i:05d}_{Path(utt.uid).name}"
        for kind, wav in (("noisy", pair.noisy), ("clean", pair.clean)):
            save_audio(root / split / kind / f"{uid}.wav", torch.from_numpy(wav * gain).float(), sample_rate,
                       subtype="FLOAT")
        rows.append({"id": uid, "noisy": f"{split}/noisy/{uid}.wav", "clean": f"{split}/clean/{uid}.wav",
                     "speaker": utt.speaker, "utterance": utt.uid, "seconds": f"{clean.size / sample_rate:.3f}",
                     "snr_db": f"{pair.snr_db:.2f}", "noise": pair.noise, "room": pair.room})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    with atomic_output(root / f"pairs_{split}.csv") as tmp:
        tmp.write_text(buffer.getvalue(), encoding="utf-8")
    return len(rows)
