"""Deployable checkpoints: a separator with a separately trained counter, portable paths.

:func:`export_separator` writes one checkpoint from the best separator of a training run and,
optionally, the counter of another run (the ``counting`` task trains the counter on its own).
The stored ``train_config`` keeps no path of the machine it was trained on: absolute paths and
paths that climb out of the repository (``../shared/speech``) become ``DATA/...`` placeholders,
run folders ``RUN/...`` (see :func:`portable`).
"""
from __future__ import annotations

import os
import re
from typing import Any

from engine.checkpoint import build_model, load_checkpoint, save_checkpoint
from frontend.errors import VoxsepError
from separation import model as _separation_model  # noqa: F401  (registers "multihead")

#: keys of a config whose string values are paths
_PATH_HINT = re.compile(r"(path|paths|dir|manifest|manifests|utterances|files|init_from|root|speech)$")


def portable_path(value: str) -> str:
    """A path without its machine: ``/abs/.../speech/manifest.csv`` -> ``DATA/speech/manifest.csv``,
    ``../shared/noise`` -> ``DATA/noise``, ``runs/x/best.pt`` -> ``RUN/x/best.pt``; other relative
    paths are kept."""
    p = value.replace("\\", "/")
    if p.startswith("runs/"):
        return "RUN/" + p[len("runs/"):]
    parts = [x for x in p.split("/") if x not in ("", ".")]
    if p.startswith("/") or p.startswith(".."):
        kept = [x for x in parts if x != ".."]
        for marker in ("shared", "data", "work"):
            if marker in kept[:-1]:
                kept = kept[len(kept) - kept[::-1].index(marker):]
        return "DATA/" + "/".join(kept[-2:] if len(kept) > 2 else kept)
    return value


def portable(config: Any, key: str = "") -> Any:
    """``config`` with every path-valued string made portable (:func:`portable_path`)."""
    if isinstance(config, dict):
        return {k: portable(v, str(k)) for k, v in config.items()}
    if isinstance(config, list):
        return [portable(v, key) for v in config]
    if isinstance(config, str) and (_PATH_HINT.search(key) or key == "") and ("/" in config or os.sep in config):
        return portable_path(config)
    return config


def export_separator(model: str | os.PathLike, out: str | os.PathLike, counter: str | os.PathLike | None = None,
                     metrics: dict[str, float] | None = None, half: bool = False) -> dict:
    """Write ``out``: the separator checkpoint ``model`` with, if given, the counter of checkpoint
    ``counter`` (both ``multihead`` models with the same ``max_speakers``), portable paths and the
    given extra ``metrics``; ``half`` stores the weights as float16 (half the size; they load into
    the float32 model). Returns the written checkpoint dict.

    Raises:
        VoxsepError: unreadable checkpoints, models that are not ``multihead``, mismatched counts.
    """
    base = load_checkpoint(model)
    if base["model_name"] != "multihead":
        raise VoxsepError(f"{model}: export takes a 'multihead' separator, got {base['model_name']!r}")
    config = dict(base["model_config"])
    state = dict(base["state_dict"])
    base_metrics = dict(base.get("metrics", {}))
    sources = {"separator": portable_path(os.fspath(model)), "separator_step": base["step"]}
    if counter is not None:
        other = load_checkpoint(counter)
        if other["model_name"] != "multihead":
            raise VoxsepError(f"{counter}: the counter must come from a 'multihead' checkpoint")
        oc = other["model_config"]
        for key in ("max_speakers", "count_no_speech", "sample_rate"):
            if oc.get(key) != config.get(key):
                raise VoxsepError(f"{counter}: its {key} is {oc.get(key)!r}, the separator's is {config.get(key)!r}")
        config["counter"] = oc["counter"]
        state = {k: v for k, v in state.items() if not k.startswith("counter.")}
        state.update({k: v for k, v in other["state_dict"].items() if k.startswith("counter.")})
        sources.update(counter=portable_path(os.fspath(counter)), counter_step=other["step"])
        # the separator run's count figures were its own count head's: keep the counter's instead
        base_metrics = {k: v for k, v in base_metrics.items() if "count" not in k}
        base_metrics.update({f"counter/{k}": v for k, v in other.get("metrics", {}).items()})
    built = build_model("multihead", config)
    missing, unexpected = built.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise VoxsepError(f"{model}: exported weights do not fit the model (missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]})")
    train_config = portable({**base.get("train_config", {}), "exported_from": sources})
    weights = {k: v.half() if half and v.is_floating_point() else v for k, v in built.state_dict().items()}
    save_checkpoint(out, task=base["task"], model_name="multihead", model_config=config,
                    sample_rate=base["sample_rate"], model=weights, train_config=train_config, step=base["step"],
                    metrics={**base_metrics, **(metrics or {})})
    return load_checkpoint(out)
