"""Corpus builder speed: per-engine cost, and a full ``voxsep corpus`` build.

Part 1 (``engines``) synthesizes ``--probe`` sentences with each engine family (espeak-ng, flite,
festival diphone, festival HTS) in this process and reports, per utterance, the wall time and
the CPU time (this process, the engine processes it waited for (``getrusage``) and the running
festival process (``/proc``)), split into
synthesis and post-processing (trim, warp/resample to 8 and 16 kHz, peak-normalise, two FLAC
writes). CPU time stays meaningful on a busy machine; wall time does not.

Part 2 (``build``) runs :func:`voxsep.corpus.build_corpus` into ``--out`` and reports wall time,
CPU time (all workers and engines), utterances per second and hours of audio. A re-run on a
finished folder measures the resume check (every file reloaded, nothing synthesized).

Usage::

    python -m bench.corpus --part build --out /work/data/corpus --identities 200 \
        --utterances-per-identity 50 --workers 2 --json bench_corpus.json
    python -m bench.corpus --part engines --probe 20
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import torch

from frontend import atomic_output, save_audio


def _cpu(synth=None) -> float:
    """CPU seconds of this process, its finished children and the running festival process."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    live = synth.festival_cpu_seconds() if synth is not None else 0.0
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime + live


def bench_engines(probe: int, seed: int = 0) -> list[dict]:
    """Per-utterance wall and CPU seconds of each engine family and of the post-processing."""
    from voxsep.corpus import PlannedUtterance, Synthesizer, generate_sentences, render, select_identities
    from voxsep.corpus.builder import audio_relpath

    torch.set_num_threads(1)
    identities = select_identities(200, seed)
    sentences = generate_sentences(4000, seed)
    families: dict[str, list] = {}
    for ident in identities:
        name = ident.engine if ident.engine != "festival" else (
            "festival-hts" if "hts" in ident.voice["voice"] else "festival-diphone")
        families.setdefault(name, []).append(ident)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        synth = Synthesizer(Path(tmp) / "work")
        try:
            for name, group in families.items():
                # warm-up: festival start-up and voice loading happen once per worker in a build
                synth.synthesize(group[0], sentences[0])
                syn_wall = syn_cpu = post_wall = post_cpu = audio_s = 0.0
                for k in range(probe):
                    ident, text = group[k % len(group)], sentences[k + 1]
                    t0, c0 = time.perf_counter(), _cpu(synth)
                    synth.synthesize(ident, text)
                    t1, c1 = time.perf_counter(), _cpu(synth)
                    # render() synthesizes again; its post-processing is the remainder
                    out = render(synth, PlannedUtterance("u", ident, "train", text), (8000, 16000))
                    for rate, wav in out.items():
                        save_audio(Path(tmp) / audio_relpath(rate, ident.id, f"u{k}"), wav, rate)
                    t2, c2 = time.perf_counter(), _cpu(synth)
                    syn_wall, syn_cpu = syn_wall + (t1 - t0), syn_cpu + (c1 - c0)
                    post_wall += (t2 - t1) - (t1 - t0)
                    post_cpu += (c2 - c1) - (c1 - c0)
                    audio_s += len(out[16000]) / 16000
                rows.append({"engine": name, "utterances": probe,
                             "synth_wall_s": syn_wall / probe, "synth_cpu_s": syn_cpu / probe,
                             "post_wall_s": max(post_wall, 0.0) / probe, "post_cpu_s": max(post_cpu, 0.0) / probe,
                             "audio_s": audio_s / probe})
        finally:
            synth.close()
    return rows


def bench_build(out: str, identities: int, per_identity: int, workers: int, seed: int) -> dict:
    from voxsep.corpus import build_corpus

    t0 = time.perf_counter()
    summary = build_corpus(out, identities=identities, utterances_per_identity=per_identity,
                           seed=seed, workers=workers, progress=True)
    wall = time.perf_counter() - t0
    b = summary["build"]
    return {"out": out, "identities": summary["identities"], "utterances": summary["utterances"],
            "hours": summary["hours"], "split_hours": {k: v["hours"] for k, v in summary["splits"].items()},
            "engines": {k: v["identities"] for k, v in summary["engines"].items()},
            "workers": workers, "made": b["made"], "reused": b["reused"], "wall_s": round(wall, 1),
            "build_wall_s": b["wall_s"], "cpu_s": b["cpu_s"],
            "cpu_s_per_utterance": round(b["cpu_s"] / summary["utterances"], 4),
            "utterances_per_s": round(summary["utterances"] / wall, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.corpus", description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("engines", "build", "all"), default="all")
    parser.add_argument("--probe", type=int, default=10, help="sentences per engine family (part engines)")
    parser.add_argument("--out", default=None, help="corpus folder (part build; default: a temporary one)")
    parser.add_argument("--identities", type=int, default=200)
    parser.add_argument("--utterances-per-identity", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default="bench_corpus.json", help="where to write the results")
    args = parser.parse_args(argv)

    result: dict = {"host": {"cpus": os.cpu_count(), "machine": platform.machine(),
                             "load_avg_1m_at_start": os.getloadavg()[0]}}
    if args.part in ("engines", "all"):
        rows = bench_engines(args.probe, args.seed)
        result["engines"] = rows
        print(f"{'engine':18s} {'synth wall':>10s} {'synth CPU':>10s} {'post wall':>10s} {'post CPU':>10s} {'audio':>7s}")
        for r in rows:
            print(f"{r['engine']:18s} {r['synth_wall_s']:9.3f}s {r['synth_cpu_s']:9.3f}s "
                  f"{r['post_wall_s']:9.3f}s {r['post_cpu_s']:9.3f}s {r['audio_s']:6.2f}s")
    if args.part in ("build", "all"):
        with tempfile.TemporaryDirectory() as tmp:
            out = args.out or str(Path(tmp) / "corpus")
            b = bench_build(out, args.identities, args.utterances_per_identity, args.workers, args.seed)
        result["build"] = b
        print(f"{'identities':>10s} {'utts':>6s} {'hours':>6s} {'workers':>7s} {'made':>6s} {'wall':>8s} "
              f"{'CPU':>8s} {'CPU/utt':>8s} {'utt/s':>6s}")
        print(f"{b['identities']:10d} {b['utterances']:6d} {b['hours']:6.2f} {b['workers']:7d} {b['made']:6d} "
              f"{b['wall_s']:7.1f}s {b['cpu_s']:7.1f}s {b['cpu_s_per_utterance']:7.3f}s {b['utterances_per_s']:6.2f}")
    result["host"]["load_avg_1m_at_end"] = os.getloadavg()[0]
    with atomic_output(args.json) as tmp_json:
        Path(tmp_json).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
