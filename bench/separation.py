"""Separation speed and memory: real-time factors, long files, training throughput.

Part ``rtf``: real-time factor (processing seconds / audio seconds) of ``separate`` on
``--seconds`` of 8 kHz audio with ``--threads`` torch threads, for the real-speech separator
(``ours_real``: STFT + BLSTM trunk, recipes/real_separation), the MulCat separator's CPU config
(count head + the chosen head) and paper config, and asteroid's DPRNNTasNet and ConvTasNet
(asteroid defaults, 5 outputs; their ``forward``). All models run in this one process, interleaved
round by round (``--repeats`` rounds after a warm-up), so a busy machine slows them alike; the
table gives the median wall-clock RTF and the median CPU-time RTF (process CPU seconds, all
threads, per audio second).

Part ``long``: ``voxsep separate``'s long-file path (:meth:`separation.inference.Separator.
separate_file`: counting pass + separation pass, 8 s windows, 1 s overlap) on synthetic files of
``--long-minutes`` minutes, each in a fresh subprocess that writes its input block by block,
reporting wall time, RTF, the RSS just before separating (model and libraries loaded) and the
subprocess's peak RSS (``ru_maxrss``); their difference is what separating the file costs.

Part ``train``: training samples (4 s mixtures of 1-5 talkers) per second and CPU-seconds per
step (forward on the heads present + PIT/count loss + backward + Adam), for the MulCat CPU config,
the real-speech separator (``ours_real``) and the paper config on request (``--train-models
ours_cpu,ours_real,ours_paper``: the paper config needs about 17 GB of RAM at batch 4 x 4 s on the
CPU, so lower ``--train-batch`` on small machines), in each of ``--train-precision`` (``32``,
``bf16-mixed``: Lightning's CPU autocast). Whether bfloat16 autocast pays depends on the CPU and the
batch: measure it on the machine that trains (``recipes/real_separation/README.md`` has a case
where it halves the speed).

Part ``budget``: quality per CPU-minute (:mod:`bench.budget`): every candidate trunk trained with
the same CPU budget on the same real-speech mixtures, evaluated on a fixed validation set every few
CPU-minutes; a table and a plot of validation SI-SNRi against CPU-minutes.

Usage::

    python -m bench.separation                        # everything (the 60 min file takes a while)
    voxsep bench separation --parts rtf,train --threads 2
    voxsep bench separation --parts train --train-models ours_real --train-batch 2 \
        --train-precision 32,bf16-mixed --threads 1
    python -m bench.separation --parts long --long-minutes 1,10
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from bench.budget import CANDIDATES, DEFAULT_CANDIDATES, run_budget
from bench.budget import plot as budget_plot
from bench.budget import table as budget_table
from frontend import atomic_output

SR = 8000
PARTS = ("rtf", "long", "train", "budget")
#: parts run when --parts is not given (the budget study takes hours and needs speech data)
DEFAULT_PARTS = ("rtf", "long", "train")


def speech_like(n: int, rng: np.random.Generator, n_talkers: int = 2) -> np.ndarray:
    """Harmonic "voices" (random f0 with vibrato) with syllable-rate envelopes, summed."""
    t = np.arange(n) / SR
    out = np.zeros(n)
    for _ in range(n_talkers):
        f0 = rng.uniform(90, 280) * (1 + 0.05 * np.sin(2 * np.pi * rng.uniform(1, 4) * t))
        phase = 2 * np.pi * np.cumsum(f0) / SR
        voice = sum(0.6 ** h * np.sin(h * phase) for h in range(1, 6))
        env = (np.sin(2 * np.pi * rng.uniform(3, 5) * t + rng.uniform(0, 6.3)) > -0.3).astype(float)
        out += voice * env
    return (0.3 * out / max(1e-9, np.abs(out).max())).astype(np.float32)


def build(name: str):
    """The benchmarked models (untrained: speed does not depend on the weights)."""
    from separation.baselines import ConvTasNetBaseline, DPRNNBaseline
    from separation.model import CPU_CONFIG, PAPER_CONFIG, MulCatSeparator

    if name == "ours_real":
        # the real-speech separator of recipes/real_separation (STFT + BLSTM trunk + count head);
        # the bundled model adds a CRNN counter (see its card)
        import yaml

        from separation.model import MultiHeadSeparator

        conf = Path(__file__).resolve().parents[1] / "recipes" / "real_separation" / "conf.yaml"
        return MultiHeadSeparator(yaml.safe_load(conf.read_text())["model"]["config"])
    if name == "ours_cpu":
        return MulCatSeparator(dict(CPU_CONFIG, max_speakers=5))
    if name == "ours_paper":
        return MulCatSeparator(dict(PAPER_CONFIG, max_speakers=5))
    if name == "asteroid_dprnn":
        return DPRNNBaseline(dict(max_speakers=5))
    if name == "asteroid_convtasnet":
        return ConvTasNetBaseline(dict(max_speakers=5))
    raise ValueError(name)


RTF_MODELS = ("ours_real", "ours_cpu", "ours_paper", "asteroid_dprnn", "asteroid_convtasnet")


def bench_rtf(seconds: float, repeats: int, models=RTF_MODELS) -> list[dict]:
    rng = np.random.default_rng(0)
    wav = torch.from_numpy(speech_like(int(seconds * SR), rng))
    built = {name: build(name).eval() for name in models}

    def run(name):
        model = built[name]
        with torch.inference_mode():
            if name.startswith("asteroid"):
                model.network(wav[None])  # the asteroid model as shipped: 5 outputs
            else:
                model.separate(wav)  # trunk once, count head, decode the chosen head

    wall = {n: [] for n in models}
    cpu = {n: [] for n in models}
    for name in models:
        run(name)  # warm-up
    for _ in range(repeats):
        for name in models:
            w0, c0 = time.perf_counter(), time.process_time()
            run(name)
            wall[name].append(time.perf_counter() - w0)
            cpu[name].append(time.process_time() - c0)
    rows = []
    for name in models:
        rows.append({
            "model": name, "params_M": round(sum(p.numel() for p in built[name].parameters()) / 1e6, 3),
            "rtf_wall_median": round(statistics.median(wall[name]) / seconds, 4),
            "rtf_wall_min": round(min(wall[name]) / seconds, 4),
            "rtf_cpu_median": round(statistics.median(cpu[name]) / seconds, 4),
        })
    return rows


TRAIN_PRECISIONS = ("32", "bf16-mixed")
TRAIN_MODELS = ("ours_cpu", "ours_real", "ours_paper")


def check_train_options(models: Sequence[str], precisions: Sequence[str]) -> None:
    """Raise ``ValueError`` naming what the training part does not know."""
    for kind, given, known in (("training model", models, TRAIN_MODELS), ("precision", precisions, TRAIN_PRECISIONS)):
        bad = set(given) - set(known)
        if bad:
            raise ValueError(f"unknown {kind}(s) {sorted(bad)}; choose from {', '.join(known)}")


def bench_train(steps: int, models: list[str], batch_size: int = 4, segment: float = 4.0,
                precisions: Sequence[str] = ("32",)) -> list[dict]:
    """One row per model and precision: median wall and CPU seconds of a training step (after one
    warm-up step) on the same batches; ``bf16-mixed`` runs forward and loss under CPU autocast as
    Lightning does, with float32 weights and optimizer state."""
    from separation.losses import separation_loss

    check_train_options(models, precisions)
    rng = np.random.default_rng(1)
    length = int(segment * SR)
    batches = []
    for _ in range(steps + 1):
        n_src = torch.from_numpy(rng.integers(1, 6, batch_size))
        sources = torch.zeros(batch_size, 5, length)
        for b, k in enumerate(n_src.tolist()):
            sources[b, :k] = torch.from_numpy(np.stack([speech_like(length, rng, 1) for _ in range(k)]))
        batches.append((n_src, sources))
    rows = []
    for name in models:
        for precision in precisions:
            torch.manual_seed(0)
            model = build(name).train()
            optimizer = torch.optim.Adam(model.parameters(), lr=5e-4)
            wall, cpu = [], []
            for step, (n_src, sources) in enumerate(batches):
                mix = sources.sum(1)
                w0, c0 = time.perf_counter(), time.process_time()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
                    out = model(mix, heads=sorted(set(n_src.tolist())))
                    loss, _ = separation_loss(out, sources, n_src, mix)
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
                optimizer.step()
                if step:  # the first step warms up
                    wall.append(time.perf_counter() - w0)
                    cpu.append(time.process_time() - c0)
            # the step time is kept to the microsecond: a short step rounded to milliseconds would make
            # samples_per_s disagree with it by several per cent on a fast machine
            per_step = round(statistics.median(wall), 6)
            rows.append({"model": name, "precision": precision, "batch": batch_size, "segment_s": segment,
                         "step_s_median": per_step, "step_cpu_s_median": round(statistics.median(cpu), 6),
                         "samples_per_s": round(batch_size / per_step, 3),
                         "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)})
            del model, optimizer
    return rows


def _current_rss_mb() -> float:
    """Resident set size now (Linux ``/proc/self/status``), in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _long_worker(minutes: float, threads: int, window: float) -> dict:
    """Runs in a subprocess: write a synthetic file block by block, then separate it."""
    import soundfile as sf

    from separation.inference import Separator

    torch.set_num_threads(threads)
    rng = np.random.default_rng(2)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "long.wav"
        with sf.SoundFile(str(path), "w", samplerate=SR, channels=1, subtype="PCM_16") as f:
            remaining = int(minutes * 60 * SR)
            while remaining:
                n = min(remaining, 60 * SR)
                f.write(speech_like(n, rng, int(rng.integers(1, 4))))
                remaining -= n
        from voxsep.registry import load_model  # the model `voxsep separate` uses by default

        model, ckpt = load_model("default", "separation")
        separator = Separator(model, int(ckpt["sample_rate"]), window=window, overlap=1.0, model_name="default")
        rss_before = _current_rss_mb()
        start = time.perf_counter()
        summary = separator.separate_file(path, Path(tmp) / "out")
        wall = time.perf_counter() - start
    return {"minutes": minutes, "wall_s": round(wall, 2), "rtf": round(wall / (minutes * 60), 4),
            "count": summary["count"], "n_windows": summary["n_windows"],
            "rss_before_mb": round(rss_before, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def bench_long(minutes_list: list[float], threads: int, window: float) -> list[dict]:
    rows = []
    for minutes in minutes_list:
        proc = subprocess.run([sys.executable, "-m", "bench.separation", "--long-worker", str(minutes),
                               "--threads", str(threads), "--window", str(window)],
                              capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"long-file worker ({minutes} min) failed:\n{proc.stderr[-2000:]}")
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"  long file {minutes} min: {rows[-1]}", file=sys.stderr, flush=True)
    return rows


def _table(rows: list[dict]) -> str:
    if not rows:
        return ""
    keys = list(rows[0])
    widths = {k: max(len(k), *(len(str(r[k])) for r in rows)) for k in keys}
    lines = ["  ".join(k.ljust(widths[k]) for k in keys)]
    lines += ["  ".join(str(r[k]).ljust(widths[k]) for k in keys) for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="voxsep bench separation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default=",".join(DEFAULT_PARTS),
                        help=f"comma list of {', '.join(PARTS)} (default {','.join(DEFAULT_PARTS)})")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--seconds", type=float, default=10.0, help="audio length for the RTF (default 10)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds for the RTF (default 5)")
    parser.add_argument("--long-minutes", default="1,10,60", help="long-file lengths in minutes (default 1,10,60)")
    parser.add_argument("--window", type=float, default=8.0, help="long-file window in seconds (default 8)")
    parser.add_argument("--long-threads", type=int, default=None, help="torch threads for long files (default --threads)")
    parser.add_argument("--train-steps", type=int, default=3, help="timed training steps per model (default 3)")
    parser.add_argument("--train-models", default="ours_cpu",
                        help="models for the training part: ours_cpu, ours_real, ours_paper (the paper config "
                             "needs about 17 GB of RAM at batch 4 x 4 s; default ours_cpu)")
    parser.add_argument("--train-batch", type=int, default=4, help="training batch size (default 4)")
    parser.add_argument("--train-segment", type=float, default=4.0, help="training crop in seconds (default 4)")
    parser.add_argument("--train-precision", default="32",
                        help=f"comma list of {', '.join(TRAIN_PRECISIONS)} for the training part (default 32)")
    parser.add_argument("--budget-speech", default=None, metavar="TABLE|DIR",
                        help="budget part: single-talker speech (e.g. DATA/speech/manifest.csv)")
    parser.add_argument("--budget-valid", default=None, metavar="MANIFEST",
                        help="budget part: fixed validation mixtures (manifest jsonl of voxsep mix)")
    parser.add_argument("--budget-minutes", type=float, default=12.0, help="budget part: CPU-minutes each (default 12)")
    parser.add_argument("--budget-eval-every", type=float, default=3.0,
                        help="budget part: CPU-minutes between evaluations (default 3)")
    parser.add_argument("--budget-candidates", default=",".join(DEFAULT_CANDIDATES),
                        help=f"budget part: candidates (default {','.join(DEFAULT_CANDIDATES)}; "
                             f"known: {', '.join(CANDIDATES)})")
    parser.add_argument("--budget-jobs", type=int, default=1, help="budget part: candidates at once (default 1)")
    parser.add_argument("--budget-plot", default="bench_results/budget.png", help="budget part: plot")
    parser.add_argument("--out", default="bench_results/separation.json", help="JSON output")
    parser.add_argument("--long-worker", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.long_worker is not None:
        print(json.dumps(_long_worker(args.long_worker, args.threads, args.window)))
        return 0
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown part(s) {sorted(unknown)}; choose from {', '.join(PARTS)}")
    result = {"machine": {"python": platform.python_version(), "torch": torch.__version__,
                          "threads": args.threads, "cpus": os.cpu_count(),
                          "load_avg_1m": round(os.getloadavg()[0], 2)}}
    if "rtf" in parts:
        rows = bench_rtf(args.seconds, args.repeats)
        result["rtf"] = {"seconds": args.seconds, "sample_rate": SR, "rows": rows}
        print(f"\nReal-time factor, {args.seconds:g} s at {SR} Hz, {args.threads} threads "
              f"(median of {args.repeats} interleaved rounds)\n" + _table(rows), flush=True)
    if "train" in parts:
        train_models = [m.strip() for m in args.train_models.split(",") if m.strip()]
        precisions = [p.strip() for p in args.train_precision.split(",") if p.strip()]
        try:
            check_train_options(train_models, precisions)
        except ValueError as err:
            parser.error(str(err))
        rows = bench_train(args.train_steps, train_models, batch_size=args.train_batch,
                           segment=args.train_segment, precisions=precisions)
        result["train"] = rows
        print(f"\nTraining throughput ({args.train_segment:g} s mixtures of 1-5 talkers, batch {args.train_batch}, "
              f"{args.threads} threads)\n" + _table(rows), flush=True)
    if "budget" in parts:
        if not (args.budget_speech and args.budget_valid):
            parser.error("the budget part needs --budget-speech and --budget-valid")
        names = [c.strip() for c in args.budget_candidates.split(",") if c.strip()]
        bad = set(names) - set(CANDIDATES)
        if bad:
            parser.error(f"unknown budget candidate(s) {sorted(bad)}; known: {', '.join(CANDIDATES)}")
        rows = run_budget(names, args.budget_speech, args.budget_valid, args.budget_minutes,
                          args.budget_eval_every, jobs=args.budget_jobs)
        result["budget"] = {"minutes": args.budget_minutes, "eval_every": args.budget_eval_every,
                            "candidates": {n: CANDIDATES[n] for n in names}, "rows": rows}
        Path(args.budget_plot).parent.mkdir(parents=True, exist_ok=True)
        budget_plot(rows, args.budget_plot)
        print(f"\nQuality per CPU-minute ({args.budget_minutes:g} CPU-minutes each, 1 thread)\n"
              + budget_table(rows) + f"\n\nplot: {args.budget_plot}", flush=True)
    if "long" in parts:
        minutes = [float(m) for m in args.long_minutes.split(",") if m.strip()]
        long_threads = args.long_threads or args.threads
        rows = bench_long(minutes, long_threads, args.window)
        result["long"] = {"window_s": args.window, "overlap_s": 1.0, "threads": long_threads, "rows": rows}
        print(f"\nLong files (count pass + separation pass, {args.window:g} s windows, {long_threads} threads), "
              f"the bundled default model\n"
              + _table(rows), flush=True)
    result["machine"]["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    out = Path(args.out)
    with atomic_output(out) as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
