"""Training tasks: what a model learns from, and how its loss is computed.

The trainer (:func:`engine.train.train`) is generic; everything task-specific sits in a
:class:`Task` subclass registered by name::

    from engine.task import Task, register_task

    @register_task("separation")
    class SeparationTask(Task):
        def __init__(self, count_weight: float = 0.05):      # options from config["task_options"]
            self.count_weight = count_weight
        def build_datasets(self, data_config, sample_rate):
            return train_ds, valid_ds
        def collate(self, batch):
            return {"mix": ..., "sources": ..., "lengths": ...}
        def loss(self, model, batch):
            return loss, {"loss": float(loss), "si_snr": ...}

A config's ``task:`` is a registered name, or ``"package.module:attr"`` (a Task subclass or
instance importable from anywhere: imported on demand, so a subprocess or a DDP worker finds it).
A task class is built with no arguments, or with the config's optional ``task_options`` dict as
keyword arguments.
"""
from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, Callable, TypeVar

import torch
from torch import nn
from torch.utils.data import Dataset, default_collate

from engine import checkpoint
from frontend.errors import VoxsepError

TASKS: dict[str, type] = {}

T = TypeVar("T", bound=type)


class Task:
    """Base class of a training task (contract 4 in the project brief).

    Subclasses implement :meth:`build_datasets` and :meth:`loss`; the others have defaults.
    ``name`` is set by :func:`register_task`.
    """

    name: str = "task"
    #: the task name written in checkpoints (``None``: :attr:`name`); a task that trains part of
    #: another task's model (e.g. only its counter) saves checkpoints of that task
    checkpoint_task: str | None = None

    #: Under DDP, let some parameters go unused in a step (e.g. one decoder head per talker count,
    #: used only when the batch has that count). Safe default; a task whose every step uses every
    #: parameter may set False to skip DDP's graph traversal.
    find_unused_parameters: bool = True

    def build_model(self, model_name: str, model_config: Mapping[str, Any]) -> nn.Module:
        """Build the model to train (default: the model registry, :func:`engine.checkpoint.build_model`).

        A task may override this, but the checkpoint must still rebuild the model from
        ``model_name`` + the saved config: keep the built model's config on ``model.config`` (a
        dataclass or dict), which the trainer saves in place of ``model_config``.
        """
        return checkpoint.build_model(model_name, model_config)

    def build_datasets(self, data_config: Mapping[str, Any], sample_rate: int) -> tuple[Dataset, Dataset | None]:
        """Return ``(train_ds, valid_ds)`` (map-style datasets; ``valid_ds`` may be ``None``).

        If ``train_ds`` has a ``set_epoch(epoch)`` method, the trainer calls it at the start of
        every training epoch (and restarts DataLoader workers each epoch so that they see it).
        """
        raise NotImplementedError

    def collate(self, batch: list) -> Any:
        """Merge a list of dataset items into a batch (default: ``torch.utils.data.default_collate``)."""
        return default_collate(batch)

    def loss(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        """Return ``(loss, logs)``: a scalar tensor to minimise and floats to log (train split)."""
        raise NotImplementedError

    def validation_metrics(self, model: nn.Module, batch: Any) -> dict[str, float]:
        """Metrics for one validation batch, averaged over the epoch by the trainer.

        Must include ``"loss"`` (``best.pt`` is chosen by it unless the config's
        ``trainer.monitor`` names another key). Default: the loss and the logs of :meth:`loss`.
        """
        loss, logs = self.loss(model, batch)
        return {**{k: float(v) for k, v in logs.items()}, "loss": float(loss)}

    def batch_size(self, batch: Any) -> int:
        """Number of examples in ``batch`` (weights the epoch averages); default: first tensor's dim 0."""
        tensor = _first_tensor(batch)
        return int(tensor.shape[0]) if tensor is not None and tensor.ndim > 0 else 1


def _first_tensor(batch: Any) -> torch.Tensor | None:
    if isinstance(batch, torch.Tensor):
        return batch
    values = batch.values() if isinstance(batch, Mapping) else batch if isinstance(batch, (list, tuple)) else ()
    for value in values:
        found = _first_tensor(value)
        if found is not None:
            return found
    return None


def register_task(name: str) -> Callable[[T], T]:
    """Class decorator: register a :class:`Task` subclass under ``name`` (sets ``cls.name``)."""

    def decorator(cls: T) -> T:
        old = TASKS.get(name)
        if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ValueError(f"task {name!r} is already registered to {old.__module__}.{old.__qualname__}")
        cls.name = name
        TASKS[name] = cls
        return cls

    return decorator


def get_task(spec: str, options: Mapping[str, Any] | None = None) -> Task:
    """Build the task ``spec``: a registered name or ``"module:attr"`` (class or instance).

    Args:
        spec: the config's ``task`` value.
        options: the config's ``task_options``, passed to the task class as keyword arguments.

    Raises:
        VoxsepError: unknown name (listing the registered ones), unimportable module or bad options.
    """
    options = dict(options or {})
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        try:
            target = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as err:
            raise VoxsepError(f"task {spec!r}: cannot import it: {err}") from None
    else:
        try:
            target = TASKS[spec]
        except KeyError:
            known = ", ".join(sorted(TASKS)) or "none registered"
            raise VoxsepError(f"unknown task {spec!r} (known tasks: {known})") from None
    if isinstance(target, Task):
        if options:
            raise VoxsepError(f"task {spec!r} is an instance and takes no task_options")
        return target
    try:
        task = target(**options)
    except TypeError as err:
        raise VoxsepError(f"task {spec!r}: bad task_options {options}: {err}") from None
    if not isinstance(task, Task):
        raise VoxsepError(f"task {spec!r} is a {type(task).__name__}, not an engine.task.Task")
    if ":" in spec and getattr(task, "name", "task") == "task":
        task.name = spec
    return task
