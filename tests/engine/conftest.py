"""Shared fixtures for the engine tests: a toy config and a subprocess runner for `voxsep train`."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
TOY_TASK = "tests.engine.toy_task:ToyRegressionTask"


def toy_config(run_dir: Path, **trainer) -> dict:
    """A toy regression run: 64 training examples, batch 8 -> 8 steps an epoch."""
    return {
        "task": TOY_TASK,
        "sample_rate": 8000,
        "run_dir": str(run_dir),
        "model": {"name": "toy_linear", "config": {"in_features": 4}},
        "data": {"n_train": 64, "n_valid": 16, "dim": 4, "noise": 0.05},
        "optim": {"optimizer": "adam", "lr": 0.05, "grad_clip": 5.0,
                  "scheduler": {"name": "step", "step_size": 2, "gamma": 0.9}},
        "trainer": {"max_epochs": 4, "batch_size": 8, "num_workers": 0, "log_every_n_steps": 2,
                    "progress_bar": False, **trainer},
    }


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def voxsep_env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("LOCAL_RANK", None)
    return env


def voxsep_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "voxsep", *args]


def run_voxsep(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(voxsep_cmd(*args), cwd=REPO, env=voxsep_env(), capture_output=True, text=True,
                          timeout=timeout)
