"""Train any :class:`engine.task.Task` with PyTorch Lightning; auto-resume from the run folder.

A run folder holds (all files written atomically: temp file + rename)::

    config.yaml     the resolved config (after overrides and defaults)
    last.ckpt       Lightning's resumable training state (model, optimizer, scheduler, loops)
    last.pt         the model at the last checkpoint, in the plain voxsep format
    best.pt         the model with the best validation ``trainer.monitor`` (default: val loss)
    history.jsonl   one line per epoch (metrics, lr, time), plus "start"/"resume" events
    logs/version_N/metrics.csv   Lightning's CSV log (and TensorBoard under tb/ if installed)

Resumable state (``last.ckpt`` + ``last.pt``) is saved every ``trainer.checkpoint_every_minutes``
of training (default 5) and at the end of every epoch, with no setting needed, so that a run killed
with SIGKILL loses at most a few minutes. History lines carry ``cpu_s``: the CPU seconds the run has
used (this process and its finished children, summed over resumed segments), so that quality can be
plotted against training compute.

With ``trainer.ema_decay`` (e.g. 0.999) the run keeps an exponential moving average of the
weights: validation, ``best.pt`` and ``last.pt`` use the average (training goes on with the raw
weights; both are in ``last.ckpt``).

``init_from`` (config top level) starts a new run from the weights of voxsep checkpoints with a
fresh optimizer: ``PATH`` loads every matching key, ``PART=PATH`` only the keys under ``PART.``
(e.g. ``counter=runs/count/best.pt``); later entries override earlier ones. Keys whose shapes
differ are an error; keys the model lacks, or that no checkpoint gives, are listed in the history.
A model may initialise the keys no checkpoint gave (``init_missing``): a separator whose BLSTM
trunk has more layers than its checkpoint starts with the new layers nearly silent, so it computes
what the checkpoint did (``model.config.trunk.n_layers=4 init_from=CKPT`` deepens a 3-layer run);
one whose BLSTM trunk is wider than its checkpoint's gets the checkpoint's weights widened with the
same function (``model.config.trunk.hidden_size=384`` widens a 256-unit run: the model's
``upgrade_state_dict``); a WaveNet denoiser given more dilation cycles than its checkpoint starts
with the new layers silent (``model.config.wavenet.n_cycles=3`` deepens a 2-cycle run), and a
separator given ``model.config.head_rnn`` starts its per-count head blocks as the identity.

Re-running the same command with the same ``run_dir`` resumes from ``last.ckpt``. It refuses
(``VoxsepError``) when the resolved config changed in a way that matters: anything except the
keys in :data:`engine.config.RESUMABLE_CHANGES` (run length, workers, devices/strategy,
precision, logging and checkpoint intervals), i.e. the task, model, data, optimizer, scheduler,
batch size, seed or the number of training batches per epoch. Precision may change because the
accelerator may: a run started on a GPU in ``16-mixed`` goes on on a CPU in ``32`` or
``bf16-mixed`` (the weights and the optimizer's state are float32 in every mode). A finished run re-run does no more steps.
A run stopped by ``trainer.max_time_minutes`` ends its current epoch early (Lightning's rule);
re-running with a larger limit (an allowed change) goes on with the next epoch.

DDP: ``trainer.strategy: ddp`` with ``trainer.devices: N`` runs N processes (gloo on CPU). Lightning
starts the extra processes by re-running the current command, so call :func:`train` from a
script or ``voxsep train``, not from an interactive session or a test process.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import resource
import sys
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.plugins import TorchCheckpointIO
from pytorch_lightning.strategies import DDPStrategy
from pytorch_lightning.utilities import rank_zero_only
from torch import nn
from torch.utils.data import DataLoader

from engine.checkpoint import config_to_dict, load_checkpoint, save_checkpoint
from engine.config import check_resumable, read_yaml, resolve_config, save_config
from engine.task import Task, get_task
from frontend import atomic_output
from frontend.errors import VoxsepError

LAST_CKPT = "last.ckpt"
LAST_PT = "last.pt"
BEST_PT = "best.pt"
HISTORY = "history.jsonl"
CONFIG = "config.yaml"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O that writes to a temporary file and renames it into place.

    A process killed at any moment leaves either the previous complete checkpoint or the new
    one, never a truncated file (``os.replace`` is atomic on POSIX file systems).
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        with atomic_output(path) as tmp:
            torch.save(checkpoint, tmp)


class EpochAverages:
    """Batch-size-weighted means of per-batch metrics over an epoch, pooled over DDP processes.

    Processes may report different keys (a metric defined only for some batches): each key is
    averaged over the batches that have it. One ``all_gather_object`` per epoch, instead of one
    collective per key that would hang when the key sets differ.
    """

    def __init__(self) -> None:
        self.sums: dict[str, list[float]] = {}

    def add(self, metrics: Mapping[str, Any], weight: float) -> None:
        for key, value in metrics.items():
            total = self.sums.setdefault(key, [0.0, 0.0])
            total[0] += float(value) * weight
            total[1] += weight

    def reduce(self) -> dict[str, float]:
        """The epoch means (same on every process); resets the sums."""
        sums, self.sums = self.sums, {}
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            parts: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(parts, sums)
            sums = {}
            for part in parts:
                for key, (value, weight) in part.items():
                    total = sums.setdefault(key, [0.0, 0.0])
                    total[0] += value
                    total[1] += weight
        return {key: value / weight for key, (value, weight) in sorted(sums.items()) if weight > 0}


class TaskModule(pl.LightningModule):
    """A (task, model) pair as a LightningModule: the task computes losses, the model is trained.

    Per-step training values are logged as ``train/KEY``; epoch means as ``train/KEY_epoch`` and
    ``val/KEY`` (pooled over DDP processes by :class:`EpochAverages`).
    """

    def __init__(self, task: Task, model: nn.Module, config: Mapping[str, Any], monitor_key: str):
        super().__init__()
        self.task = task
        self.model = model
        self.config = dict(config)
        self.monitor_key = monitor_key
        self._train_avg = EpochAverages()
        self._val_avg = EpochAverages()
        self._train_epoch: tuple[int, dict[str, float]] | None = None
        #: (epoch, pooled validation means) of the latest validation run
        self.last_validation: tuple[int, dict[str, float]] | None = None

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss, logs = self.task.loss(self.model, batch)
        if not torch.isfinite(loss.detach()).all():
            # stop before the weights turn to NaN; last.ckpt still holds the last good state
            raise VoxsepError(
                f"{self.config['run_dir']}: training loss is {loss.item()} at step {self.global_step} "
                f"(epoch {self.current_epoch}); lower optim.lr or set optim.grad_clip, then re-run to resume"
            )
        size = self.task.batch_size(batch)
        values = {**{k: float(v) for k, v in logs.items()}, "loss": float(loss.detach())}
        self._train_avg.add(values, size)
        for key, value in values.items():
            self.log(f"train/{key}", value, on_step=True, on_epoch=False, prog_bar=key == "loss", batch_size=size)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        metrics = {k: float(v) for k, v in self.task.validation_metrics(self.model, batch).items()}
        if "loss" not in metrics:
            metrics["loss"] = float(self.task.loss(self.model, batch)[0])
        self._val_avg.add(metrics, self.task.batch_size(batch))

    def on_validation_epoch_end(self) -> None:
        means = self._val_avg.reduce()
        for key, value in means.items():
            self.log(f"val/{key}", value, on_epoch=True, prog_bar=key == "loss")
        if not self.trainer.sanity_checking:
            self.last_validation = (self.current_epoch, means)

    def finish_train_epoch(self) -> dict[str, float]:
        """Pool and log this epoch's training means (collective under DDP; once per epoch)."""
        if self._train_epoch is None or self._train_epoch[0] != self.current_epoch:
            means = self._train_avg.reduce()
            for key, value in means.items():
                self.log(f"train/{key}_epoch", value, on_epoch=True)
            self._train_epoch = (self.current_epoch, means)
        return self._train_epoch[1]

    def on_train_epoch_start(self) -> None:
        # datasets that draw new examples per epoch (dynamic mixing) expose set_epoch(epoch)
        dataset = getattr(self.trainer.train_dataloader, "dataset", None)
        if callable(getattr(dataset, "set_epoch", None)):
            dataset.set_epoch(self.current_epoch)

    def configure_optimizers(self) -> Any:
        # parts a task froze (requires_grad False) are left out
        params = [p for p in self.model.parameters() if p.requires_grad]
        return build_optimizer(params, self.config, self.monitor_key)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["voxsep_config"] = self.config


def _monitor_key(config: Mapping[str, Any], has_validation: bool) -> str:
    monitor = config["trainer"]["monitor"]
    return f"val/{monitor}" if has_validation else f"train/{monitor}_epoch"


def build_optimizer(params: Any, config: Mapping[str, Any], monitor_key: str) -> Any:
    """The optimizer (and scheduler) of ``config["optim"]`` in Lightning's ``configure_optimizers`` form."""
    optim = config["optim"]
    if optim["optimizer"] == "sgd":
        optimizer = torch.optim.SGD(params, lr=optim["lr"], momentum=optim["momentum"], weight_decay=optim["weight_decay"])
    else:
        cls = torch.optim.Adam if optim["optimizer"] == "adam" else torch.optim.AdamW
        optimizer = cls(params, lr=optim["lr"], betas=tuple(optim["betas"]), weight_decay=optim["weight_decay"])
    sched = optim["scheduler"]
    if sched["name"] == "none":
        return optimizer
    if sched["name"] == "step":
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=sched["step_size"], gamma=sched["gamma"])
    elif sched["name"] == "cosine":
        t_max = sched["t_max"] or config["trainer"]["max_epochs"]
        if t_max < 1:
            raise VoxsepError("optim.scheduler.t_max must be set when trainer.max_epochs is not")
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=t_max, eta_min=sched["eta_min"])
    elif sched["name"] == "cosine_steps":
        t_max = sched["t_max"] or config["trainer"]["max_steps"]
        if t_max < 1:
            raise VoxsepError("optim.scheduler.t_max (steps) must be set when trainer.max_steps is not")
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=t_max, eta_min=sched["eta_min"])
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
    else:  # plateau
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode=config["trainer"]["monitor_mode"], factor=sched["factor"],
            patience=sched["patience"], min_lr=sched["min_lr"],
        )
        return {"optimizer": optimizer, "lr_scheduler": {
            "scheduler": scheduler, "interval": "epoch", "monitor": monitor_key, "strict": False}}
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


def _scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, (int, float)) and math.isfinite(value):
            out[key] = float(value)
    return out


def _model_config(model: nn.Module, config: Mapping[str, Any]) -> dict:
    """The config that rebuilds ``model``: its ``get_config()`` or its own ``.config`` (defaults
    filled in) if it has one."""
    get_config = getattr(model, "get_config", None)
    own = get_config() if callable(get_config) else getattr(model, "config", None)
    if own is not None:
        with contextlib.suppress(TypeError):
            return config_to_dict(own)
    return dict(config["model"]["config"])


def read_history(run_dir: str | os.PathLike) -> list[dict]:
    """The records of ``run_dir/history.jsonl`` (a torn last line from a crash is skipped)."""
    path = Path(run_dir) / HISTORY
    records = []
    if path.is_file():
        for line in path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                records.append(json.loads(line))
    return records


class RunFiles(pl.Callback):
    """Writes the plain-format ``last.pt``/``best.pt`` and ``history.jsonl`` (global rank 0 only).

    The best value survives a resume: it is part of this callback's state in ``last.ckpt``.
    """

    def __init__(self, run_dir: Path, config: Mapping[str, Any], task: Task, monitor_key: str):
        self.run_dir = run_dir
        self.config = config
        self.task = task
        self.monitor_key = monitor_key
        self.mode = config["trainer"]["monitor_mode"]
        self.best: float | None = None
        self.best_step = -1
        self._start = time.monotonic()
        self._epoch_lr: float | None = None
        #: CPU seconds of earlier segments of this run (restored from last.ckpt on resume)
        self.cpu_before = 0.0
        self._cpu_start = process_cpu_seconds()
        interval = config["trainer"].get("checkpoint_every_minutes")
        self.save_interval_s = float(interval) * 60 if interval else None
        self.save_every_steps = config["trainer"].get("checkpoint_every_n_steps")
        self._last_save = time.monotonic()
        self.init_report: dict[str, Any] | None = None
        decay = config["trainer"].get("ema_decay")
        self.ema_decay = float(decay) if decay else None
        #: exponential moving average of the weights (``trainer.ema_decay``), or None
        self.ema: dict[str, torch.Tensor] | None = None
        self._raw: dict[str, torch.Tensor] | None = None  # trained weights while the average is swapped in

    # -- weight averaging
    def _update_ema(self, model: nn.Module, step: int) -> None:
        """EMA of the weights, with the usual warm-up (decay ``min(d, (1 + step) / (10 + step))``).

        Frozen parameters (``requires_grad`` off, e.g. a trunk under ``task_options.freeze``) are
        copied, not averaged: averaging a constant rounds it, and a counter trained on a frozen
        separator must keep that separator's exact weights (``voxsep export`` checks them)."""
        decay = min(self.ema_decay, (1 + step) / (10 + step))
        state = model.state_dict()
        if self.ema is None:
            self.ema = {k: v.detach().clone() for k, v in state.items()}
            return
        frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
        with torch.no_grad():
            for key, value in state.items():
                if value.is_floating_point() and key not in frozen:
                    self.ema[key].mul_(decay).add_(value.detach(), alpha=1 - decay)
                else:
                    self.ema[key].copy_(value)

    def _swap_in(self, model: nn.Module) -> None:
        if self.ema is not None and self._raw is None:
            self._raw = {k: v.detach().clone() for k, v in model.state_dict().items()}
            model.load_state_dict(self.ema)

    def _swap_out(self, model: nn.Module) -> None:
        if self._raw is not None:
            model.load_state_dict(self._raw)
            self._raw = None

    def _weights(self, model: nn.Module) -> nn.Module | dict[str, torch.Tensor]:
        """What last.pt/best.pt hold: the averaged weights when averaging, else the model's."""
        return self.ema if (self.ema is not None and self._raw is None) else model

    def cpu_seconds(self) -> float:
        """CPU seconds used by this run so far, over every resumed segment."""
        return self.cpu_before + process_cpu_seconds() - self._cpu_start

    # -- state kept in last.ckpt
    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_step": self.best_step, "cpu_s": self.cpu_seconds(), "ema": self.ema}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = state_dict.get("best")
        self.best_step = state_dict.get("best_step", -1)
        if self.ema_decay is not None and state_dict.get("ema") is not None:
            self.ema = {k: v.clone() for k, v in state_dict["ema"].items()}
        self.cpu_before = float(state_dict.get("cpu_s", 0.0))
        self._cpu_start = process_cpu_seconds()

    # -- helpers
    def _save(self, name: str, trainer: pl.Trainer, pl_module: TaskModule, extra: Mapping[str, float] = ()) -> None:
        metrics = {**_scalars(trainer.callback_metrics), **dict(extra), "cpu_s": round(self.cpu_seconds(), 1)}
        save_checkpoint(
            self.run_dir / name, task=self.task.checkpoint_task or self.task.name, model_name=self.config["model"]["name"],
            model_config=_model_config(pl_module.model, self.config), sample_rate=self.config["sample_rate"],
            model=self._weights(pl_module.model), train_config=self.config, step=trainer.global_step,
            metrics=metrics,
        )

    def _append(self, record: Mapping[str, Any]) -> None:
        with open(self.run_dir / HISTORY, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def _maybe_best(self, trainer: pl.Trainer, pl_module: TaskModule) -> None:
        value = trainer.callback_metrics.get(self.monitor_key)
        if value is None:
            return
        value = float(value)
        better = self.best is None or (value < self.best if self.mode == "min" else value > self.best)
        if math.isfinite(value) and better:
            self.best, self.best_step = value, trainer.global_step
            if trainer.is_global_zero:
                self._save(BEST_PT, trainer, pl_module, {f"best/{self.monitor_key}": value})

    # -- hooks
    def on_train_start(self, trainer: pl.Trainer, pl_module: TaskModule) -> None:
        if not trainer.is_global_zero:
            return
        event = "resume" if trainer.ckpt_path else "start"
        if trainer.ckpt_path:
            # drop epochs logged after the checkpoint we resume from (a crash between the two)
            kept = [r for r in read_history(self.run_dir) if r.get("step", 0) <= trainer.global_step]
            with atomic_output(self.run_dir / HISTORY) as tmp:
                tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        record = {"event": event, "epoch": trainer.current_epoch, "step": trainer.global_step,
                  "world_size": trainer.world_size, "time": time.time(), "cpu_s": round(self.cpu_seconds(), 1)}
        if event == "start" and self.init_report is not None:
            record["init_from"] = self.init_report
        self._append(record)

    def save_resumable(self, trainer: pl.Trainer) -> None:
        """Write ``last.ckpt`` (and, through :meth:`on_save_checkpoint`, ``last.pt``); every process
        takes part (rank 0 writes)."""
        trainer.save_checkpoint(self.run_dir / LAST_CKPT, weights_only=False)
        self._last_save = time.monotonic()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: TaskModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.ema_decay is not None:
            self._update_ema(pl_module.model, trainer.global_step)
        if self.save_every_steps and trainer.global_step % self.save_every_steps == 0:
            self.save_resumable(trainer)
            return
        if self.save_interval_s is None:
            return
        due = time.monotonic() - self._last_save >= self.save_interval_s
        if trainer.world_size > 1:  # every process must take part in the save: rank 0 decides
            due = bool(trainer.strategy.broadcast(due, src=0))
        if due:
            self.save_resumable(trainer)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: TaskModule) -> None:
        # Lightning steps epoch schedulers before on_train_epoch_end: note the lr this epoch uses now
        self._epoch_lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else None

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: TaskModule) -> None:
        self._swap_in(pl_module.model)  # validate (and keep as best) the averaged weights

    def on_validation_end(self, trainer: pl.Trainer, pl_module: TaskModule) -> None:
        if not trainer.sanity_checking:
            self._maybe_best(trainer, pl_module)
        self._swap_out(pl_module.model)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: TaskModule) -> None:
        train_means = pl_module.finish_train_epoch()  # every process: pools over DDP
        if self.monitor_key.startswith("train/"):
            self._maybe_best(trainer, pl_module)
        if trainer.is_global_zero:
            self._log_epoch(trainer, pl_module, train_means)
        # resumable state at the end of every epoch (unless the step interval just saved it)
        if not (self.save_every_steps and trainer.global_step % self.save_every_steps == 0):
            self.save_resumable(trainer)

    def _log_epoch(self, trainer: pl.Trainer, pl_module: TaskModule, train_means: Mapping[str, float]) -> None:
        metrics = {f"train/{k}": v for k, v in train_means.items()}
        if pl_module.last_validation is not None and pl_module.last_validation[0] == trainer.current_epoch:
            metrics.update({f"val/{k}": v for k, v in pl_module.last_validation[1].items()})
        self._append({"epoch": trainer.current_epoch, "step": trainer.global_step, "lr": self._epoch_lr,
                      "elapsed_s": round(time.monotonic() - self._start, 3),
                      "cpu_s": round(self.cpu_seconds(), 1), **metrics})

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: TaskModule, checkpoint: dict[str, Any]) -> None:
        self._last_save = time.monotonic()
        if trainer.is_global_zero:
            self._save(LAST_PT, trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: TaskModule) -> None:
        # the final state, whatever the checkpoint interval: a re-run then does no more steps
        trainer.save_checkpoint(self.run_dir / LAST_CKPT, weights_only=False)
        if self.best is None and trainer.is_global_zero:  # nothing monitored (no epoch finished)
            self._save(BEST_PT, trainer, pl_module)


def process_cpu_seconds() -> float:
    """User + system CPU seconds of this process and its finished children (DataLoader workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _init_spec(spec: str) -> tuple[str, str]:
    """``"PART=PATH"`` -> ``(PART, PATH)``; a plain path -> ``("", PATH)``."""
    part, sep, path = spec.partition("=")
    if sep and part and "/" not in part and os.sep not in part and not Path(spec).exists():
        return part.strip("."), path
    return "", spec


def init_weights(model: nn.Module, specs: list[str]) -> dict[str, Any]:
    """Load weights from voxsep checkpoints into ``model`` (``init_from``; see the module docstring).

    Returns:
        ``{"sources": [...], "loaded": n_keys, "missing": [keys nobody gave], "ignored": [keys the
        model lacks]}``, plus what the model's ``init_missing`` did with the missing keys.

    Raises:
        VoxsepError: an unreadable checkpoint, a part no checkpoint holds, or a shape mismatch.
    """
    own = model.state_dict()
    upgrade = getattr(model, "upgrade_state_dict", None)
    loaded: dict[str, torch.Tensor] = {}
    ignored: list[str] = []
    for spec in specs:
        part, path = _init_spec(spec)
        state = load_checkpoint(path)["state_dict"]
        if callable(upgrade):
            state = upgrade(state)
        prefix = f"{part}." if part else ""
        chosen = {k: v for k, v in state.items() if k.startswith(prefix)}
        if not chosen:
            raise VoxsepError(f"{path}: init_from part {part!r} holds no weights")
        for key, value in chosen.items():
            if key not in own:
                ignored.append(key)
                continue
            if tuple(value.shape) != tuple(own[key].shape):
                raise VoxsepError(f"{path}: init_from weight {key} has shape {tuple(value.shape)}, "
                                  f"the model's is {tuple(own[key].shape)}")
            loaded[key] = value
    model.load_state_dict({**own, **loaded})
    missing = set(own) - set(loaded)
    report = {"sources": list(specs), "loaded": len(loaded), "missing": sorted(missing), "ignored": sorted(set(ignored))}
    if ignored and is_global_rank_zero():
        # e.g. a 4-layer trunk into a 3-layer config: the loaded model is not the checkpoint's
        groups = sorted({".".join(k.split(".")[:3]) for k in ignored})
        shown = ", ".join(groups[:4]) + (f" and {len(groups) - 4} more" if len(groups) > 4 else "")
        print(f"voxsep: note: init_from: the model has no place for {len(set(ignored))} checkpoint weights "
              f"({shown}): they are not loaded", file=sys.stderr)
    init_missing = getattr(model, "init_missing", None)
    if loaded and missing and callable(init_missing):
        report.update(init_missing(missing))
    return report


def is_global_rank_zero() -> bool:
    """True in the main process; False in the DDP workers Lightning starts (RANK/LOCAL_RANK/SLURM_PROCID)."""
    return rank_zero_only.rank == 0


def _loaders(task: Task, config: Mapping[str, Any]) -> tuple[DataLoader, DataLoader | None]:
    trainer_cfg = config["trainer"]
    train_ds, valid_ds = task.build_datasets(config["data"], config["sample_rate"])
    if len(train_ds) == 0:
        raise VoxsepError(f"task {task.name}: the training set is empty (data: {config['data']})")
    workers = trainer_cfg["num_workers"]
    common = {
        "batch_size": trainer_cfg["batch_size"], "num_workers": workers, "collate_fn": task.collate,
        "pin_memory": trainer_cfg["accelerator"] != "cpu" and torch.cuda.is_available(),
    }
    # workers that live across epochs would never see set_epoch() called in the main process
    per_epoch = callable(getattr(train_ds, "set_epoch", None))
    train_loader = DataLoader(train_ds, shuffle=True, drop_last=False, persistent_workers=workers > 0 and not per_epoch,
                              **common)
    valid_loader = (DataLoader(valid_ds, shuffle=False, persistent_workers=workers > 0, **common)
                    if valid_ds is not None and len(valid_ds) else None)
    return train_loader, valid_loader


def _check_lightning_checkpoint(path: Path) -> None:
    """Fail with one line (not Lightning's traceback) if the checkpoint to resume from is unreadable."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001  (any deserialisation failure)
        detail = (str(err).strip().split(". ")[0].splitlines() or [type(err).__name__])[0][:120]
        raise VoxsepError(f"{path}: cannot resume from it ({detail}); delete it to start the run over") from None
    if not isinstance(state, dict) or "loops" not in state:
        raise VoxsepError(f"{path}: not a Lightning training checkpoint; delete it to start the run over")


def _remove_stale_temps(run_dir: Path) -> None:
    """Delete temp files a killed process left behind (atomic_output names them ``.NAME.*.part.EXT``)."""
    for path in run_dir.glob(".*.part.*"):
        with contextlib.suppress(OSError):
            path.unlink()


def train(config: Mapping[str, Any]) -> Path:
    """Train ``config`` (raw or resolved; see :mod:`engine.config`) and return the run folder.

    Resumes from ``run_dir/last.ckpt`` when it exists (see the module docstring).

    Raises:
        VoxsepError: invalid config, unknown task/model, a config change that blocks resuming.
    """
    config = resolve_config(config)
    run_dir = Path(config["run_dir"])
    trainer_cfg = config["trainer"]
    last_ckpt = run_dir / LAST_CKPT
    resume = last_ckpt.is_file()
    if resume:
        if (run_dir / CONFIG).is_file():
            check_resumable(read_yaml(run_dir / CONFIG), config, run_dir / CONFIG)
        _check_lightning_checkpoint(last_ckpt)
    # build everything that can fail on user input before the run folder is written
    pl.seed_everything(trainer_cfg["seed"], workers=True, verbose=False)
    task = get_task(config["task"], config["task_options"])
    model = task.build_model(config["model"]["name"], config["model"]["config"])
    init_report = init_weights(model, config["init_from"]) if config.get("init_from") and not resume else None
    train_loader, valid_loader = _loaders(task, config)
    if is_global_rank_zero():
        run_dir.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(run_dir)
        save_config(config, run_dir / CONFIG)

    loggers: list[Any] = [CSVLogger(run_dir, name="logs")]
    with contextlib.suppress(ImportError, ModuleNotFoundError):
        import tensorboard  # noqa: F401  (optional)
        from pytorch_lightning.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(run_dir, name="tb"))
    max_time = trainer_cfg["max_time_minutes"]
    limit_val = trainer_cfg["limit_val_batches"]
    monitor_key = _monitor_key(config, valid_loader is not None and limit_val != 0)
    strategy = trainer_cfg["strategy"]
    if strategy == "ddp":
        strategy = DDPStrategy(find_unused_parameters=task.find_unused_parameters)
    run_files = RunFiles(run_dir, config, task, monitor_key)
    run_files.init_report = init_report
    trainer = pl.Trainer(
        accelerator=trainer_cfg["accelerator"], devices=trainer_cfg["devices"], strategy=strategy,
        precision=trainer_cfg["precision"], max_epochs=trainer_cfg["max_epochs"], max_steps=trainer_cfg["max_steps"],
        max_time={"minutes": max_time} if max_time is not None else None,
        check_val_every_n_epoch=trainer_cfg["val_every_n_epochs"],
        limit_train_batches=trainer_cfg["limit_train_batches"],
        limit_val_batches=limit_val if valid_loader is not None else 0,
        log_every_n_steps=trainer_cfg["log_every_n_steps"], gradient_clip_val=config["optim"]["grad_clip"],
        callbacks=[run_files], logger=loggers, enable_checkpointing=False,
        plugins=[AtomicCheckpointIO()], enable_progress_bar=trainer_cfg["progress_bar"],
        default_root_dir=run_dir, num_sanity_val_steps=0,
    )
    module = TaskModule(task, model, config, monitor_key)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*number of training batches.*log_every_n_steps.*")
        # epoch means are pooled over processes by EpochAverages, not by Lightning's sync_dist
        warnings.filterwarnings("ignore", message=".*sync_dist=True.*")
        # Lightning's progress bar and summaries go to stdout; stdout is kept for the result
        with contextlib.redirect_stdout(sys.stderr):
            trainer.fit(module, train_loader, valid_loader, ckpt_path=str(last_ckpt) if resume else None)
    return run_dir
