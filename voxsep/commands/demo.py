"""`voxsep demo [-o OUT]`: mix bundled voices, count and separate them, and write a report.

Needs nothing but the installed package: the example utterances and the default model are bundled.
"""
from __future__ import annotations

import argparse

from frontend.errors import VoxsepError


def _counts(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated talker counts, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("no talker counts given")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--out", default="voxsep_demo", metavar="OUT",
                        help="output folder (default: ./voxsep_demo)")
    parser.add_argument("--model", default="default", metavar="NAME|CKPT",
                        help="separation model (default: the bundled one)")
    parser.add_argument("--counts", type=_counts, default=[2, 3, 4, 5], metavar="2,3,4,5",
                        help="talker counts of the demo mixtures")
    parser.add_argument("--per-count", type=int, default=1, help="mixtures per count (default 1)")
    parser.add_argument("--enhance", metavar="NAME|CKPT", default=None,
                        help="also denoise the estimates with this enhancement model")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    from voxsep.demo import run_demo

    if args.per_count < 1:
        raise VoxsepError(f"--per-count must be at least 1, got {args.per_count}")
    report = run_demo(args.out, model=args.model, counts=args.counts, per_count=args.per_count,
                      seed=args.seed, enhancer=args.enhance)
    print(f"demo report: {report} (also {report.with_suffix('.html')})")
    return 0
