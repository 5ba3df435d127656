"""`voxsep train CONFIG.yaml [key=value ...] [--run-dir D]`: train any task from a recipe config.

The config's ``task:`` picks the task (``separation``, ``enhancement``, ``vocoder``, or
``package.module:Attr`` for a task defined elsewhere); its module is imported only now, so that
its tasks and models register themselves. Re-running the same command resumes the run. Training
needs the ``[train]`` extra (Lightning, asteroid, PyYAML); without it the command says so in one line.
"""
from __future__ import annotations

import argparse
import importlib

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


def _split_options(args: argparse.Namespace) -> tuple[list[str], str | None, list[str]]:
    """(overrides, run_dir, task_modules) from options given before or among the overrides."""
    late = argparse.ArgumentParser(prog="voxsep train", add_help=False)
    _add_options(late)
    found, overrides = late.parse_known_args(args.overrides)
    unknown = [item for item in overrides if item.startswith("-")]
    if unknown:
        raise VoxsepError(f"voxsep train: unknown option {unknown[0]} (options: --run-dir, --task-module)")
    return overrides, found.run_dir or args.run_dir, [*args.task_module, *found.task_module]


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
