"""Build the offline multi-voice corpus: plan, synthesize in parallel, resume, write manifests.

Layout of ``OUT`` (contract 1 of the project)::

    OUT/wav8k/<speaker>/<utt>.flac     OUT/manifest_8k.jsonl
    OUT/wav16k/<speaker>/<utt>.flac    OUT/manifest_16k.jsonl
    OUT/corpus.json                    summary (identities, utterances, hours per split, engines)
    OUT/.corpus_plan.json              what this folder is being built with (for resuming)

The plan (identities, splits, texts) is a pure function of the settings, so re-running the same
command after an interruption finds the same utterance ids, keeps every file that still loads,
regenerates missing or damaged ones and rewrites the manifests from the plan at the end.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import resource
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from frontend import AudioError, atomic_output, audio_info, load_audio, resample, save_audio
from frontend.errors import VoxsepError
from frontend.utterances import SPLIT_NAMES, assign_speaker_splits
from frontend.workers import WorkerPool
from voxsep.corpus.engines import SynthesisError, Synthesizer, check_engines, describe
from voxsep.corpus.sentences import generate_sentences, load_sentences
from voxsep.corpus.postprocess import peak_normalise, trim_silence
from voxsep.corpus.voices import ENGINES, FESTIVAL_HTS_VOICES, Identity, select_identities

SPLITS = ("train", "valid", "test")
HELD_OUT_FRACTION = 0.1          # of each engine's identities, for valid and for test
GRAMMAR_SENTENCES = 4000
PEAK = 0.9
MIN_SPEECH_S = 0.3
CHUNK = 8                        # utterances of one identity per worker task
PLAN_FILE = ".corpus_plan.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class PlannedUtterance:
    """One utterance to synthesize: id, speaker identity, split and text."""

    id: str
    identity: Identity
    split: str
    text: str


def rate_tag(rate: int) -> str:
    """``8000 -> "8k"``; used in ``wav8k/`` and ``manifest_8k.jsonl``."""
    return f"{rate // 1000}k" if rate % 1000 == 0 else str(rate)


def audio_relpath(rate: int, speaker: str, utt_id: str) -> str:
    return f"wav{rate_tag(rate)}/{speaker}/{utt_id}.flac"


def manifest_name(rate: int) -> str:
    return f"manifest_{rate_tag(rate)}.jsonl"


def assign_splits(identities: list[Identity]) -> dict[str, str]:
    """Speaker-disjoint split, about 80/10/10 inside each engine: the project's one split rule
    (:func:`frontend.utterances.assign_speaker_splits`, grouped by engine).

    An engine with at least 3 identities has at least one in every split, so each split holds
    every engine once there are 3 identities per engine; with 3 identities or more in all,
    valid and test are never empty.
    """
    engine_of = {i.id: i.engine for i in identities}
    split = {sid: SPLIT_NAMES[s] for sid, s in assign_speaker_splits(
        sorted(engine_of), fractions=(1 - 2 * HELD_OUT_FRACTION, HELD_OUT_FRACTION, HELD_OUT_FRACTION),
        groups=engine_of).items()}
    if len(identities) >= 3:
        for target in ("valid", "test"):
            if target not in split.values():
                counts = Counter(i.engine for i in identities if split[i.id] == "train")
                engine = max(ENGINES, key=lambda e: (counts[e], -ENGINES.index(e)))
                sid = max(i.id for i in identities if i.engine == engine and split[i.id] == "train")
                split[sid] = target
    return split


def plan_corpus(identities: list[Identity], sentences: list[str], utterances_per_identity: int,
                seed: int = 0) -> list[PlannedUtterance]:
    """Give each identity ``utterances_per_identity`` distinct sentences.

    Sentences are dealt from one shuffled deck so that the corpus uses them evenly; an
    identity never says the same sentence twice.
    """
    if utterances_per_identity > len(sentences):
        raise VoxsepError(f"only {len(sentences)} sentences for {utterances_per_identity} "
                          "utterances per identity (each identity needs distinct sentences)")
    rng = random.Random(f"voxsep-texts-{seed}")
    deck = list(range(len(sentences)))
    rng.shuffle(deck)
    split = assign_splits(identities)
    width = max(3, len(str(utterances_per_identity - 1)))
    plan, pos = [], 0
    for identity in identities:
        for j in range(utterances_per_identity):
            text = sentences[deck[(pos + j) % len(deck)]]
            plan.append(PlannedUtterance(f"{identity.id}_{j:0{width}d}", identity, split[identity.id], text))
        pos += utterances_per_identity
    return plan


def warped_rate(rate: int, warp: float) -> int:
    """The rate to declare for warped audio, rounded to 50 Hz so resampling kernels stay small."""
    return rate if warp == 1.0 else int(round(rate * warp / 50.0)) * 50


# ---------------------------------------------------------------- per-utterance work (workers)

_WORKER: dict[str, Synthesizer] = {}


def _open_synthesizer() -> None:
    """Worker initializer: each worker (or this process) builds its own synthesizer."""
    _WORKER["synth"] = Synthesizer()


def _close_synthesizer() -> None:
    """Worker finalizer: festival exits (and its CPU time is counted) before the build ends."""
    synth = _WORKER.pop("synth", None)
    if synth is not None:
        synth.close()


def _valid_frames(path: Path, rate: int) -> int | None:
    """Frames of a finished file, or None if it is missing, damaged, silent or at another rate."""
    try:
        info = audio_info(path)
        if info.sample_rate != rate or info.channels != 1:
            return None
        wav, _ = load_audio(path)
    except AudioError:
        return None
    if wav.numel() != info.frames or float(wav.abs().max()) == 0.0:
        return None
    return info.frames


def render(synth: Synthesizer, utt: PlannedUtterance, rates: tuple[int, ...]) -> dict[int, np.ndarray]:
    """Synthesize, trim silence, warp, resample to each rate and peak-normalise to :data:`PEAK`."""
    wav, rate = synth.synthesize(utt.identity, utt.text)
    if not np.isfinite(wav).all():
        raise SynthesisError(f"{describe(utt.identity, utt.text)}: produced NaN or Inf samples")
    speech = trim_silence(wav, rate)
    if len(speech) < MIN_SPEECH_S * rate:
        raise SynthesisError(f"{describe(utt.identity, utt.text)}: produced no usable speech "
                             f"({len(speech) / rate:.2f} s above the silence threshold)")
    source = torch.from_numpy(np.ascontiguousarray(speech, dtype=np.float32))
    declared = warped_rate(rate, utt.identity.warp)
    return {r: peak_normalise(resample(source, declared, r).numpy(), PEAK) for r in rates}


def _process_chunk(task: tuple[str, tuple[int, ...], list[PlannedUtterance]]):
    out_dir, rates, utts = task
    synth = _WORKER["synth"]
    results = []
    for utt in utts:
        paths = {r: Path(out_dir) / audio_relpath(r, utt.identity.id, utt.id) for r in rates}
        frames = {r: _valid_frames(p, r) if p.exists() else None for r, p in paths.items()}
        made = not all(frames.values())
        if made:
            for r, audio in render(synth, utt, rates).items():
                save_audio(paths[r], audio, r)
                frames[r] = len(audio)
        results.append((utt.id, frames, made))
    return results


# ---------------------------------------------------------------- driver

def _plan_record(plan: list[PlannedUtterance], rates: tuple[int, ...], settings: dict) -> dict:
    rows = [[u.id, u.identity.engine, list(map(list, u.identity.settings)), u.split, u.text] for u in plan]
    digest = hashlib.sha256(json.dumps([rows, list(rates)], sort_keys=True).encode()).hexdigest()
    return {"format_version": FORMAT_VERSION, "digest": digest, **settings}


def _check_plan(out: Path, record: dict) -> None:
    path = out / PLAN_FILE
    if path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = {}
        if old.get("digest") != record["digest"]:
            diff = [k for k in record if k != "digest" and old.get(k) != record[k]] or ["sentences"]
            raise VoxsepError(f"{out}: already holds a corpus built with other settings "
                              f"({', '.join(diff)}); use another --out or delete it")
    out.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


def _remove_stray_temp_files(out: Path, rates: tuple[int, ...]) -> int:
    """Delete temporary files (``.name.XXXX.part.ext``) an interrupted run left behind."""
    stray = [p for p in out.glob(".*.part*") if p.is_file()]
    for r in rates:
        folder = out / f"wav{rate_tag(r)}"
        if folder.is_dir():
            stray += [p for p in folder.rglob(".*.part*") if p.is_file()]
    for p in stray:
        p.unlink(missing_ok=True)
    return len(stray)


def _tasks(plan: list[PlannedUtterance]) -> list[list[PlannedUtterance]]:
    """Chunks of one identity; the slowest engines first so the pool ends evenly."""
    def cost(u: PlannedUtterance) -> int:
        if u.identity.engine == "festival":
            return 0 if u.identity.voice["voice"] in FESTIVAL_HTS_VOICES else 1
        return 2 if u.identity.engine == "flite" else 3

    by_speaker: dict[str, list[PlannedUtterance]] = {}
    for u in plan:
        by_speaker.setdefault(u.identity.id, []).append(u)
    chunks = [utts[i:i + CHUNK] for utts in by_speaker.values() for i in range(0, len(utts), CHUNK)]
    return sorted(chunks, key=lambda c: cost(c[0]))  # stable: keeps plan order inside a cost class


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _parse_rates(rates) -> tuple[int, ...]:
    out = tuple(int(r) for r in rates)
    if not out or any(r < 1000 or r > 96000 for r in out) or len(set(out)) != len(out):
        raise VoxsepError(f"--rates: expected distinct sample rates in 1000..96000 Hz, got {list(rates)}")
    return out


def build_corpus(
    out: str | os.PathLike,
    identities: int = 200,
    utterances_per_identity: int = 50,
    seed: int = 0,
    workers: int = 2,
    sentences_file: str | os.PathLike | None = None,
    rates: tuple[int, ...] = (8000, 16000),
    progress: bool = True,
) -> dict:
    """Build (or finish) the corpus in ``out`` and return the summary written to ``corpus.json``.

    Args:
        out: output folder (created).
        identities: number of voice identities (speakers), at least 3.
        utterances_per_identity: sentences spoken by each identity.
        seed: fixes the identities, splits and texts.
        workers: parallel processes (1 runs in this process).
        sentences_file: UTF-8 text, one sentence a line; ``None`` uses the built-in grammar.
        rates: output sample rates in Hz.
        progress: show a tqdm bar on stderr.

    Raises:
        VoxsepError: bad arguments or sentences file (nothing written), a folder built with other
            settings, or a TTS engine that is missing or fails (message names engine, voice, text).
    """
    rates = _parse_rates(rates)
    if utterances_per_identity < 1:
        raise VoxsepError(f"--utterances-per-identity must be at least 1, got {utterances_per_identity}")
    if workers < 1:
        raise VoxsepError(f"--workers must be at least 1, got {workers}")
    if sentences_file is not None:
        sentences = load_sentences(sentences_file)
        source = str(sentences_file)
    else:
        sentences = generate_sentences(max(GRAMMAR_SENTENCES, utterances_per_identity), seed)
        source = "grammar"
    if sentences_file is not None and utterances_per_identity > len(sentences):
        raise VoxsepError(f"{sentences_file}: only {len(sentences)} distinct sentences, fewer than "
                          f"--utterances-per-identity {utterances_per_identity}")
    try:
        chosen = select_identities(identities, seed)
    except ValueError as err:
        raise VoxsepError(f"--identities: {err}") from None
    check_engines(chosen)
    plan = plan_corpus(chosen, sentences, utterances_per_identity, seed)

    out = Path(out)
    settings = {"seed": seed, "identities": identities, "utterances_per_identity": utterances_per_identity,
                "rates": list(rates), "sentences": source}
    _check_plan(out, _plan_record(plan, rates, settings))
    _remove_stray_temp_files(out, rates)

    t0, cpu0 = time.perf_counter(), _cpu_seconds()
    frames: dict[str, dict[int, int]] = {}
    made = 0
    tasks = [(str(out), rates, chunk) for chunk in _tasks(plan)]
    def progress_bar() -> tqdm:
        return tqdm(total=len(plan), unit="utt", desc="corpus", disable=not progress, file=sys.stderr,
                    dynamic_ncols=True)

    # one worker runs in this process; chunks finish in any order (the manifests follow the plan);
    # leaving the pool waits for the workers to exit, so their festival CPU time is counted below
    with WorkerPool(workers if workers > 1 else 0, _open_synthesizer, (), _close_synthesizer, name="TTS",
                    hint="rerun the same command to resume (with fewer --workers)") as pool, progress_bar() as bar:
        for results in pool.map_unordered(_process_chunk, tasks):
            for uid, fr, new in results:
                frames[uid], made = fr, made + new
            bar.update(len(results))
    wall, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0

    summary = _write_outputs(out, plan, rates, frames, settings)
    summary["build"] = {"made": made, "reused": len(plan) - made, "workers": workers,
                        "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                        "cpu_s_per_made_utterance": round(cpu / made, 4) if made else None}
    with atomic_output(out / "corpus.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return summary


def _write_outputs(out: Path, plan: list[PlannedUtterance], rates: tuple[int, ...],
                   frames: dict[str, dict[int, int]], settings: dict) -> dict:
    """Write one manifest per rate (plan order, atomically) and return the summary dict."""
    for r in rates:
        with atomic_output(out / manifest_name(r)) as tmp, open(tmp, "w", encoding="utf-8") as f:
            for u in plan:
                row = {"id": u.id, "path": audio_relpath(r, u.identity.id, u.id), "speaker": u.identity.id,
                       "split": u.split, "sample_rate": r, "duration": round(frames[u.id][r] / r, 4),
                       "engine": u.identity.engine, "voice": u.identity.voice, "text": u.text}
                f.write(json.dumps(row, ensure_ascii=False) + "\n")

    ref = max(rates)
    seconds = Counter()
    splits = {s: {"identities": 0, "utterances": 0, "hours": 0.0, "engines": Counter()} for s in SPLITS}
    engines = {e: {"identities": 0, "utterances": 0, "hours": 0.0} for e in ENGINES}
    speakers: dict[str, dict] = {}
    for u in plan:
        dur = frames[u.id][ref] / ref
        seconds[u.split] += dur
        sp = speakers.setdefault(u.identity.id, {"id": u.identity.id, "engine": u.identity.engine,
                                                 "voice": u.identity.voice, "split": u.split,
                                                 "utterances": 0, "seconds": 0.0})
        sp["utterances"] += 1
        sp["seconds"] += dur
        splits[u.split]["utterances"] += 1
        engines[u.identity.engine]["utterances"] += 1
        engines[u.identity.engine]["hours"] += dur / 3600
    for sp in speakers.values():
        splits[sp["split"]]["identities"] += 1
        splits[sp["split"]]["engines"][sp["engine"]] += 1
        engines[sp["engine"]]["identities"] += 1
        sp["seconds"] = round(sp["seconds"], 2)
    for s in SPLITS:
        splits[s]["hours"] = round(seconds[s] / 3600, 4)
        splits[s]["engines"] = dict(sorted(splits[s]["engines"].items()))
    for e in engines.values():
        e["hours"] = round(e["hours"], 4)
    return {
        "format_version": FORMAT_VERSION,
        **settings,
        "identities": len(speakers),
        "utterances": len(plan),
        "hours": round(sum(seconds.values()) / 3600, 4),
        "splits": splits,
        "engines": engines,
        "manifests": {str(r): manifest_name(r) for r in rates},
        "speakers": list(speakers.values()),
    }
