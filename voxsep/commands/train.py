"""`voxsep train CONFIG.yaml [key=value ...] [--run-dir D]`: train any task from a recipe config.

The config's ``task:`` picks the task (``separation``, ``enhancement``, ``vocoder``, or
``package.module:Attr`` for a task defined elsewhere); its module is imported only now, so that
its tasks and models register themselves. Re-running the same command resumes the run. Training
needs the ``[train]`` extra (Lightning, asteroid, PyYAML); without it the command says so in one line.
"""
from __future__ import annotations

import argparse
import importlib
import os

from frontend.errors import VoxsepError
from voxsep.extras import extra_message, extra_of_import_error, require_extra

#: Task name -> the module that registers it (imported lazily).
TASK_MODULES = {
    "separation": "separation.task",
    "counting": "separation.task",
    "enhancement": "generation.task",
    "vocoder": "generation.task",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "The run folder gets config.yaml, last.ckpt (resumable), last.pt and best.pt (voxsep checkpoints), "
        "history.jsonl and logs/. Re-running the same command resumes; a config change other than run length, "
        "devices, workers or logging is refused."
    )
    parser.add_argument("config", help="recipe config (YAML), e.g. recipes/tts_separation/conf.yaml")
    # REMAINDER + a second parse in run(): options may come after the overrides too
    # (argparse's parse_args stops collecting positionals at the first option)
    parser.add_argument("overrides", nargs=argparse.REMAINDER, metavar="key=value",
                        help="override config values, e.g. optim.lr=1e-3 trainer.max_epochs=2 (values are YAML)")
    _add_options(parser)


def _add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-dir", help="run folder (default: the config's run_dir); re-use it to resume")
    parser.add_argument("--task-module", action="append", default=[], metavar="MODULE",
                        help="import MODULE first, so that tasks/models it registers can be used (repeatable)")
    parser.add_argument("--background", action="store_true",
                        help="lowest CPU priority (nice 19; when started with setsid, its scheduler group too), "
                             "so that interactive work gets the cores first")


def _split_options(args: argparse.Namespace) -> tuple[list[str], str | None, list[str]]:
    """(overrides, run_dir, task_modules) from options given before or among the overrides."""
    late = argparse.ArgumentParser(prog="voxsep train", add_help=False)
    _add_options(late)
    found, overrides = late.parse_known_args(args.overrides)
    unknown = [item for item in overrides if item.startswith("-")]
    if unknown:
        raise VoxsepError(f"voxsep train: unknown option {unknown[0]} "
                          f"(options: --run-dir, --task-module, --background)")
    args.background = args.background or found.background
    return overrides, found.run_dir or args.run_dir, [*args.task_module, *found.task_module]


def lower_priority(autogroup: str = "/proc/self/autogroup") -> list[str]:
    """Give this process the lowest CPU priority; returns what was lowered (``nice``, ``autogroup``).

    ``nice 19`` alone ranks a process only against the others of its scheduler group. On Linux
    with autogroup (``/proc/sys/kernel/sched_autogroup_enabled``) every session is its own group,
    and the groups share the cores equally: a training started with ``setsid nice -n 19`` takes a
    full core from an interactive command in another terminal. So a process that leads its own
    session (``setsid``) also sets its group's nice value. It never does that in a shared session,
    where the group also holds the user's shell.
    """
    done = []
    if hasattr(os, "nice"):
        os.nice(19 - os.nice(0))
        done.append("nice")
    if hasattr(os, "getsid") and os.getsid(0) == os.getpid() and os.path.exists(autogroup):
        try:
            with open(autogroup, "w") as f:
                f.write("19")
            done.append("autogroup")
        except OSError:  # no autogroup support, or not permitted: nice alone
            pass
    return done


def import_task_module(task: str, extra: list[str] = ()) -> None:
    """Import the module(s) that register ``task`` (and any ``extra`` modules)."""
    modules = list(extra)
    if ":" not in task and task in TASK_MODULES:
        modules.append(TASK_MODULES[task])
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as err:
            extra = extra_of_import_error(err)
            if extra is not None:
                raise VoxsepError(extra_message(f"task {task!r} ({name})", extra)) from None
            raise VoxsepError(f"task {task!r}: cannot import {name}: {err}") from None


def run(args: argparse.Namespace) -> int:
    require_extra("train", "voxsep train")
    from engine.checkpoint import load_checkpoint
    from engine.config import load_config
    from engine.train import BEST_PT, is_global_rank_zero, train

    overrides, run_dir, task_modules = _split_options(args)
    if args.background:
        lower_priority()
    config = load_config(args.config, overrides, run_dir=run_dir)
    import_task_module(config["task"], task_modules)
    run_dir = train(config)
    # DDP workers re-run this command; only the main process reports
    if is_global_rank_zero():
        print(f"run dir: {run_dir}")
        best = run_dir / BEST_PT
        if best.is_file():
            ckpt = load_checkpoint(best)
            shown = {k: v for k, v in ckpt["metrics"].items() if k.startswith("best/")}
            for key, value in shown.items():
                print(f"best {key[len('best/'):]}: {value:.6g} (step {ckpt['step']}, {best})")
            if not shown:
                print(f"model: {best} (step {ckpt['step']})")
    return 0
