"""The `voxsep` command line.

Errors the user can act on (:class:`frontend.errors.VoxsepError`) print as one line
``voxsep: error: <file>: <reason>`` and exit with status 2; ``--debug`` shows the traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from frontend.errors import VoxsepError
from voxsep import __version__
from voxsep.commands import COMMANDS


def _load(name: str):
    return importlib.import_module(f"voxsep.commands.{name}")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """Build the parser; with ``only``, import and fill in just that subcommand's arguments."""
    parser = argparse.ArgumentParser(
        prog="voxsep",
        description="Separate an unknown number of talkers; enhance and synthesize speech.",
    )
    parser.add_argument("--version", action="version", version=f"voxsep {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == only:
            _load(name).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    if command not in COMMANDS:
        command = None
    parser = build_parser(only=command)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if not args.debug:
        # torchmetrics (under Lightning) warns on import that setuptools will drop pkg_resources: a
        # dependency's notice that users can't act on, printed by every training-side command
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
    try:
        return int(_load(args.command).run(args) or 0)
    except VoxsepError as err:
        if args.debug:
            raise
        print(f"voxsep: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("voxsep: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
