"""The mixture dataset writer behind ``voxsep mix``: wsj0-mix / LibriMix style mixtures on disk.

:func:`make_mixtures` finds the speech (:mod:`frontend.utterances`: the one reader and split rule),
checks every input file, plans every mixture up front and renders them with the mixing recipe of
:mod:`separation.mixing` (the one dynamic mixing uses), in worker processes
(:class:`frontend.workers.WorkerPool`) or in this process. It writes:

* the wsj0-mix tree ``{C}speakers/wav{8k,16k}/{min,max}/{tr,cv,tt}/{mix,s1..sC,noise}/NAME.wav``;
* LibriMix CSVs ``metadata/mixture_{split}_{C}spk.csv``;
* one jsonl manifest per split ``manifest_{split}.jsonl`` (contract 2);
* ``mix_config.json`` (the settings and the counts).

The folder appears whole or not at all (:func:`frontend.atomic_folder`). This is the ``voxsep
mix`` command's shell: its errors name the command's flags.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile as sf

from frontend import VoxsepError, atomic_folder, atomic_output, audio_info, find_audio_files, load_audio, save_audio
from frontend.utterances import (DEFAULT_FRACTIONS, SPLITS, Utterance, keep_corpora, read_utterances,
                                 utterance_root)
from frontend.workers import WorkerPool
from separation.mixing import (
    FORMATS, GAIN_RULES, MODES, NOISE_COLORS, AudioCache, MixturePlan, plan_mixtures, quantize, rate_folder,
    render_mixture,
)


def find_speech(
    speech: str | os.PathLike, sample_rate: int, speaker_rule: str | None = None,
    splits: Sequence[str] = SPLITS, fractions: Sequence[float] = DEFAULT_FRACTIONS,
    corpora: Sequence[str] | None = None,
) -> tuple[list[Utterance], Path]:
    """Utterances of a table, a manifest, a corpus folder or a folder of audio files (the split
    rule fills in missing splits), and the folder their ids are relative to. ``corpora`` keeps the
    utterances of these corpora (a table's ``corpus`` column) after the split rule has run over the
    whole source, so the held-back speakers are the same with or without it."""
    utts = read_utterances(speech, sample_rate=sample_rate, speaker_rule=speaker_rule, splits=splits,
                           fractions=fractions)
    if corpora is not None:
        utts = keep_corpora(utts, corpora, speech)
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
    corpora: list[str] | None = None  # keep only these corpora of the speech sources


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
    _WORKER["cfg"] = cfg
    _WORKER["staging"] = Path(staging)
    _WORKER["cache"] = AudioCache(cfg.sample_rate)


def _close_worker() -> None:
    _WORKER.clear()


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
    failure leaves no partial output (:func:`frontend.atomic_folder`).

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
        utts, root = find_speech(speech, cfg.sample_rate, cfg.speaker_rule, SPLITS, cfg.split_fractions,
                                 cfg.corpora)
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

    with atomic_folder(out) as staging:
        results = []
        bar = tqdm(total=len(plans), desc="mixing", unit="mix", disable=None if cfg.progress else True,
                   file=sys.stderr)
        # one worker runs in this process; ordered results keep the manifests in plan order
        pool = WorkerPool(cfg.workers if cfg.workers > 1 else 0, _init_worker, (cfg, str(staging)), _close_worker,
                          name="mixing", hint="rerun with --workers 1")
        with bar, pool:
            for status, payload in pool.map(_render_and_write, plans, chunksize=4):
                if status == "error":
                    raise VoxsepError(payload)
                results.append(payload)
                bar.update(1)
        return _write_metadata(results, cfg, staging, speech_root)


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
