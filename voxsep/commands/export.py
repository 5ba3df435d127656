"""`voxsep export OUT --model CKPT [--counter CKPT]`: one deployable separation checkpoint.

Takes a run's separator (``best.pt``) and, optionally, the counter trained on its own by the
``counting`` task, checks that they fit together, and writes one checkpoint whose stored training
config holds no machine path (``DATA/...``, ``RUN/...`` placeholders). ``voxsep separate --model OUT``
and ``voxsep count --model OUT`` then use the counter. Nothing is written on error.
"""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", metavar="OUT.pt", help="checkpoint to write")
    parser.add_argument("--model", required=True, metavar="CKPT", help="separator checkpoint (a 'multihead' model)")
    parser.add_argument("--counter", default=None, metavar="CKPT",
                        help="take the counter from this checkpoint (a 'counting' run's best.pt)")
    parser.add_argument("--half", action="store_true",
                        help="store the weights as float16 (half the size, e.g. for bundled models)")


def run(args: argparse.Namespace) -> int:
    from voxsep.export import export_separator

    ckpt = export_separator(args.model, args.out, args.counter, half=args.half)
    counter = ckpt["model_config"]["counter"]["type"]
    print(f"wrote {args.out}: {ckpt['model_name']} (encoder {ckpt['model_config']['encoder']['type']}, "
          f"trunk {ckpt['model_config']['trunk']['type']}, counter {counter}), step {ckpt['step']}")
    return 0
