"""WaveNet generation speed: fast (fused, C kernel / torch) vs reference step loop vs naive.

Part ``speed``: samples per second for a 20-layer, 64-residual-channel mu-law WaveNet (dilations
1..512 x 2, kernel 2, gate 64, skip 64, receptive field 2047), unconditioned and with 80-band
mel conditioning, at batch 1 and 16, on ``--threads`` CPU threads (2 by default), for:

- ``kernel``: :class:`generation.fast.FastGenerator` with the C kernel (batch items on threads);
- ``fused-torch``: the same fused loop in plain PyTorch (what runs without a C compiler);
- ``reference``: :meth:`WaveNet.step` with module code and ring buffers (plain PyTorch).

Part ``cache``: cached vs naive (recompute ``forward`` over the receptive field for each sample)
speed as the receptive field grows (256 .. 3070 samples: one cycle of 1..128, 1..256, 1..512, then
2 and 3 cycles of 1..512; 64 channels, batch 1), as CPU seconds per sample on one thread, so the
ratios do not depend on machine load. ``naive`` is timed over a few samples only.

Rates are from wall-clock time, and also from process CPU time divided by the threads used
(``samples_per_s_from_cpu_time``), which stays meaningful on a shared, loaded machine. JSON goes
to ``--out``.

Usage::

    python -m bench.generation --threads 2 --out bench_results/generation.json
    voxsep bench generation --quick
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from frontend import atomic_output
from generation.fast import FastGenerator, generate_naive, generate_reference
from generation.kernel import load_kernel
from generation.wavenet import WaveNet, WaveNetConfig


def bench_model(layers_per_cycle: int = 10, n_cycles: int = 2, local_channels: int = 0) -> WaveNet:
    config = WaveNetConfig(layers_per_cycle=layers_per_cycle, n_cycles=n_cycles, kernel_size=2, causal=True,
                           residual_channels=64, gate_channels=64, skip_channels=64, output="mulaw",
                           local_channels=local_channels, upsample_factors=(4, 4, 4, 4) if local_channels else ())
    torch.manual_seed(0)
    return WaveNet(config).eval()


def _timed_both(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) for one call of ``fn``."""
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def speed_rows(threads: int, quick: bool) -> list[dict]:
    rows = []
    has_kernel = load_kernel() is not None
    for cond in ("none", "mel"):
        model = bench_model(local_channels=80 if cond == "mel" else 0)
        for batch in (1, 16):
            for method in ("kernel", "fused-torch", "reference"):
                if method == "kernel" and not has_kernel:
                    continue
                n = {"kernel": 16000, "fused-torch": 400, "reference": 200}[method]
                if quick:
                    n = max(50, n // 8)
                mel = torch.randn(batch, 80, n // 256 + 2) if cond == "mel" else None
                if method == "reference":
                    fn = lambda: generate_reference(model, n, mel, None, 1.0, batch)  # noqa: E731
                else:
                    gen = FastGenerator(model, use_kernel=(method == "kernel"), n_threads=threads)
                    gen.generate(8, mel, None, 1.0, batch)  # warm-up (builds/loads the kernel)
                    fn = lambda: gen.generate(n, mel, None, 1.0, batch)  # noqa: E731
                seconds, cpu = _timed_both(fn)
                rate = n * batch / seconds
                # CPU-time rate: what the same work reaches when the threads have their cores to
                # themselves (wall time inflates on a shared, loaded machine)
                cpu_rate = n * batch / (cpu / min(threads, batch if method == "kernel" else threads))
                rows.append({"part": "speed", "cond": cond, "batch": batch, "method": method, "samples": n,
                             "seconds": seconds, "cpu_seconds": cpu, "samples_per_s": rate,
                             "samples_per_s_from_cpu_time": cpu_rate, "per_item_samples_per_s": n / seconds,
                             "real_time_factor_16k": 16000 * batch / rate})
                print(f"speed  cond={cond:4s} batch={batch:2d} {method:11s} {rate:10.0f} samples/s wall "
                      f"({cpu_rate:8.0f} from CPU time; RTF@16k {16000 * batch / rate:7.3f})", flush=True)
    return rows


def cache_rows(quick: bool) -> list[dict]:
    """Per-sample CPU time of naive / cached loops, one thread (load-independent ratios)."""
    rows = []
    has_kernel = load_kernel() is not None
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    for layers, cycles in ((8, 1), (9, 1), (10, 1), (10, 2), (10, 3)):
        model = bench_model(layers, cycles)
        rf = model.receptive_field
        n_naive = 5 if quick else 20
        n_ref = 50 if quick else 200
        history = torch.rand(1, rf) * 0.2 - 0.1  # full windows from the first sample on
        naive = _timed_both(lambda: generate_naive(model, n_naive, 1.0, 1, seed=history))[1] / n_naive
        ref = _timed_both(lambda: generate_reference(model, n_ref, None, None, 1.0, 1))[1] / n_ref
        row = {"part": "cache", "receptive_field": rf, "layers": layers * cycles,
               "naive_s_per_sample": naive, "reference_s_per_sample": ref, "ratio_reference": naive / ref}
        line = (f"cache  rf={rf:5d} layers={layers * cycles:2d} naive {1 / naive:8.1f}/s  "
                f"cached(reference) {1 / ref:8.0f}/s  x{naive / ref:6.1f}")
        if has_kernel:
            gen = FastGenerator(model, use_kernel=True, n_threads=1)
            gen.generate(8)
            n_fast = 4000 if quick else 16000
            fast = _timed_both(lambda: gen.generate(n_fast))[1] / n_fast
            row.update(fast_s_per_sample=fast, ratio_fast=naive / fast)
            line += f"  cached(kernel) {1 / fast:8.0f}/s  x{naive / fast:7.0f}"
        rows.append(row)
        print(line, flush=True)
    torch.set_num_threads(threads)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="voxsep bench generation", description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch and the kernel)")
    parser.add_argument("--part", choices=["all", "speed", "cache"], default="all")
    parser.add_argument("--quick", action="store_true", help="fewer samples (a smoke run)")
    parser.add_argument("--out", default="bench_results/generation.json", help="JSON output file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    if args.part in ("all", "speed"):
        rows += speed_rows(args.threads, args.quick)
    if args.part in ("all", "cache"):
        rows += cache_rows(args.quick)
    result = {
        "benchmark": "generation", "threads": args.threads, "quick": args.quick,
        "kernel": load_kernel() is not None, "torch": str(torch.__version__),
        "machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "load_average_1min_at_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None, "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(out) as tmp:
        Path(tmp).write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
