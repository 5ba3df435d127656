"""A toy regression task and model for the engine tests (importable by subprocesses and DDP workers).

y = x @ w_true + b_true + noise, learned by a linear model; the trainer must drive the loss
towards the noise variance.
"""
from __future__ import annotations

import dataclasses
import time

import torch
from torch import nn
from torch.utils.data import Dataset

from engine.checkpoint import register_model
from engine.task import Task, register_task


@register_model("toy_linear")
class ToyLinear(nn.Module):
    """A linear map ``(B, in_features) -> (B, out_features)``."""

    @dataclasses.dataclass
    class Config:
        in_features: int = 4
        out_features: int = 1
        extra_head: bool = False  # a second head that the "uneven" task uses only on DDP rank 0

    def __init__(self, config: "ToyLinear.Config"):
        super().__init__()
        self.config = config
        self.linear = nn.Linear(config.in_features, config.out_features)
        self.extra = nn.Linear(config.in_features, config.out_features) if config.extra_head else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class RegressionSet(Dataset):
    """``n`` fixed examples drawn with ``seed``; ``delay_s`` slows ``__getitem__`` (for kill tests)."""

    def __init__(self, n: int, dim: int, noise: float, seed: int, delay_s: float = 0.0):
        gen = torch.Generator().manual_seed(seed)
        weight = torch.linspace(-1.0, 1.0, dim)  # fixed "true" model shared by all splits
        self.x = torch.randn(n, dim, generator=gen)
        self.y = (self.x @ weight + 0.5 + noise * torch.randn(n, generator=gen)).unsqueeze(1)
        self.delay_s = delay_s
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if self.delay_s:
            time.sleep(self.delay_s)
        return {"x": self.x[index], "y": self.y[index], "epoch": torch.tensor(float(self.epoch))}


@register_task("toy_regression")
class ToyRegressionTask(Task):
    """Mean squared error regression; ``data``: n_train, n_valid, dim, noise, delay_s.

    ``uneven=True`` makes DDP processes differ the way real tasks can: only rank 0 uses the
    model's extra head and reports a ``rank0_only`` metric.
    """

    def __init__(self, loss_scale: float = 1.0, uneven: bool = False):
        self.loss_scale = loss_scale
        self.uneven = uneven

    def _rank0(self) -> bool:
        return torch.distributed.is_initialized() and torch.distributed.get_rank() == 0

    def build_datasets(self, data_config, sample_rate):
        dim = data_config.get("dim", 4)
        noise = data_config.get("noise", 0.05)
        delay = data_config.get("delay_s", 0.0)
        train = RegressionSet(data_config.get("n_train", 64), dim, noise, seed=1, delay_s=delay)
        valid = RegressionSet(data_config.get("n_valid", 16), dim, noise, seed=2) if data_config.get("n_valid", 16) else None
        return train, valid

    def loss(self, model, batch):
        est = model(batch["x"])
        logs = {}
        if self.uneven and self._rank0():
            est = est + 0.1 * model.extra(batch["x"])
            logs["rank0_only"] = 1.0
        mse = torch.nn.functional.mse_loss(est, batch["y"])
        loss = self.loss_scale * mse
        # data_epoch: the epoch the dataset was told (set_epoch), as seen by the batch
        return loss, {"mse": float(mse.detach()), "data_epoch": float(batch["epoch"].mean()), **logs}
