"""Metric speed: voxsep's bss_eval (fast_bss_eval, torch float64) vs mir_eval, and the whole runner.

Part 1 (``speed``) times ``evaluation.bss_eval`` and ``mir_eval.separation.bss_eval_sources``
(permutation search on, the default) on the same synthetic mixtures for each talker count and
duration, and checks that the values and permutations agree. Times are CPU seconds of this
process with one thread for BLAS and torch (``time.process_time``), so the numbers compare the
algorithms and stay meaningful on a busy machine. mir_eval is very slow on long inputs with many
sources, so fewer mixtures can be given for it (``--n-mir-eval``, or ``--mir-eval-budget`` CPU seconds per
cell); its per-mixture time is then the mean over those, and its total for ``--n`` mixtures is
extrapolated (marked ``*``). Values are compared on the mixtures both computed.

Part 2 (``runner``) runs :func:`evaluation.evaluate_systems` with the oracle IRM on
``--runner-mixtures`` mixtures (counts 2..5, 4 s, every metric, plots) and reports wall time and
CPU time (this process plus its metric workers).

Signals: each reference is low-pass filtered noise with a syllable-rate (4 Hz) on/off envelope;
estimates are mixtures of the references through short FIR filters plus noise, shuffled (SDR
roughly -5..30 dB, like real separators).

Usage::

    python -m bench.metrics --counts 2,3,4,5 --durations 4,30 --n 100 --n-mir-eval 4=100,30=3
    voxsep bench metrics --part runner --runner-mixtures 300
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.signal import lfilter  # noqa: E402

from frontend import atomic_output  # noqa: E402


def synthetic_sources(n_src: int, length: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_src, length)`` speech-like signals: coloured noise with a 4 Hz on/off envelope."""
    t = np.arange(length) / sample_rate
    out = []
    for _ in range(n_src):
        x = lfilter([1.0], [1.0, -rng.uniform(0.6, 0.95)], rng.standard_normal(length))
        envelope = (np.sin(2 * np.pi * rng.uniform(3, 5) * t + rng.uniform(0, 6.3)) > -0.3).astype(float)
        envelope = np.convolve(envelope, np.hanning(401) / np.hanning(401).sum(), mode="same")
        out.append(x * envelope * rng.uniform(0.5, 1.0))
    return np.stack(out)


def distorted(refs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n_src, length = refs.shape
    mixing = np.eye(n_src) + 0.2 * rng.standard_normal((n_src, n_src)) * (1 - np.eye(n_src))
    est = mixing @ refs
    est = np.stack([lfilter(np.r_[1.0, 0.1 * rng.standard_normal(7)], [1.0], e) for e in est])
    est = est + 0.05 * refs.std() * rng.standard_normal(est.shape)
    return est[rng.permutation(n_src)]


def _parse_map(text: str, keys: list[int]) -> dict[int, int]:
    """``"100"`` or ``"4=100,30=3"`` -> {duration: n}."""
    if "=" not in text:
        return {k: int(text) for k in keys}
    out = {k: 0 for k in keys}
    for part in text.split(","):
        k, v = part.split("=")
        out[int(float(k))] = int(v)
    return out


def bench_speed(counts, durations, n, n_mir, sample_rate, seed=0, progress=True, mir_budget=None):
    import mir_eval

    from evaluation.metrics import bss_eval

    rows = []
    for dur in durations:
        for c in counts:
            rng = np.random.default_rng([seed, c, dur])
            length = int(dur * sample_rate)
            m = min(n_mir[dur], n)
            ours_t, mir_t, diffs, perm_ok = [], [], [], True
            for i in range(n):
                refs = synthetic_sources(c, length, sample_rate, rng)
                est = distorted(refs, rng)
                t0 = time.process_time()
                ours = bss_eval(refs, est)
                ours_t.append(time.process_time() - t0)
                if i < m and not (mir_budget and len(mir_t) >= 3 and sum(mir_t) > mir_budget):
                    t0 = time.process_time()
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        sdr, sir, sar, perm = mir_eval.separation.bss_eval_sources(refs, est)
                    mir_t.append(time.process_time() - t0)
                    diffs.append([np.abs(ours["sdr"] - sdr).max(), np.abs(ours["sir"] - sir).max(),
                                  np.abs(ours["sar"] - sar).max()])
                    perm_ok &= bool(np.array_equal(ours["perm"], perm))
            d = np.max(diffs, axis=0) if diffs else [float("nan")] * 3
            m = len(mir_t)
            row = {"n_src": c, "seconds_audio": dur, "n_ours": n, "n_mir_eval": m,
                   "ours_s_per_mix": float(np.mean(ours_t)),
                   "mir_eval_s_per_mix": float(np.mean(mir_t)) if mir_t else float("nan"),
                   "ours_total_s": float(np.sum(ours_t)),
                   "mir_eval_total_s": float(np.mean(mir_t) * n) if mir_t else float("nan"),
                   "mir_eval_extrapolated": m < n,
                   "max_abs_diff_db": {"sdr": float(d[0]), "sir": float(d[1]), "sar": float(d[2])},
                   "permutation_equal": perm_ok}
            row["speedup"] = row["mir_eval_s_per_mix"] / row["ours_s_per_mix"]
            rows.append(row)
            if progress:
                print(format_speed_row(row), flush=True)
    return rows


SPEED_HEADER = ("| sources | audio | mixtures (ours / mir_eval) | ours s/mix | mir_eval s/mix | "
                "ours total s | mir_eval total s | speed-up | max abs diff SDR/SIR/SAR (dB) | same perm |\n"
                "|---:|---:|---:|---:|---:|---:|---:|---:|---|:---:|")


def format_speed_row(r) -> str:
    d = r["max_abs_diff_db"]
    star = "*" if r["mir_eval_extrapolated"] else ""
    return (f"| {r['n_src']} | {r['seconds_audio']:g} s | {r['n_ours']} / {r['n_mir_eval']} | "
            f"{r['ours_s_per_mix']:.3f} | {r['mir_eval_s_per_mix']:.3f} | {r['ours_total_s']:.1f} | "
            f"{r['mir_eval_total_s']:.1f}{star} | {r['speedup']:.1f}x | "
            f"{d['sdr']:.1e} / {d['sir']:.1e} / {d['sar']:.1e} | {'yes' if r['permutation_equal'] else 'NO'} |")


def bench_runner(n_mixtures: int, sample_rate: int, workers: int, seed: int = 0, progress=True) -> dict:
    from evaluation import OracleMaskSystem, evaluate_systems

    rng = np.random.default_rng(seed)
    length = 4 * sample_rate
    items = []
    for i in range(n_mixtures):
        c = 2 + i % 4
        refs = synthetic_sources(c, length, sample_rate, rng).astype(np.float32)
        refs *= 0.25 / np.abs(refs).max()
        items.append({"id": f"m{i:04d}", "mix": torch.from_numpy(refs.sum(0)), "sources": torch.from_numpy(refs),
                      "n_src": c, "sample_rate": sample_rate})
    import resource

    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        c0 = time.process_time()
        k0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        res = evaluate_systems(items, [OracleMaskSystem("irm")], out, workers=workers, progress=progress,
                               n_examples=3)
        wall = time.perf_counter() - t0
        k1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # worker processes, once they have exited
        cpu = time.process_time() - c0 + (k1.ru_utime + k1.ru_stime) - (k0.ru_utime + k0.ru_stime)
    return {"mixtures": n_mixtures, "seconds_audio_each": 4, "counts": "2-5 (equal shares)",
            "workers": workers, "metrics": res.summary["metrics"], "wall_s": wall, "cpu_s": cpu,
            "s_per_mixture": wall / n_mixtures, "cpu_s_per_mixture": cpu / n_mixtures, "plots": True}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="bench.metrics", description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=["all", "speed", "runner"], default="all")
    parser.add_argument("--counts", default="2,3,4,5")
    parser.add_argument("--durations", default="4,30", help="seconds of audio, comma list")
    parser.add_argument("--n", default="100", help="mixtures per cell for voxsep: N or DUR=N,...")
    parser.add_argument("--n-mir-eval", default="4=100,30=3", help="mixtures per cell for mir_eval: N or DUR=N,...")
    parser.add_argument("--mir-eval-budget", type=float, default=None, metavar="S",
                        help="stop timing mir_eval in a cell after S CPU seconds (at least 3 mixtures)")
    parser.add_argument("--sample-rate", type=int, default=8000)
    parser.add_argument("--runner-mixtures", type=int, default=300)
    parser.add_argument("--workers", type=int, default=1, help="runner metric workers")
    parser.add_argument("--json", default="bench_metrics.json", help="output JSON (default bench_metrics.json)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    counts = [int(c) for c in args.counts.split(",")]
    durations = [int(float(d)) for d in args.durations.split(",")]
    result = {"machine": {"platform": platform.platform(), "processor": platform.processor(),
                          "cpus": os.cpu_count(), "torch": torch.__version__, "threads": 1},
              "sample_rate": args.sample_rate}
    if args.part in ("all", "speed"):
        n_ours = _parse_map(args.n, durations)
        n_mir = _parse_map(args.n_mir_eval, durations)
        print(SPEED_HEADER, flush=True)
        rows = []
        for dur in durations:
            rows += bench_speed(counts, [dur], n_ours[dur], n_mir, args.sample_rate,
                                mir_budget=args.mir_eval_budget)
        result["speed"] = rows
    if args.part in ("all", "runner") and args.runner_mixtures > 0:
        r = bench_runner(args.runner_mixtures, args.sample_rate, args.workers)
        result["runner"] = r
        print(f"\nrunner: {r['mixtures']} mixtures x 4 s (2-5 talkers), oracle IRM, metrics "
              f"{r['metrics']}, {r['workers']} worker(s): {r['wall_s']:.1f} s wall "
              f"({r['s_per_mixture']:.2f} s per mixture), {r['cpu_s']:.1f} CPU s "
              f"({r['cpu_s_per_mixture']:.2f} per mixture)")
    with atomic_output(args.json) as tmp:
        Path(tmp).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
