"""The command line shell: help lists every subcommand; user errors are one line with exit 2."""
import subprocess
import sys

import pytest

from voxsep.cli import main
from voxsep.commands import COMMANDS


def test_help_lists_every_command(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_every_command_module_has_the_interface():
    import importlib

    for name in COMMANDS:
        module = importlib.import_module(f"voxsep.commands.{name}")
        assert callable(module.add_arguments) and callable(module.run), name


@pytest.mark.slow
def test_user_error_is_one_line_exit_2():
    proc = subprocess.run([sys.executable, "-m", "voxsep", "bench", "no-such-benchmark"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert proc.stderr.startswith("voxsep: error: unknown benchmark 'no-such-benchmark'")
    assert "Traceback" not in proc.stderr
