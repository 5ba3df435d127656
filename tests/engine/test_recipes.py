"""`voxsep train` on the real separation task: the tts_separation debug recipe, run as a user would
(the CLI in a subprocess), on 2 DDP processes, then resumed on one process for another epoch."""
from __future__ import annotations

import math

import pytest
import torch

from engine.checkpoint import load_checkpoint
from engine.train import read_history
from tests.engine.conftest import REPO, run_voxsep
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
