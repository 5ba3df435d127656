"""`voxsep count IN...`: print the estimated number of talkers in each file.

One line per file: ``PATH<TAB>COUNT<TAB>PROBABILITY``. Long files are counted over windows that
vote (``--count-vote``). Silence counts 0. Bad files are reported as one line each (exit 2).
"""
from __future__ import annotations

import argparse

from frontend.errors import VoxsepError
from voxsep.commands.separate import add_model_arguments, expand_inputs, load_separator, report_error


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)


def run(args: argparse.Namespace) -> int:
    files, errors = expand_inputs(args.inputs)
    for line in errors:
        report_error(line)
    separator = load_separator(args)
    failed = len(errors)
    for path in files:
        try:
            count, probabilities = separator.count_file(path)
        except VoxsepError as err:
            if args.debug:
                raise
            report_error(err)
            failed += 1
            continue
        print(f"{path}\t{count}\t{probabilities[count]:.3f}")
    return 2 if failed else 0
