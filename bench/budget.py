"""Separation quality per CPU-minute: every candidate trunk trained with the same CPU budget.

Each candidate (an encoder + trunk of :class:`separation.model.MultiHeadSeparator`, the same heads and
count head) trains in its own subprocess with one torch thread, on the same dynamic mixtures (same
speech, seed, counts, crop length, batch, optimizer), until its process has used ``budget``
CPU-minutes of training. Every ``eval_every`` CPU-minutes it is evaluated on a fixed validation
set of mixtures (the evaluation's CPU time is not charged to the budget): SI-SNRi with the true
count on the 2-talker mixtures and on all mixtures of 2+ talkers, and count accuracy.

The result is a JSON file, a Markdown table (the last point of each candidate) and one plot of
validation SI-SNRi against training CPU-minutes, one line per candidate.

Usage (real speech as in ``recipes/real_separation``)::

    python -m bench.separation --parts budget --budget-speech DATA/speech/manifest.csv \\
        --budget-valid DATA/real_separation/mixtures/manifest_cv.jsonl --budget-minutes 12
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

#: name -> model config (max_speakers and sample_rate are added); CPU-sized, 1-6 M parameters
CANDIDATES: dict[str, dict] = {
    "mulcat_conv": {"encoder": {"type": "conv", "n_filters": 64, "kernel_size": 16, "stride": 8},
                    "trunk": {"type": "mulcat", "hidden_size": 64, "chunk_size": 100, "n_blocks": 4}},
    "dprnn_conv": {"encoder": {"type": "conv", "n_filters": 64, "kernel_size": 16, "stride": 8},
                   "trunk": {"type": "dprnn", "feature_size": 64, "hidden_size": 64, "chunk_size": 100,
                             "n_blocks": 4}},
    "sudormrf_conv": {"encoder": {"type": "conv", "n_filters": 128, "kernel_size": 16, "stride": 8},
                      "trunk": {"type": "sudormrf", "bottleneck_size": 128, "n_blocks": 8,
                                "upsampling_depth": 4}},
    "blstm_stft": {"encoder": {"type": "stft", "n_fft": 256, "hop_length": 64},
                   "trunk": {"type": "blstm", "hidden_size": 256, "n_layers": 3}},
    "dprnn_stft": {"encoder": {"type": "stft", "n_fft": 256, "hop_length": 64},
                   "trunk": {"type": "dprnn", "feature_size": 128, "hidden_size": 128, "chunk_size": 50,
                             "n_blocks": 4}},
}
DEFAULT_CANDIDATES = ("mulcat_conv", "dprnn_conv", "sudormrf_conv", "blstm_stft", "dprnn_stft")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@torch.no_grad()
def evaluate(model, valid) -> dict:
    """SI-SNRi (true count) on 2-talker and on all 2+ talker mixtures, and count accuracy."""
    from separation.task import si_snr_improvement

    model.eval()
    by_count: dict[int, list[float]] = {}
    correct = 0
    for i in range(len(valid)):
        item = valid[i]
        k, n = int(item["n_src"]), int(item["length"])
        mix = item["mix"][:n]
        est, probs = model.separate_and_count(mix, [k])
        correct += int(probs[0].argmax()) == k
        if k >= 2:
            imp = si_snr_improvement(est[0][None], item["sources"][None, :k, :n], mix[None])
            by_count.setdefault(k, []).append(float(imp[0]))
    model.train()
    multi = [v for k, vals in by_count.items() for v in vals]
    return {"si_snri_2": float(np.mean(by_count.get(2, [float("nan")]))),
            "si_snri_all": float(np.mean(multi)) if multi else float("nan"),
            "count_acc": correct / len(valid),
            **{f"si_snri_{k}": float(np.mean(v)) for k, v in sorted(by_count.items())}}


def train_candidate(name: str, model_config: dict, speech: str, valid_manifest: str, budget_min: float,
                    eval_every_min: float, seed: int = 0, batch_size: int = 4, segment: float = 2.0,
                    counts=(1, 2, 3, 4, 5), lr: float = 1e-3, fractions=(0.91, 0.09, 0.0)) -> list[dict]:
    """Train one candidate in this process (1 thread) for ``budget_min`` CPU-minutes; return the
    evaluation points (the first at 0 CPU-minutes)."""
    from engine.checkpoint import build_model
    from separation.data import DynamicMixingDataset, MixtureManifestDataset, collate_mixtures
    from separation.task import SeparationTask

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    model = build_model("multihead", {"max_speakers": max(counts), "sample_rate": 8000, **model_config})
    task = SeparationTask(count_weight=0.1, multi_scale=False)
    train = DynamicMixingDataset([{"path": speech, "fractions": list(fractions)}], counts=counts,
                                 segment=segment, sample_rate=8000, epoch_size=10**9, seed=seed, split="train")
    valid = MixtureManifestDataset(valid_manifest, sample_rate=8000)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    params = sum(p.numel() for p in model.parameters())
    points, spent, step, next_eval = [], 0.0, 0, 0.0
    while True:
        if spent >= next_eval * 60 - 1e-9:
            points.append({"candidate": name, "params_m": round(params / 1e6, 2), "cpu_min": round(spent / 60, 2),
                           "steps": step, **evaluate(model, valid)})
            print(json.dumps(points[-1]), file=sys.stderr, flush=True)
            next_eval += eval_every_min
            if spent >= budget_min * 60:
                return points
        start = cpu_seconds()
        batch = collate_mixtures([train[step * batch_size + j] for j in range(batch_size)])
        loss, _ = task.loss(model, batch)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        step += 1
        spent += cpu_seconds() - start


def run_budget(candidates, speech: str, valid_manifest: str, budget_min: float, eval_every_min: float,
               jobs: int = 1, seed: int = 0) -> list[dict]:
    """Run every candidate in its own subprocess (``jobs`` at a time); return all points."""
    pending = list(candidates)
    running: list[tuple[str, subprocess.Popen, Path]] = []
    rows: list[dict] = []
    tmp = Path(tempfile.mkdtemp(prefix="voxsep_budget_"))
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    while pending or running:
        while pending and len(running) < jobs:
            name = pending.pop(0)
            out = tmp / f"{name}.json"
            cmd = [sys.executable, "-m", "bench.budget", "--worker", name, "--speech", speech,
                   "--valid", valid_manifest, "--minutes", str(budget_min), "--eval-every", str(eval_every_min),
                   "--seed", str(seed), "--out", str(out)]
            running.append((name, subprocess.Popen(cmd, env=env), out))
        time.sleep(0.5)
        for entry in list(running):
            name, proc, out = entry
            if proc.poll() is None:
                continue
            running.remove(entry)
            if proc.returncode != 0:
                raise RuntimeError(f"budget candidate {name} failed (exit {proc.returncode})")
            rows += json.loads(out.read_text())
    return rows


def table(rows: list[dict]) -> str:
    """Markdown table of each candidate's points at the evaluation times."""
    lines = ["| candidate | params | CPU-min | steps | SI-SNRi 2 talkers | SI-SNRi 2-5 talkers | count acc. |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['candidate']} | {r['params_m']:.2f} M | {r['cpu_min']:.1f} | {r['steps']} | "
                     f"{r['si_snri_2']:.2f} dB | {r['si_snri_all']:.2f} dB | {100 * r['count_acc']:.1f} % |")
    return "\n".join(lines)


def plot(rows: list[dict], path: str | os.PathLike) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for name in dict.fromkeys(r["candidate"] for r in rows):
        pts = [r for r in rows if r["candidate"] == name]
        for ax, key in zip(axes, ("si_snri_2", "si_snri_all")):
            ax.plot([p["cpu_min"] for p in pts], [p[key] for p in pts], marker="o", label=name)
    top = max(max(r["si_snri_2"], r["si_snri_all"]) for r in rows)
    for ax, title in zip(axes, ("2 talkers", "2-5 talkers")):
        # untrained models start far below 0 dB (time-domain decoders): keep the scale of the race
        ax.set_ylim(-1.0, top + 0.5)
        ax.set_title(f"validation SI-SNRi, {title} (from -1 dB)")
        ax.set_xlabel("training CPU-minutes (1 thread)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("dB")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.budget", description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", required=True, choices=sorted(CANDIDATES))
    parser.add_argument("--speech", required=True)
    parser.add_argument("--valid", required=True)
    parser.add_argument("--minutes", type=float, required=True)
    parser.add_argument("--eval-every", type=float, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    points = train_candidate(args.worker, CANDIDATES[args.worker], args.speech, args.valid, args.minutes,
                             args.eval_every, seed=args.seed)
    Path(args.out).write_text(json.dumps(points))
    return 0


if __name__ == "__main__":
    sys.exit(main())
