"""`voxsep bench NAME [args]`: run one of the speed/memory benchmarks in ``bench/``."""
from __future__ import annotations

import argparse
import importlib
import pkgutil

from frontend.errors import VoxsepError


def _available() -> list[str]:
    import bench

    return sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if not m.name.startswith("_"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="benchmark: separation, generation, metrics, corpus, ...")
    parser.add_argument("bench_args", nargs=argparse.REMAINDER,
                        help="arguments for the benchmark (see `voxsep bench NAME --help`)")


def run(args: argparse.Namespace) -> int:
    names = _available()
    if args.name not in names:
        raise VoxsepError(f"unknown benchmark {args.name!r}; available: {', '.join(names) or 'none'}")
    module = importlib.import_module(f"bench.{args.name}")
    return int(module.main(args.bench_args) or 0)
