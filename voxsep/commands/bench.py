"""`voxsep bench NAME [args]`: run one of the speed/memory benchmarks in ``bench/``.

``bench`` is a leaf: it may import every package (``voxsep`` included), and nothing imports it.
So this command does not import it either: it finds the benchmark modules on the path and runs
``python -m bench.NAME ARGS`` in a child process (a benchmark also measures memory, which a
clean process keeps honest).
"""
from __future__ import annotations

import argparse
import importlib.util
import pkgutil
import subprocess
import sys

from frontend.errors import VoxsepError


def _available() -> list[str]:
    spec = importlib.util.find_spec("bench")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return []
    return sorted(m.name for m in pkgutil.iter_modules(spec.submodule_search_locations)
                  if not m.name.startswith("_"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="benchmark: separation, generation, metrics, corpus, ...")
    parser.add_argument("bench_args", nargs=argparse.REMAINDER,
                        help="arguments for the benchmark (see `voxsep bench NAME --help`)")


def run(args: argparse.Namespace) -> int:
    names = _available()
    if args.name not in names:
        raise VoxsepError(f"unknown benchmark {args.name!r}; available: {', '.join(names) or 'none'}")
    return subprocess.run([sys.executable, "-m", f"bench.{args.name}", *args.bench_args]).returncode
