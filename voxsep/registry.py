"""Bundled pretrained models, found by name.

A bundled model is a voxsep checkpoint (see :mod:`engine.checkpoint`) shipped inside the package
as ``voxsep/models/{task}-{name}.pt`` with a model card ``{task}-{name}.md`` beside it, e.g.
``separation-default.pt``. Commands take ``--model NAME|CHECKPOINT``: a bundled name for the
command's task, or the path of any checkpoint (``runs/x/best.pt``).
"""
from __future__ import annotations

import contextlib
import importlib
import os
import pkgutil
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from engine.checkpoint import load_checkpoint, model_from_checkpoint, registered_models
from frontend.errors import VoxsepError

MODELS_DIR = Path(__file__).resolve().parent / "models"

#: Task -> the package whose modules register its model classes (imported on demand).
TASK_PACKAGES = {"separation": "separation", "enhancement": "generation", "vocoder": "generation"}

CHECKPOINT_SUFFIXES = (".pt", ".pth")


@dataclass(frozen=True)
class BundledModel:
    """One bundled checkpoint: ``task``, ``name``, its ``path`` and model ``card`` (None if absent)."""

    task: str
    name: str
    path: Path
    card: Path | None


def list_models(task: str | None = None, models_dir: str | os.PathLike | None = None) -> list[BundledModel]:
    """The bundled models (of ``task`` if given), sorted by task and name."""
    folder = Path(models_dir) if models_dir is not None else MODELS_DIR
    found = []
    for path in sorted(folder.glob("*.pt")) if folder.is_dir() else ():
        model_task, sep, name = path.stem.partition("-")
        if not sep or (task is not None and model_task != task):
            continue
        card = path.with_suffix(".md")
        found.append(BundledModel(model_task, name, path, card if card.is_file() else None))
    return found


def _looks_like_path(spec: str) -> bool:
    return os.sep in spec or "/" in spec or spec.endswith(CHECKPOINT_SUFFIXES) or spec.endswith(".ckpt")


def resolve_model(spec: str | os.PathLike, task: str, models_dir: str | os.PathLike | None = None) -> Path:
    """The checkpoint file for ``spec``: a path to a checkpoint, or a bundled model name of ``task``.

    Raises:
        VoxsepError: a missing checkpoint file, or an unknown name (listing the bundled ones).
    """
    spec_str = os.fspath(spec)
    if _looks_like_path(spec_str) or Path(spec_str).is_file():
        path = Path(spec_str)
        if not path.is_file():
            raise VoxsepError(f"{path}: no such checkpoint file")
        return path
    bundled = {m.name: m.path for m in list_models(task, models_dir)}
    if spec_str in bundled:
        return bundled[spec_str]
    names = ", ".join(sorted(bundled)) or "none bundled"
    raise VoxsepError(f"unknown {task} model {spec_str!r} (bundled {task} models: {names}; or give a checkpoint path)")


def _import_model_class(model_name: str, task: str) -> None:
    """Import the task's package, then its modules one by one, until ``model_name`` is registered."""
    package_name = TASK_PACKAGES.get(task)
    if package_name is None or model_name in registered_models():
        return
    package = importlib.import_module(package_name)
    for info in pkgutil.iter_modules(package.__path__):
        if model_name in registered_models():
            return
        if not info.name.startswith("_"):
            with contextlib.suppress(ImportError):
                importlib.import_module(f"{package_name}.{info.name}")


def load_model(
    spec: str | os.PathLike, task: str, models_dir: str | os.PathLike | None = None
) -> tuple[nn.Module, dict]:
    """Load ``spec`` (bundled name or checkpoint path) as a ``task`` model in eval mode.

    Returns:
        ``(model, checkpoint_dict)``; the dict holds ``sample_rate``, ``model_config``, ``metrics``...

    Raises:
        VoxsepError: unknown name, unreadable checkpoint, a checkpoint of another task, or a model
            class that no module registers.
    """
    path = resolve_model(spec, task, models_dir)
    ckpt = load_checkpoint(path)
    if ckpt["task"] != task:
        raise VoxsepError(f"{path}: this is a {ckpt['task']!r} model, not a {task!r} model")
    _import_model_class(ckpt["model_name"], task)
    return model_from_checkpoint(ckpt), ckpt
