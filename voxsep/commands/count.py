"""`voxsep count IN...`: print the estimated number of talkers in each file.

One line per file: ``PATH<TAB>COUNT<TAB>PROBABILITY``. Long files are counted over windows that
vote (``--count-vote``). Audio without speech (silence, or, with ``--vad``, noise in which the
voice activity detector finds no talker) counts 0. Bad files follow the rule
of :mod:`voxsep.files`: every input is checked first, and a bad one stops the command with one line
naming it (exit 2).
"""
from __future__ import annotations

import argparse

from voxsep.commands.separate import add_model_arguments, load_separator
from voxsep.files import BAD_FILE_RULE, check_inputs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.epilog = BAD_FILE_RULE


def run(args: argparse.Namespace) -> int:
    files = [path for path, _ in check_inputs(args.inputs)]
    separator = load_separator(args)
    lines = []
    for path in files:
        count, probabilities = separator.count_file(path)
        lines.append(f"{path}\t{count}\t{probabilities[count]:.3f}")
    print("\n".join(lines))
    return 0
