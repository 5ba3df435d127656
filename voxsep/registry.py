"""Bundled pretrained models, found by name.

A bundled model is a voxsep checkpoint (see :mod:`engine.checkpoint`) shipped inside the package
as ``voxsep/models/{task}-{name}.pt`` with a model card ``{task}-{name}.md`` beside it, e.g.
``separation-default.pt``. Commands take ``--model NAME|CHECKPOINT``: a bundled name for the
command's task, or the path of any checkpoint (``runs/x/best.pt``).
"""
from __future__ import annotations

import importlib
import os
import pkgutil
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from engine.checkpoint import load_checkpoint, model_from_checkpoint, registered_models
from frontend.errors import VoxsepError
from voxsep.extras import extra_message, extra_of_import_error

MODELS_DIR = Path(__file__).resolve().parent / "models"

#: Task -> the package whose modules register its model classes (imported on demand).
TASK_PACKAGES = {"separation": "separation", "enhancement": "generation", "vocoder": "generation"}
#: Modules tried first (the models of the core install; the others may need an extra, e.g. asteroid).
CORE_MODEL_MODULES = {"separation": ("separation.model",), "enhancement": ("generation.enhancer",),
                      "vocoder": ("generation.vocoder",)}

CHECKPOINT_SUFFIXES = (".pt", ".pth")

#: Task -> (what its model is called in messages, the recipe that trains one).
TASK_MODELS = {"separation": ("separation model", "recipes/tts_separation"),
               "enhancement": ("denoiser", "recipes/real_enhancement"),
               "vocoder": ("vocoder", "recipes/real_vocoder")}
DEFAULT_NAME = "default"


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


def bundled_default(task: str, models_dir: str | os.PathLike | None = None) -> str | None:
    """``"default"`` when a model of that name is bundled for ``task``, else None."""
    return DEFAULT_NAME if any(m.name == DEFAULT_NAME for m in list_models(task, models_dir)) else None


def model_requirement(task: str) -> str:
    """For ``--help``: what the model option of a ``task`` command takes, and whether it is required."""
    what, recipe = TASK_MODELS[task]
    if bundled_default(task):
        return f"a bundled {what} name or a checkpoint (default: the bundled {DEFAULT_NAME!r})"
    return f"required: a {what} checkpoint (no {what} is bundled yet; train one with {recipe})"


def require_model(task: str, spec: str | os.PathLike | None, command: str, option: str = "--model") -> str:
    """The model a command loads: ``spec``, or else the bundled default of ``task``.

    Raises:
        VoxsepError: one line when no model is given and none is bundled.
    """
    if spec:
        return os.fspath(spec)
    default = bundled_default(task)
    if default is None:
        what, recipe = TASK_MODELS[task]
        raise VoxsepError(f"voxsep {command} needs {option} CKPT: no {what} is bundled (train one with {recipe})")
    return default


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


def import_model_class(model_name: str, task: str) -> list[tuple[str, ImportError]]:
    """Import the task's package, then its modules one by one, until ``model_name`` is registered.

    Returns the modules that could not be imported, with their errors (a module that needs an
    optional extra, e.g. asteroid's baselines without ``[train]``)."""
    package_name = TASK_PACKAGES.get(task)
    failed: list[tuple[str, ImportError]] = []
    if package_name is None or model_name in registered_models():
        return failed
    package = importlib.import_module(package_name)
    names = [*CORE_MODEL_MODULES.get(task, ()), *(f"{package_name}.{info.name}" for info in
                                                   pkgutil.iter_modules(package.__path__)
                                                   if not info.name.startswith("_"))]
    for name in names:
        if model_name in registered_models():
            return failed
        try:
            importlib.import_module(name)
        except ImportError as err:
            failed.append((name, err))
    return failed


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
    failed = import_model_class(ckpt["model_name"], task)
    if ckpt["model_name"] not in registered_models():
        for module, err in failed:
            extra = extra_of_import_error(err)
            if extra is not None:
                raise VoxsepError(f"{path}: " + extra_message(f"its model {ckpt['model_name']!r}", extra,
                                                              f"{module} needs {err.name}"))
    return model_from_checkpoint(ckpt), ckpt
