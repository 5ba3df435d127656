"""Deployable checkpoints: a separator with separately trained counters, portable paths.

:func:`export_separator` writes one checkpoint from the best separator of a training run and,
optionally, the counter of another run (the ``counting`` task trains the counter on its own).
The stored ``train_config`` keeps no path of the machine it was trained on: absolute paths and
paths that climb out of the repository (``../shared/speech``) become ``DATA/...`` placeholders,
run folders ``RUN/...`` (see :func:`portable`). :func:`export_checkpoint` does the same (paths,
float16) for a checkpoint of any other task. ``settings`` (``key.sub=value``, as training overrides)
change inference settings of the model config (a denoiser's ``mask_floor``, a separator's
``count_method``); the weights must still fit the model they build.
"""
from __future__ import annotations

import os
import re
from typing import Any

from engine.checkpoint import (build_model, dequantize_int8, load_checkpoint, model_class, quantize_int8,
                               save_checkpoint)
from engine.config import apply_overrides
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


def export_separator(model: str | os.PathLike, out: str | os.PathLike,
                     counter: str | os.PathLike | list[str | os.PathLike] | None = None,
                     metrics: dict[str, float] | None = None, half: bool = False,
                     calibrate: str | os.PathLike | list[str | os.PathLike] | None = None, l2: float | str = "auto",
                     progress: bool = False, settings: list[str] | None = None, int8: bool = False,
                     count_duration: bool = False) -> dict:
    """Write ``out``: the separator checkpoint ``model`` with, if given, the counter of checkpoint
    ``counter`` (both ``multihead`` models with the same ``max_speakers``), portable paths and the
    given extra ``metrics``; ``half`` stores the weights as float16 (half the size; they load into
    the float32 model); ``int8`` stores the weight matrices as int8 with a scale per row and the rest
    as float16 (a quarter of the float32 size; :func:`engine.checkpoint.quantize_int8`).

    With ``calibrate`` (a mixture manifest of ``voxsep mix``, or several), the counters are fused: a
    ``fusion`` counter whose members are the separator's own counter and those of ``counter`` (one
    checkpoint or a list; a fused counter brings its members, less those that read another
    separator's trunk);
    its combiner is fitted on the manifest's mixtures (:func:`separation.counters.fit_fusion`, L2
    weight ``l2``, or ``"auto"``: chosen by cross-validation on them, see :func:`calibrate_counter`);
    with ``count_duration`` the combiner also reads the mixture's duration (clipped to the range of
    the calibration mixtures; :class:`separation.counters.FusionCounter`). The manifest must hold
    every talker count; use held-back speakers, never the evaluation set. The combiner stays
    float32 with ``half``. ``settings`` change the model config (see the module docstring).
    Returns the written checkpoint dict.

    Raises:
        VoxsepError: unreadable checkpoints, models that are not ``multihead``, mismatched counts,
            a counter that reads another separator's trunk, several counters without ``calibrate``,
            a calibration set that misses a count, settings the model rejects or that change its weights.
    """
    if count_duration and calibrate is None:
        raise VoxsepError("--count-duration fits the fusion with the mixtures' durations: give --calibrate MANIFEST")
    base = load_checkpoint(model)
    if base["model_name"] != "multihead":
        if counter or calibrate is not None:
            raise VoxsepError(f"{model}: counters go with a 'multihead' separator, not a {base['model_name']!r} model")
        return export_checkpoint(model, out, metrics=metrics, half=half, settings=settings, int8=int8)
    config = _with_settings(base, settings, model)
    state = dict(base["state_dict"])
    base_metrics = dict(base.get("metrics", {}))
    sources = {"separator": portable_path(os.fspath(model)), "separator_step": base["step"]}
    if settings:
        sources["settings"] = list(settings)
    own = {k[len("counter."):]: v for k, v in state.items() if k.startswith("counter.")}
    members = _unpacked(config["counter"], own)
    if len(members) > 1 and calibrate is None:
        raise VoxsepError(f"{model}: its counter is a fusion; give --calibrate MANIFEST to fit it again")
    counters = [] if counter is None else [counter] if isinstance(counter, (str, os.PathLike)) else list(counter)
    if len(counters) > 1 and calibrate is None:
        raise VoxsepError("several counters are fused: give --calibrate MANIFEST to fit the fusion")
    for path in counters:
        other = load_checkpoint(path)
        if other["model_name"] != "multihead":
            raise VoxsepError(f"{path}: the counter must come from a 'multihead' checkpoint")
        oc = other["model_config"]
        for key in ("max_speakers", "count_no_speech", "sample_rate"):
            if oc.get(key) != config.get(key):
                raise VoxsepError(f"{path}: its {key} is {oc.get(key)!r}, the separator's is {config.get(key)!r}")
        theirs = {k[len("counter."):]: v for k, v in other["state_dict"].items() if k.startswith("counter.")}
        unpacked = _unpacked(oc["counter"], theirs)
        if len(unpacked) > 1 and calibrate is None:
            raise VoxsepError(f"{path}: its counter is a fusion; give --calibrate MANIFEST to fit it with this separator")
        if any(_reads_trunk(spec) for spec, _ in unpacked) and not _same_trunk(other, base):
            if len(unpacked) == 1:
                raise VoxsepError(f"{path}: its counter reads the trunk of another separator than {model}; train it "
                                  f"on this separator's trunk (task counting, init_from + freeze)")
            # a fused counter of another separator: keep the members that do not read its trunk
            unpacked = [(spec, w) for spec, w in unpacked if not _reads_trunk(spec)]
            if not unpacked:
                raise VoxsepError(f"{path}: every member of its counter reads the trunk of another separator than {model}")
        members = unpacked if calibrate is None else members + unpacked
        # the separator run's count figures were its own count head's: keep the counter's instead
        base_metrics = {k: v for k, v in base_metrics.items() if "count" not in k}
        base_metrics.update({f"counter/{k}": v for k, v in other.get("metrics", {}).items()})
        step = other["step"]
        if len(counters) == 1:
            sources.update(counter=portable_path(os.fspath(path)), counter_step=step)
        else:
            sources.setdefault("counters", []).append({"path": portable_path(os.fspath(path)), "step": step})
    state = {k: v for k, v in state.items() if not k.startswith("counter.")}
    if calibrate is None:
        config["counter"] = members[0][0]
        state.update({f"counter.{k}": v for k, v in members[0][1].items()})
    else:
        config["counter"] = {"type": "fusion", "members": [spec for spec, _ in members]}
        if count_duration:
            config["counter"]["duration"] = [1.0, 1.0]  # the calibration mixtures' range replaces it
        for i, (_, weights) in enumerate(members):
            state.update({f"counter.members.{i}.{k}": v for k, v in weights.items()})
    # fit (and check) the model that will be deployed: the stored weights, loaded as float32
    state = {k: v.float() if v.is_floating_point() else v
             for k, v in dequantize_int8(_stored(state, half, int8)).items()}
    built = build_model("multihead", config)
    missing, unexpected = built.load_state_dict(state, strict=False)
    if calibrate is not None:
        missing = [k for k in missing if not k.startswith("counter.combine.")]
    if missing or unexpected:
        raise VoxsepError(f"{model}: exported weights do not fit the model (missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]})")
    if calibrate is not None:
        fit = calibrate_counter(built, calibrate, base["sample_rate"], l2=l2, progress=progress)
        if count_duration:
            config["counter"]["duration"] = list(built.counter.config.duration)
        sets = [calibrate] if isinstance(calibrate, (str, os.PathLike)) else list(calibrate)
        sources.update(calibration=[portable_path(os.fspath(c)) for c in sets], calibration_l2=fit["calibration/l2"])
        base_metrics = {k: v for k, v in base_metrics.items() if "count" not in k}
        base_metrics.update(fit)
    train_config = portable({**base.get("train_config", {}), "exported_from": sources})
    weights = _stored(built.state_dict(), half, int8, keep=lambda key: key.startswith("counter.combine."))
    save_checkpoint(out, task=base["task"], model_name="multihead", model_config=config,
                    sample_rate=base["sample_rate"], model=weights, train_config=train_config, step=base["step"],
                    metrics={**base_metrics, **(metrics or {})})
    return load_checkpoint(out)


def export_checkpoint(model: str | os.PathLike, out: str | os.PathLike, metrics: dict[str, float] | None = None,
                      half: bool = False, settings: list[str] | None = None, int8: bool = False) -> dict:
    """Write ``out``: any voxsep checkpoint (a denoiser, a vocoder, ...) with portable paths in its
    stored training config, the given extra ``metrics``, float16 weights with ``half`` (int8 weight
    matrices with ``int8``) and the model config changed by ``settings``."""
    base = load_checkpoint(model)
    config = _with_settings(base, settings, model)
    weights = _stored(base["state_dict"], half, int8)
    sources = {"model": portable_path(os.fspath(model)), "step": base["step"]}
    if settings:
        sources["settings"] = list(settings)
    train_config = portable({**base.get("train_config", {}), "exported_from": sources})
    save_checkpoint(out, task=base["task"], model_name=base["model_name"], model_config=config,
                    sample_rate=base["sample_rate"], model=weights, train_config=train_config, step=base["step"],
                    metrics={**dict(base.get("metrics", {})), **(metrics or {})})
    return load_checkpoint(out)


def _stored(state: dict, half: bool, int8: bool, keep=lambda key: False) -> dict:
    """The weights as a checkpoint stores them: float16 with ``half``, int8 matrices with ``int8``
    (:func:`engine.checkpoint.quantize_int8`), else as they are; ``keep(key)`` stays as it is."""
    if half and int8:
        raise VoxsepError("give --half or --int8, not both")
    if int8:
        return quantize_int8(state, skip=keep)
    return {k: v.half() if half and v.is_floating_point() and not keep(k) else v for k, v in state.items()}


def _with_settings(base: dict, settings: list[str] | None, where: str | os.PathLike) -> dict:
    """The checkpoint's model config with ``settings`` applied, checked: the model builds from it and
    the checkpoint's weights fit it exactly."""
    config = dict(base["model_config"])
    if not settings:
        return config
    from voxsep.registry import import_model_class

    import_model_class(base["model_name"], base["task"])
    new = apply_overrides(config, settings)
    cls = model_class(base["model_name"])
    try:
        built = cls.from_config(new) if hasattr(cls, "from_config") else build_model(base["model_name"], new)
    except (TypeError, ValueError) as err:
        raise VoxsepError(f"{where}: --set {' '.join(settings)}: {err}") from None
    try:
        missing, unexpected = built.load_state_dict(base["state_dict"], strict=False)
        problem = f"missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}" if missing or unexpected else ""
    except RuntimeError:  # shapes differ
        problem = "their shapes differ"
    if problem:
        raise VoxsepError(f"{where}: --set {' '.join(settings)} changes the model's weights ({problem}); settings "
                          f"may only change how a trained model runs")
    return new


def _reads_trunk(spec: dict) -> bool:
    """Whether a counter spec reads the trunk's features (its weights then belong to that trunk)."""
    from separation.counters import COUNTERS

    if spec.get("type") == "fusion":
        return any(_reads_trunk(m) for m in spec.get("members", []))
    cls = COUNTERS.classes.get(spec.get("type"))
    return bool(getattr(cls, "needs_trunk", False))


def _same_trunk(other: dict, base: dict) -> bool:
    """Whether two checkpoints hold the same encoder and trunk weights (float16 copies of float32
    weights count as the same: an exported model against its run)."""
    import torch

    mine = {k: v for k, v in base["state_dict"].items() if k.startswith(("encoder.", "trunk."))}
    theirs = {k: v for k, v in other["state_dict"].items() if k.startswith(("encoder.", "trunk."))}

    def same(a, b):
        if a.shape != b.shape:
            return False
        if a.dtype == b.dtype:
            return torch.equal(a, b)
        return torch.equal(a.half().float(), b.half().float())

    return mine.keys() == theirs.keys() and all(same(mine[k], theirs[k]) for k in mine)


def _unpacked(spec: dict, weights: dict) -> list[tuple[dict, dict]]:
    """A counter as fusion members: ``[(spec, weights)]``, or a fusion's members (its combiner
    dropped: a new fusion is fitted)."""
    if spec.get("type") != "fusion":
        return [(spec, weights)]
    return [(member, {k[len(f"members.{i}."):]: v for k, v in weights.items() if k.startswith(f"members.{i}.")})
            for i, member in enumerate(spec["members"])]


def calibrate_counter(model, manifest: str | os.PathLike | list[str | os.PathLike], sample_rate: int,
                      l2: float | str = "auto", progress: bool = False) -> dict[str, float]:
    """Fit the combiner of ``model``'s ``fusion`` counter (in place) on the mixtures of
    ``manifest`` (one or several), one mixture at a time at full length. ``l2`` is the L2 weight of
    the fit, or ``"auto"``: the weight of :data:`separation.counters.L2_GRID` with the least held-out
    cross-entropy in ``CV_FOLDS``-fold cross-validation on the same mixtures (:func:`separation.counters.select_l2`).
    Returns the calibration figures: ``calibration/n``, ``calibration/l2`` (the weight used; with
    ``"auto"`` also ``calibration/cv_ce``, its held-out cross-entropy), the members' and the fused
    accuracy on the calibration set (``calibration/count_acc_member{i}``, ``calibration/count_acc``)."""
    import torch
    from tqdm import tqdm

    from separation.counters import CV_FOLDS, FusionCounter, fit_fusion, select_l2
    from separation.data import MixtureManifestDataset

    if not isinstance(model.counter, FusionCounter):
        raise VoxsepError("calibration needs a 'fusion' counter")
    data = MixtureManifestDataset(manifest, sample_rate=sample_rate)
    manifest = ", ".join(os.fspath(m) for m in ([manifest] if isinstance(manifest, (str, os.PathLike)) else manifest))
    offset, n_classes = model.count_offset, model.n_count_classes
    wanted = set(range(max(offset, 1), model.max_speakers + 1))
    present = {rec.n_src for rec in data.records}
    if offset == 0:
        raise VoxsepError(f"{manifest}: calibrating a counter with a 'no speech' class is not supported")
    if wanted - present:
        raise VoxsepError(f"{manifest}: the calibration set has no mixture of {sorted(wanted - present)} talkers "
                          f"(it needs every count 1..{model.max_speakers})")
    extra = sorted(present - wanted)
    if extra:
        raise VoxsepError(f"{manifest}: mixtures of {extra} talkers, the model counts 1..{model.max_speakers}")
    if l2 == "auto" and len(data) < CV_FOLDS:
        raise VoxsepError(f"{manifest}: {len(data)} calibration mixtures are too few to choose the L2 weight by "
                          f"{CV_FOLDS}-fold cross-validation (at least {CV_FOLDS}); give --l2 WEIGHT")
    model.eval()
    log_probs, seconds, labels = [], [], []
    with torch.no_grad():
        for i in tqdm(range(len(data)), desc="calibrating the counter", unit="mix", disable=not progress):
            item = data[i]
            mix = item["mix"][None].float()
            log_probs.append(model.counter.member_log_probs(*model.count_inputs(mix))[0])
            seconds.append(float(model.counter.seconds(mix, None)[0]))
            labels.append(int(item["n_src"]) - offset)
    if model.counter.config.duration is not None:
        # the combiner reads durations within the range it was fitted on
        model.counter.config.duration = [min(seconds), max(seconds)]
    x = model.counter.combiner_inputs(torch.stack(log_probs), torch.tensor(seconds))
    y = torch.tensor(labels)
    figures = {"calibration/n": float(len(y))}
    if l2 == "auto":
        l2, scores = select_l2(x, y, n_classes)
        figures["calibration/cv_ce"] = scores[l2]
    figures["calibration/l2"] = float(l2)
    weight, bias = fit_fusion(x, y, n_classes, l2=l2)
    with torch.no_grad():
        model.counter.combine.weight.copy_(weight)  # (the duration's columns, if any, follow the members')
        model.counter.combine.bias.copy_(bias)
        fused = model.counter.combine(x).argmax(-1)
    figures["calibration/count_acc"] = float((fused == y).float().mean())
    for m in range(len(model.counter.members)):
        own = x[:, m * n_classes:(m + 1) * n_classes].argmax(-1)
        figures[f"calibration/count_acc_member{m}"] = float((own == y).float().mean())
    return figures
