"""`voxsep campaign LOG --run RUN_DIR --name NAME [--after RUN [--after-step N]] [--plot PNG]`.

Records the validation points of a training run of any task (its ``history.jsonl``: step, CPU
seconds, validation figures) in a campaign log that is committed with the recipe, and plots the
learning curve of the whole campaign against cumulative CPU-hours: SI-SNRi and count accuracy for
separation, SI-SNRi for denoisers, the validation loss for vocoders. Re-running replaces the run's
points.
"""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("log", metavar="LOG.jsonl", help="campaign log (created if missing)")
    parser.add_argument("--run", metavar="RUN_DIR", default=None, help="run folder whose history to record")
    parser.add_argument("--name", default=None, help="the run's name in the log (default: the folder name)")
    parser.add_argument("--after", default=None, metavar="RUN",
                        help="the run this one started from (init_from): its CPU-hours come first")
    parser.add_argument("--after-step", type=int, default=None,
                        help="the step of the checkpoint it started from (default: that run's last point)")
    parser.add_argument("--note", default=None, help="what changed in this run (kept with its points)")
    parser.add_argument("--plot", default=None, metavar="PNG", help="write the learning-curve plot")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from voxsep.campaign import plot_log, sync_run

    if args.run:
        name = args.name or Path(args.run).name
        points = sync_run(args.log, args.run, name, args.after, args.after_step, args.note)
        last = points[-1]
        print(f"{name}: {len(points)} points, last at {last['campaign_cpu_h']:.2f} campaign CPU-hours: "
              + ", ".join(f"{k} {v:.3f}" for k, v in last.items() if k.startswith("val/")))
    if args.plot:
        plot_log(args.log, args.plot)
        print(f"wrote {args.plot}")
    return 0
