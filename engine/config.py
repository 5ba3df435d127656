"""Training configs: YAML + ``key.sub=value`` overrides, validated, defaults filled in.

Schema (``voxsep train`` and :func:`engine.train.train` read the resolved dict)::

    task: separation            # registered task name, or "package.module:Attr"
    task_options: {}            # optional keyword arguments of the task class (loss weights...)
    sample_rate: 8000
    run_dir: runs/tts_separation_cpu
    init_from: null             # optional: start from the weights of voxsep checkpoint(s), fresh optimizer:
                                # PATH, or a list of PATH / PART=PATH (only the keys under PART.)
    model: {name: svoice, config: {...}}        # registry name + its config dict
    data: {...}                 # task-specific, handed to task.build_datasets
    optim: {optimizer: adam, lr: 5.0e-4, weight_decay: 0.0, grad_clip: 5.0,
            scheduler: {name: step, step_size: 2, gamma: 0.98}}   # or none / cosine / cosine_steps / plateau
    trainer: {max_epochs: 100, max_steps: -1, max_time_minutes: null, batch_size: 4, ...}

The free-form sections (``task_options``, ``model.config``, ``data``) are the task's and the
model's to check; ``optim``, ``optim.scheduler`` and ``trainer`` reject unknown keys so that a typo
fails before training starts rather than being silently ignored.
"""
from __future__ import annotations

import copy
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from frontend import atomic_output
from frontend.errors import VoxsepError

SECTIONS = ("task", "task_options", "sample_rate", "run_dir", "init_from", "model", "data", "optim", "trainer")

OPTIMIZERS = ("adam", "adamw", "sgd")

OPTIM_DEFAULTS: dict[str, Any] = {
    "optimizer": "adam", "lr": 1.0e-3, "weight_decay": 0.0, "betas": [0.9, 0.999], "momentum": 0.9,
    "grad_clip": None, "scheduler": {"name": "none"},
}

#: Scheduler name -> its keys and defaults (``cosine``: ``t_max`` epochs, ``null`` = the trainer's
#: max_epochs; ``cosine_steps``: the same curve stepped at every optimizer step, ``t_max`` steps,
#: ``null`` = the trainer's max_steps: a smooth decay for runs of one or a few long epochs).
SCHEDULER_DEFAULTS: dict[str, dict[str, Any]] = {
    "none": {},
    "step": {"step_size": 1, "gamma": 0.98},
    "cosine": {"t_max": None, "eta_min": 0.0},
    "cosine_steps": {"t_max": None, "eta_min": 0.0},
    "plateau": {"factor": 0.5, "patience": 5, "min_lr": 0.0},
}

TRAINER_DEFAULTS: dict[str, Any] = {
    "max_epochs": 100, "max_steps": -1, "max_time_minutes": None, "batch_size": 4,
    "num_workers": 2, "accelerator": "cpu", "devices": 1, "strategy": "auto", "precision": 32,
    "val_every_n_epochs": 1, "limit_train_batches": None, "limit_val_batches": None,
    "log_every_n_steps": 10, "seed": 0, "checkpoint_every_n_steps": None, "checkpoint_every_minutes": 5.0,
    "ema_decay": None,
    "monitor": "loss", "monitor_mode": "min", "progress_bar": True,
}

#: Keys that may change when a run resumes (they change how long / where it runs, not what it
#: learns). Any other difference between the saved and the new resolved config refuses to resume.
RESUMABLE_CHANGES = frozenset(
    f"trainer.{k}" for k in (
        "max_epochs", "max_steps", "max_time_minutes", "num_workers", "accelerator", "devices",
        "strategy", "precision", "log_every_n_steps", "checkpoint_every_n_steps", "checkpoint_every_minutes", "ema_decay", "limit_val_batches",
        "val_every_n_epochs", "progress_bar",
    )
) | {"run_dir", "init_from"}

# key -> (allowed types, must be positive); None is allowed where the default is None
_INT = (int,)
_NUM = (int, float)
_TRAINER_TYPES: dict[str, tuple[tuple[type, ...], bool]] = {
    "max_epochs": (_INT, False), "max_steps": (_INT, False), "max_time_minutes": (_NUM, True),
    "batch_size": (_INT, True), "num_workers": (_INT, False), "accelerator": ((str,), False),
    "devices": ((int, str, list), False), "strategy": ((str,), False), "precision": ((int, str), False),
    "val_every_n_epochs": (_INT, True), "limit_train_batches": (_NUM, True),
    "limit_val_batches": (_NUM, False), "log_every_n_steps": (_INT, True), "seed": (_INT, False),
    "checkpoint_every_n_steps": (_INT, True), "checkpoint_every_minutes": (_NUM, True), "ema_decay": (_NUM, True), "monitor": ((str,), False),
    "monitor_mode": ((str,), False), "progress_bar": ((bool,), False),
}


class _Loader(yaml.SafeLoader):
    """YAML safe loader that also reads ``1e-3`` as a float (PyYAML's YAML 1.1 needs ``1.0e-3``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)


def parse_overrides(overrides: Iterable[str]) -> list[tuple[list[str], Any]]:
    """Parse ``key.sub=value`` strings; values are YAML (``3`` int, ``1e-3`` float, ``[1,2]`` list)."""
    parsed = []
    for item in overrides:
        key, sep, value = item.partition("=")
        keys = key.strip().split(".")
        if not sep or not all(keys):
            raise VoxsepError(f"bad override {item!r}: expected key.sub=value")
        try:
            parsed.append((keys, _load_yaml(value) if value.strip() else None))
        except yaml.YAMLError as err:
            raise VoxsepError(f"bad override {item!r}: value is not YAML ({_one_line(err)})") from None
    return parsed


def apply_overrides(config: Mapping[str, Any], overrides: Iterable[str]) -> dict:
    """Return a copy of ``config`` with ``key.sub=value`` overrides applied (nested dicts created)."""
    config = copy.deepcopy(dict(config))
    for keys, value in parse_overrides(overrides):
        node = config
        for depth, key in enumerate(keys[:-1]):
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            elif not isinstance(child, dict):
                raise VoxsepError(f"bad override {'.'.join(keys)}: {'.'.join(keys[:depth + 1])} is not a section")
            node = child
        node[keys[-1]] = value
    return config


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())


def read_yaml(path: str | os.PathLike) -> dict:
    """Read a YAML mapping; ``VoxsepError`` naming the file if missing, malformed or not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise VoxsepError(f"{path}: no such config file")
    try:
        data = _load_yaml(path.read_text())
    except yaml.YAMLError as err:
        raise VoxsepError(f"{path}: invalid YAML: {_one_line(err)}") from None
    if not isinstance(data, dict):
        raise VoxsepError(f"{path}: a config must be a YAML mapping, got {type(data).__name__}")
    return data


def load_config(
    path: str | os.PathLike, overrides: Iterable[str] = (), run_dir: str | os.PathLike | None = None
) -> dict:
    """Read ``path``, apply ``overrides`` (then ``run_dir`` if given) and resolve (validate + defaults).

    Raises:
        VoxsepError: one line naming the file and the offending key.
    """
    raw = apply_overrides(read_yaml(path), overrides)
    if run_dir is not None:
        raw["run_dir"] = os.fspath(run_dir)
    try:
        return resolve_config(raw)
    except VoxsepError as err:
        raise VoxsepError(f"{path}: {err}") from None


def _fill(section: str, given: Any, defaults: Mapping[str, Any]) -> dict:
    if given is None:
        given = {}
    if not isinstance(given, Mapping):
        raise VoxsepError(f"{section} must be a mapping, got {type(given).__name__}")
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise VoxsepError(f"unknown key {section}.{unknown[0]} (known: {', '.join(defaults)})")
    return {**copy.deepcopy(dict(defaults)), **copy.deepcopy(dict(given))}


def _check_type(where: str, value: Any, types: tuple[type, ...], positive: bool, nullable: bool) -> None:
    if value is None:
        if nullable:
            return
        raise VoxsepError(f"{where} must be set")
    if isinstance(value, bool) and bool not in types:
        raise VoxsepError(f"{where} must be {'/'.join(t.__name__ for t in types)}, got {value!r}")
    if not isinstance(value, types):
        raise VoxsepError(f"{where} must be {'/'.join(t.__name__ for t in types)}, got {value!r}")
    if positive and isinstance(value, (int, float)) and value <= 0:
        raise VoxsepError(f"{where} must be positive, got {value!r}")


def _plain(value: Any) -> Any:
    """Tuples -> lists and paths -> str, recursively: what a YAML round trip gives back."""
    if isinstance(value, Mapping):
        return {key: _plain(v) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def resolve_config(raw: Mapping[str, Any]) -> dict:
    """Validate a config dict and fill in defaults (see the module docstring for the schema).

    The result is plain YAML data (tuples become lists, paths strings), so it equals the
    ``config.yaml`` saved from it once read back.

    Raises:
        VoxsepError: unknown section or key, missing required key, or a value of the wrong type.
    """
    raw = _plain(raw)
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise VoxsepError(f"unknown config section {unknown[0]!r} (known: {', '.join(SECTIONS)})")
    for key in ("task", "sample_rate", "run_dir", "model"):
        if raw.get(key) is None:
            raise VoxsepError(f"missing required key {key!r}")
    cfg: dict[str, Any] = {}
    _check_type("task", raw["task"], (str,), False, False)
    cfg["task"] = raw["task"]
    cfg["task_options"] = _fill("task_options", raw.get("task_options"), raw.get("task_options") or {})
    _check_type("sample_rate", raw["sample_rate"], _INT, True, False)
    cfg["sample_rate"] = raw["sample_rate"]
    _check_type("run_dir", raw["run_dir"], (str,), False, False)
    cfg["run_dir"] = raw["run_dir"]
    init_from = raw.get("init_from")
    if isinstance(init_from, str):
        init_from = [init_from]
    if init_from is not None and not (isinstance(init_from, list) and all(isinstance(x, str) for x in init_from)):
        raise VoxsepError(f"init_from must be a checkpoint path or a list of them, got {init_from!r}")
    cfg["init_from"] = init_from or None

    model = _fill("model", raw["model"], {"name": None, "config": {}})
    _check_type("model.name", model["name"], (str,), False, False)
    model["config"] = _fill("model.config", model["config"], model["config"] or {})
    cfg["model"] = model
    cfg["data"] = _fill("data", raw.get("data"), raw.get("data") or {})

    optim = _fill("optim", raw.get("optim"), OPTIM_DEFAULTS)
    if optim["optimizer"] not in OPTIMIZERS:
        raise VoxsepError(f"optim.optimizer must be one of {', '.join(OPTIMIZERS)}, got {optim['optimizer']!r}")
    _check_type("optim.lr", optim["lr"], _NUM, True, False)
    _check_type("optim.weight_decay", optim["weight_decay"], _NUM, False, False)
    _check_type("optim.momentum", optim["momentum"], _NUM, False, False)
    _check_type("optim.grad_clip", optim["grad_clip"], _NUM, True, True)
    if not (isinstance(optim["betas"], list) and len(optim["betas"]) == 2):
        raise VoxsepError(f"optim.betas must be a list of two numbers, got {optim['betas']!r}")
    scheduler = optim["scheduler"]
    if scheduler is None or isinstance(scheduler, str):
        scheduler = {"name": scheduler or "none"}
    if not isinstance(scheduler, Mapping):
        raise VoxsepError(f"optim.scheduler must be a mapping, got {type(scheduler).__name__}")
    name = scheduler.get("name", "none") or "none"
    if name not in SCHEDULER_DEFAULTS:
        raise VoxsepError(f"optim.scheduler.name must be one of {', '.join(SCHEDULER_DEFAULTS)}, got {name!r}")
    optim["scheduler"] = {"name": name, **_fill(
        "optim.scheduler", {k: v for k, v in scheduler.items() if k != "name"}, SCHEDULER_DEFAULTS[name]
    )}
    cfg["optim"] = optim

    trainer = _fill("trainer", raw.get("trainer"), TRAINER_DEFAULTS)
    for key, (types, positive) in _TRAINER_TYPES.items():
        _check_type(f"trainer.{key}", trainer[key], types, positive, TRAINER_DEFAULTS[key] is None)
    if trainer["ema_decay"] is not None and not 0 < trainer["ema_decay"] < 1:
        raise VoxsepError(f"trainer.ema_decay must be between 0 and 1 (e.g. 0.999), got {trainer['ema_decay']}")
    if trainer["monitor_mode"] not in ("min", "max"):
        raise VoxsepError(f"trainer.monitor_mode must be min or max, got {trainer['monitor_mode']!r}")
    if trainer["max_epochs"] < 1 and trainer["max_steps"] < 1 and trainer["max_time_minutes"] is None:
        raise VoxsepError("set trainer.max_epochs, trainer.max_steps or trainer.max_time_minutes")
    cfg["trainer"] = trainer
    return cfg


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "c": {}}`` -> ``{"a.b": 1}`` (lists stay values; empty sections vanish)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def config_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Dotted keys whose value differs between two resolved configs, sorted."""
    flat_old, flat_new = flatten(old), flatten(new)
    return sorted(k for k in set(flat_old) | set(flat_new) if flat_old.get(k, _MISSING) != flat_new.get(k, _MISSING))


_MISSING = object()


def check_resumable(old: Mapping[str, Any], new: Mapping[str, Any], where: str | os.PathLike) -> list[str]:
    """Return the allowed changes between a run's saved config and the new one.

    Raises:
        VoxsepError: a change outside :data:`RESUMABLE_CHANGES` (the model, data, optimizer,
            batch size, seed, ...), listing the keys.
    """
    changes = config_changes(old, new)
    blocking = [k for k in changes if k not in RESUMABLE_CHANGES]
    if blocking:
        shown = ", ".join(
            f"{k}: {flatten(old).get(k, '<unset>')!r} -> {flatten(new).get(k, '<unset>')!r}" for k in blocking[:4]
        )
        more = f" and {len(blocking) - 4} more" if len(blocking) > 4 else ""
        raise VoxsepError(
            f"{where}: cannot resume, the config changed ({shown}{more}); "
            "use another run_dir (--run-dir) or delete this one to start over"
        )
    return changes


def save_config(config: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write a resolved config as YAML atomically."""
    with atomic_output(path) as tmp:
        tmp.write_text(yaml.safe_dump(dict(config), sort_keys=False, default_flow_style=False))
    return Path(path)
