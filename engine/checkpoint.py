"""The voxsep checkpoint format and the model registry.

A checkpoint is plain data, written with ``torch.save`` and read back with
``torch.load(path, weights_only=True)`` (no pickled classes, so loading cannot run code)::

    {"format_version": 1, "task": "separation", "model_name": "svoice",
     "model_config": {...}, "sample_rate": 8000, "state_dict": {...},
     "train_config": {...}, "step": 1234, "metrics": {"val/loss": -9.3},
     "versions": {"voxsep": "0.1.0", "torch": "2.14.1", "python": "3.11.7"}}

A model is rebuilt from its registry name and its config dict, never unpickled. Weights are float32,
float16 (``voxsep export --half``) or, for the weight matrices, int8 with a float32 scale per row
beside each (``key.int8_scale``; ``voxsep export --int8``, :func:`quantize_int8`):
:func:`load_checkpoint` returns float32 weights for those.

Model registry convention
-------------------------
Decorate a model class with ``@register_model("name")``. :func:`build_model` then builds it from a
plain dict, trying in this order:

1. ``cls.from_config(config_dict)`` if the class defines it;
2. ``cls(config_class(**config_dict))`` where ``config_class`` is ``cls.config_class`` or, if
   absent, the nested dataclass ``cls.Config``;
3. ``cls(**config_dict)``.

A model that keeps its config dataclass as ``self.config`` gets that (with defaults filled in)
saved in checkpoints by the trainer, so a checkpoint always rebuilds the same architecture.
"""
from __future__ import annotations

import dataclasses
import os
import pickle
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, TypeVar

import torch
from torch import nn

from frontend import atomic_output
from frontend.errors import VoxsepError

FORMAT_VERSION = 1

#: Keys every checkpoint holds.
CHECKPOINT_KEYS = (
    "format_version", "task", "model_name", "model_config", "sample_rate", "state_dict",
    "train_config", "step", "metrics", "versions",
)

_MODELS: dict[str, type] = {}

T = TypeVar("T", bound=type)


def register_model(name: str) -> Callable[[T], T]:
    """Class decorator: make ``cls`` buildable by :func:`build_model` under ``name``.

    Registering a second, different class under a taken name raises ``ValueError`` (two model
    families must not shadow each other); re-registering the same class (module reloaded) is fine.
    """
    if not name or not isinstance(name, str):
        raise ValueError(f"model name must be a non-empty string, got {name!r}")

    def decorator(cls: T) -> T:
        old = _MODELS.get(name)
        if old is not None and _qualname(old) != _qualname(cls):
            raise ValueError(f"model name {name!r} is already registered to {_qualname(old)}")
        _MODELS[name] = cls
        cls.registry_name = name
        return cls

    return decorator


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def registered_models() -> list[str]:
    """Names of the registered model classes, sorted."""
    return sorted(_MODELS)


def model_class(name: str) -> type:
    """The class registered under ``name``; ``VoxsepError`` listing the known names otherwise."""
    try:
        return _MODELS[name]
    except KeyError:
        known = ", ".join(registered_models()) or "none registered"
        raise VoxsepError(f"unknown model {name!r} (known models: {known})") from None


def config_to_dict(config: Any) -> dict:
    """A model config (dataclass or mapping) as a plain, ``weights_only``-loadable dict."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    if not isinstance(config, Mapping):
        raise TypeError(f"model config must be a dataclass or a dict, got {type(config).__name__}")
    return _to_plain(dict(config), "model_config")


def config_from_dict(config_class: type, config: Mapping[str, Any], what: str) -> Any:
    """Build the config dataclass ``config_class`` from a plain dict, naming unknown keys.

    Raises:
        TypeError: keys that ``config_class`` does not have (``build_model`` turns it into a
            one-line :class:`VoxsepError`).
    """
    unknown = set(config) - {f.name for f in dataclasses.fields(config_class)}
    if unknown:
        raise TypeError(f"unknown {what} config keys: {sorted(unknown)}")
    return config_class(**config)


def build_model(name: str, config: Mapping[str, Any] | None = None) -> nn.Module:
    """Build the model registered as ``name`` from a plain config dict (see the module docstring).

    Raises:
        VoxsepError: unknown name, or a config the model's constructor rejects (unknown or
            missing keys), naming the model.
    """
    cls = model_class(name)
    config = dict(config or {})
    try:
        if hasattr(cls, "from_config"):
            return cls.from_config(config)
        config_class = getattr(cls, "config_class", None) or getattr(cls, "Config", None)
        if config_class is not None:
            return cls(config_class(**config))
        return cls(**config)
    except (TypeError, ValueError) as err:  # unknown/missing keys, or values a config rejects
        raise VoxsepError(f"model {name!r}: bad config {config}: {err}") from None


def _to_plain(value: Any, where: str) -> Any:
    """Convert ``value`` to types that ``torch.load(weights_only=True)`` accepts."""
    if value is None or type(value) in (bool, int, float, str) or isinstance(value, torch.Tensor):
        return value
    if isinstance(value, str):  # str subclasses (torch.__version__) are pickled as classes
        return str(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _to_plain(dataclasses.asdict(value), where)
    if isinstance(value, Mapping):
        return {str(k): _to_plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return value.item()
    raise TypeError(f"{where}: cannot store a {type(value).__name__} in a checkpoint")


def _versions() -> dict[str, str]:
    try:
        from importlib.metadata import version

        voxsep_version = version("voxsep")
    except Exception:  # not installed as a distribution
        voxsep_version = "unknown"
    return {"voxsep": voxsep_version, "torch": str(torch.__version__), "python": platform.python_version()}


def _state_dict_of(model: nn.Module | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if isinstance(model, nn.Module):
        model = getattr(model, "module", model)  # unwrap DistributedDataParallel
        state = model.state_dict()
    else:
        state = model
    # clone: a view's whole storage would otherwise be saved; cpu: loadable anywhere
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


#: suffix of the per-row scale stored beside an int8 weight (:func:`quantize_int8`)
INT8_SCALE_SUFFIX = ".int8_scale"


def quantize_int8(state: Mapping[str, torch.Tensor], skip: Callable[[str], bool] = lambda key: False,
                  min_numel: int = 1024) -> dict[str, torch.Tensor]:
    """``state`` with its weight matrices stored as int8: every floating tensor of 2 or more
    dimensions and at least ``min_numel`` elements (linear, LSTM and convolution weights), unless
    ``skip(key)``, becomes int8 ``round(w / s)`` with one float32 scale ``s = max|row| / 127`` per
    output row (the first dimension), stored as ``key + INT8_SCALE_SUFFIX``; the rest (biases,
    norms, small tensors) is stored as float16. About half the size of float16 weights;
    :func:`dequantize_int8` (which :func:`load_checkpoint` applies) reverses it with an error of at
    most half a step per weight."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not value.is_floating_point() or skip(key):
            out[key] = value
        elif value.dim() >= 2 and value.numel() >= min_numel:
            rows = value.detach().float().reshape(value.shape[0], -1)
            scale = rows.abs().amax(dim=1).clamp_min(1e-12) / 127.0
            out[key] = torch.round(rows / scale[:, None]).clamp(-127, 127).to(torch.int8).reshape(value.shape)
            out[key + INT8_SCALE_SUFFIX] = scale
        else:
            out[key] = value.half()
    return out


def dequantize_int8(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The float32 weights of a :func:`quantize_int8` state (other entries as they are)."""
    scales = {k[: -len(INT8_SCALE_SUFFIX)]: v for k, v in state.items() if k.endswith(INT8_SCALE_SUFFIX)}
    if not scales:
        return dict(state)
    out = {}
    for key, value in state.items():
        if key.endswith(INT8_SCALE_SUFFIX):
            continue
        if key in scales:
            scale = scales[key].float().reshape(-1, *([1] * (value.dim() - 1)))
            value = value.float() * scale
        out[key] = value
    return out


def save_checkpoint(
    path: str | os.PathLike,
    *,
    task: str,
    model_name: str,
    model_config: Mapping[str, Any] | Any,
    sample_rate: int,
    model: nn.Module | Mapping[str, torch.Tensor],
    train_config: Mapping[str, Any] | None = None,
    step: int = 0,
    metrics: Mapping[str, Any] | None = None,
) -> Path:
    """Write a voxsep checkpoint atomically (temp file + rename; a crash leaves no partial file).

    Args:
        path: output file (``.pt``).
        task: training task name ("separation", "enhancement", "vocoder", ...).
        model_name: registry name of the model class.
        model_config: the dict (or config dataclass) that rebuilds the model with
            :func:`build_model`.
        sample_rate: sample rate (Hz) the model works at.
        model: the model (a DDP wrapper is unwrapped) or its state dict.
        train_config: the resolved training config, stored for reference.
        step: optimizer steps taken.
        metrics: scalar metrics (floats or 0-d tensors).

    Returns:
        The path written.
    """
    metrics = {str(k): float(v) for k, v in (metrics or {}).items()}
    ckpt = {
        "format_version": FORMAT_VERSION,
        "task": str(task),
        "model_name": str(model_name),
        "model_config": config_to_dict(model_config),
        "sample_rate": int(sample_rate),
        "state_dict": _state_dict_of(model),
        "train_config": _to_plain(dict(train_config or {}), "train_config"),
        "step": int(step),
        "metrics": metrics,
        "versions": _versions(),
    }
    with atomic_output(path) as tmp:
        torch.save(ckpt, tmp)
    return Path(path)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a voxsep checkpoint safely (``weights_only=True``, tensors on the CPU).

    Raises:
        VoxsepError: one line naming the file when it is missing, truncated, corrupt, a Lightning
            training checkpoint, or not in voxsep format ``FORMAT_VERSION``.

    Returns:
        The checkpoint dict, with an added ``"path"`` key (the file read).
    """
    path = Path(path)
    if not path.is_file():
        raise VoxsepError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's weights-only refusal: the file holds pickled objects, not plain data
        lines = [line.strip() for line in str(err).splitlines() if "WeightsUnpickler error" in line]
        reason = lines[0].split(". ")[0][:160] if lines else "truncated or corrupt file"
        raise VoxsepError(f"{path}: not a readable checkpoint: {reason}") from None
    except Exception as err:  # noqa: BLE001  (any deserialisation failure: RuntimeError, EOFError, KeyError...)
        detail = (str(err).strip().split(". ")[0].splitlines() or [type(err).__name__])[0][:120]
        raise VoxsepError(f"{path}: not a readable checkpoint: truncated or corrupt file ({detail})") from None
    if not isinstance(ckpt, dict):
        raise VoxsepError(f"{path}: not a voxsep checkpoint (holds a {type(ckpt).__name__}, not a dict)")
    if "pytorch-lightning_version" in ckpt or "lightning_version" in ckpt:
        raise VoxsepError(
            f"{path}: this is a Lightning training-state checkpoint (for resuming); "
            "use last.pt or best.pt from the same run folder"
        )
    version = ckpt.get("format_version")
    if version != FORMAT_VERSION:
        if isinstance(version, int) and version > FORMAT_VERSION:
            raise VoxsepError(
                f"{path}: checkpoint format {version} is newer than this voxsep reads ({FORMAT_VERSION}); "
                "upgrade voxsep"
            )
        raise VoxsepError(f"{path}: not a voxsep checkpoint (format_version {version!r}, expected {FORMAT_VERSION})")
    missing = [k for k in CHECKPOINT_KEYS if k not in ckpt]
    if missing:
        raise VoxsepError(f"{path}: not a voxsep checkpoint (missing keys: {', '.join(missing)})")
    if isinstance(ckpt["state_dict"], Mapping):  # int8 weights (voxsep export --int8) load as float32
        ckpt["state_dict"] = dequantize_int8(ckpt["state_dict"])
    ckpt["path"] = str(path)
    return ckpt


def model_from_checkpoint(ckpt: Mapping[str, Any] | str | os.PathLike, strict: bool = True) -> nn.Module:
    """Rebuild the model stored in ``ckpt`` (a loaded dict or a path), load its weights, eval mode.

    The model's class must be registered (import its module first: ``voxsep.registry.load_model``
    does that for the bundled tasks).

    Raises:
        VoxsepError: unknown model name or weights that do not fit the rebuilt model.
    """
    if not isinstance(ckpt, Mapping):
        ckpt = load_checkpoint(ckpt)
    where = ckpt.get("path", "checkpoint")
    try:
        model = build_model(ckpt["model_name"], ckpt["model_config"])
    except VoxsepError as err:
        raise VoxsepError(f"{where}: {err}") from None
    try:
        model.load_state_dict(ckpt["state_dict"], strict=strict)
    except RuntimeError as err:
        reason = " ".join(str(err).split())[:300]
        raise VoxsepError(f"{where}: weights do not fit model {ckpt['model_name']!r}: {reason}") from None
    return model.eval()
