"""`voxsep train` on the real separation task: the tts_separation debug recipe, run as a user would
(the CLI in a subprocess), on 2 DDP processes, then resumed on one process for another epoch."""
from __future__ import annotations

import math
import signal
import subprocess
import time

import pytest
import torch

from engine.checkpoint import load_checkpoint
from engine.config import load_config
from engine.train import read_history
from tests.engine.conftest import REPO, run_voxsep, voxsep_cmd, voxsep_env
from tests.speech_fixture import cached_mixtures, cached_tiny_corpus
from voxsep.registry import load_model

# the same corpus/mixture settings as tests/separation, so one pytest session builds them once
CORPUS = dict(n_speakers=16, n_utts=3, split_sizes=(10, 3, 3))
SETTINGS = dict(speakers=[1, 2, 3], n_mixtures={"tr": 2, "cv": 2, "tt": 2}, mode="min", gains="wsj0",
                noise="none", seed=11)
CONF = REPO / "recipes" / "tts_separation" / "conf_debug.yaml"


@pytest.fixture(scope="module")
def data_overrides(tmp_path_factory):
    corpus = cached_tiny_corpus(tmp_path_factory, **CORPUS)
    mixtures = cached_mixtures(tmp_path_factory, corpus, **SETTINGS)
    return [f"data.train.utterances={corpus}", f"data.valid.manifests={mixtures / 'manifest_cv.jsonl'}",
            "trainer.num_workers=0"]


@pytest.mark.slow
def test_debug_recipe_with_ddp_then_resumed_on_one_process(tmp_path, data_overrides):
    run_dir = tmp_path / "run"
    common = ["train", str(CONF), *data_overrides, "--run-dir", str(run_dir)]
    result = run_voxsep(*common, "trainer.strategy=ddp", "trainer.devices=2", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("run dir:") == 1
    history = read_history(run_dir)
    epochs = [r for r in history if "event" not in r]
    # debug recipe: 8 dynamic mixtures an epoch, batch 4, over 2 processes -> 1 step an epoch, 2 epochs
    assert history[0]["world_size"] == 2 and [r["step"] for r in epochs] == [1, 2]
    assert all(math.isfinite(r["val/loss"]) and math.isfinite(r["train/loss"]) for r in epochs)
    assert all(0.0 <= r["val/count_acc_est"] <= 1.0 for r in epochs)
    best = load_checkpoint(run_dir / "best.pt")
    assert best["metrics"]["best/val/loss"] == pytest.approx(min(r["val/loss"] for r in epochs))

    # the same command on one process with one more epoch: resumes at step 2, 2 steps an epoch now
    result = run_voxsep(*common, "trainer.max_epochs=3", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    history = read_history(run_dir)
    resume = [r for r in history if r.get("event") == "resume"]
    assert len(resume) == 1 and resume[0]["step"] == 2 and resume[0]["world_size"] == 1
    assert [r["step"] for r in history if "event" not in r] == [1, 2, 4]
    model, ckpt = load_model(run_dir / "last.pt", "separation")
    assert ckpt["step"] == 4 and ckpt["model_name"] == "svoice_multihead"
    (est,) = model.separate(torch.randn(4000) * 0.1, 2)
    assert est.shape == (2, 4000) and torch.isfinite(est).all()


REAL_CONF = REPO / "recipes" / "real_separation" / "conf.yaml"


def _train_until(args: list[str], ready, timeout: float = 120) -> None:
    """Start `voxsep train ARGS`, wait until ``ready()`` holds, then kill -9 it."""
    proc = subprocess.Popen(voxsep_cmd("train", *args), cwd=REPO, env=voxsep_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            if proc.poll() is not None:
                raise AssertionError(f"training ended early: {proc.stderr.read()[-2000:]}")
            assert time.monotonic() < deadline, "not ready in time"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.slow
def test_recipe_config_saves_every_epoch_without_any_setting_and_resumes_after_kill_9(tmp_path, data_overrides):
    """The tts_separation debug recipe as it is (no checkpoint setting): killed after a few epochs,
    the run folder holds last.ckpt/last.pt of a finished epoch and the re-run resumes there."""
    run_dir = tmp_path / "run"
    args = [str(CONF), *data_overrides, "--run-dir", str(run_dir), "trainer.max_epochs=400"]

    def epochs_done() -> int:
        return sum("event" not in r for r in read_history(run_dir))

    _train_until(args, lambda: epochs_done() >= 3)
    saved = torch.load(run_dir / "last.ckpt", weights_only=True)["global_step"]
    assert saved >= 2 * 2  # 2 steps an epoch, at least the epoch before the last logged one
    assert load_checkpoint(run_dir / "last.pt")["step"] >= saved
    result = run_voxsep("train", *args[:-1], f"trainer.max_steps={saved + 2}", "trainer.max_epochs=400", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    resume = [r for r in read_history(run_dir) if r.get("event") == "resume"]
    assert resume and resume[-1]["step"] == saved


@pytest.mark.slow
def test_real_recipe_saves_by_time_inside_an_epoch_and_counts_cpu(tmp_path, data_overrides):
    """The real_separation recipe config (one epoch is 500 steps): resumable state is written by time
    inside the epoch; history and checkpoints carry the CPU seconds, summed over resumes."""
    resolved = load_config(REAL_CONF)
    assert resolved["trainer"]["checkpoint_every_minutes"] == 5.0  # the default: no setting needed
    run_dir = tmp_path / "real"
    corpus = data_overrides[0].split("=", 1)[1]
    args = [str(REAL_CONF), "--run-dir", str(run_dir), f"data.train.utterances={corpus}",
            "data.train.augment.noise.files=null", data_overrides[1], "trainer.checkpoint_every_minutes=0.03"]
    _train_until(args, lambda: (run_dir / "last.pt").exists() and (run_dir / "last.ckpt").exists())
    saved = torch.load(run_dir / "last.ckpt", weights_only=True)
    assert 0 < saved["global_step"] < 500 and saved["epoch"] == 0
    cpu_before = next(v for k, v in saved["callbacks"].items() if k.startswith("RunFiles"))["cpu_s"]
    assert cpu_before > 0
    result = run_voxsep("train", *args, f"trainer.max_steps={saved['global_step'] + 1}", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    resume = [r for r in read_history(run_dir) if r.get("event") == "resume"]
    assert len(resume) == 1 and resume[0]["step"] == saved["global_step"]
    assert resume[0]["cpu_s"] >= cpu_before - 0.1  # history rounds to 0.1 s
    assert load_checkpoint(run_dir / "last.pt")["metrics"]["cpu_s"] > cpu_before


@pytest.mark.slow
def test_init_from_loads_weights_and_starts_a_fresh_optimizer(tmp_path, data_overrides):
    first = tmp_path / "first"
    common = [str(CONF), *data_overrides, "trainer.max_epochs=1"]
    assert run_voxsep("train", *common, "--run-dir", str(first), timeout=300).returncode == 0
    source = load_checkpoint(first / "last.pt")
    second = tmp_path / "second"
    # one step with a negligible learning rate: the weights stay those of the first run
    result = run_voxsep("train", *common, "--run-dir", str(second), f"init_from={first / 'last.pt'}",
                        "trainer.max_steps=1", "optim.lr=1e-12", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    start = read_history(second)[0]
    assert start["event"] == "start" and start["step"] == 0
    assert start["init_from"]["loaded"] == len(source["state_dict"]) and not start["init_from"]["missing"]
    copied = load_checkpoint(second / "last.pt")
    assert copied["step"] == 1
    assert all(torch.allclose(copied["state_dict"][k], v, atol=1e-9) for k, v in source["state_dict"].items())
    # a fresh optimizer: Adam has taken one step, not the first run's 2 + 1
    state = torch.load(second / "last.ckpt", weights_only=True)
    assert {int(s["step"]) for s in state["optimizer_states"][0]["state"].values()} == {1}
    # one part only, from another checkpoint; a part nobody has is one clear error
    result = run_voxsep("train", *common, "--run-dir", str(tmp_path / "third"),
                        f"init_from=[{first / 'last.pt'}, nothing={first / 'last.pt'}]", timeout=300)
    assert result.returncode == 2 and "init_from part 'nothing' holds no weights" in result.stderr
