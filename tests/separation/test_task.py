"""The "separation" task through the engine: the debug recipe trains end to end on the tiny
espeak-ng corpus, mixing counts in a batch, and its checkpoint separates through the registry."""
import json
import math
from pathlib import Path

import pytest
import torch

from engine.config import apply_overrides, read_yaml
from engine.task import get_task
from engine.train import train
from separation.losses import separation_loss
from separation.model import MulCatSeparator
from separation.task import SeparationTask, build_dataset, si_snr_improvement
from tests.speech_fixture import cached_mixtures, cached_tiny_corpus
from voxsep.registry import load_model

REPO = Path(__file__).resolve().parents[2]
CORPUS = dict(n_speakers=16, n_utts=3, split_sizes=(10, 3, 3))  # shared with the data tests
SETTINGS = dict(speakers=[1, 2, 3], n_mixtures={"tr": 2, "cv": 2, "tt": 2}, mode="min", gains="wsj0",
                noise="none", seed=11)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    torch.set_num_threads(1)
    corpus = cached_tiny_corpus(tmp_path_factory, **CORPUS)
    return corpus, cached_mixtures(tmp_path_factory, corpus, **SETTINGS)


def test_si_snr_improvement_of_the_mixture_is_zero_and_of_the_sources_large():
    torch.manual_seed(0)
    sources = torch.randn(1, 2, 2000)
    mix = sources.sum(1)
    assert abs(float(si_snr_improvement(torch.stack([mix, mix], 1), sources, mix)[0])) < 1e-4
    assert float(si_snr_improvement(sources.flip(1), sources, mix)[0]) > 40


def test_task_batches_mix_counts_and_the_loss_uses_each_items_head(data):
    corpus, mixtures = data
    task = get_task("separation", {"count_weight": 0.1})
    assert isinstance(task, SeparationTask)
    train_ds, valid_ds = task.build_datasets(
        {"train": {"type": "dynamic", "utterances": str(corpus), "counts": [1, 2, 3], "segment": 0.5,
                   "epoch_size": 6, "seed": 3},
         "valid": {"type": "manifest", "manifests": str(mixtures / "manifest_cv.jsonl")}}, 8000)
    batch = task.collate([train_ds[i] for i in range(6)])
    assert len(set(batch["n_src"].tolist())) > 1
    # seed null: new mixtures at every read (dynamic mixing without set_epoch calls)
    fresh = build_dataset({"type": "dynamic", "utterances": str(corpus), "counts": [2], "segment": 0.5,
                           "epoch_size": 2, "seed": None}, 8000)
    assert not torch.equal(fresh[0]["mix"], fresh[0]["mix"])
    model = MulCatSeparator(dict(max_speakers=3, n_filters=16, kernel_size=16, stride=8, hidden_size=8,
                                 chunk_size=20, n_blocks=2)).train()
    loss, logs = task.loss(model, batch)
    expected, _ = separation_loss(model(batch["mix"], lengths=batch["lengths"]), batch["sources"], batch["n_src"],
                                  batch["mix"], batch["lengths"], config=task.loss_config)
    assert torch.allclose(loss, expected, atol=1e-5)  # only the heads present are decoded: same loss
    model.eval()
    items = [valid_ds[i] for i in range(len(valid_ds))]
    valid_batch = task.collate(items)
    assert len(set(valid_batch["lengths"].tolist())) > 1  # some items are zero-padded in the batch
    metrics = task.validation_metrics(model, valid_batch)
    assert {"loss", "neg_sisnr", "count_ce", "si_snri", "count_acc_est"} <= set(metrics)
    assert all(math.isfinite(v) for v in metrics.values())
    # the count accuracy is the one `separate` gives on each file alone (padding does not count)
    with torch.no_grad():
        alone = [int(model.count_probabilities(it["mix"]).argmax()) == it["n_src"] for it in items]
    assert metrics["count_acc_est"] == pytest.approx(sum(alone) / len(alone))


@pytest.mark.parametrize("recipe", ["tts_separation", "wsj0mix", "librimix"])
def test_debug_recipe_trains_and_its_checkpoint_separates(tmp_path, data, recipe):
    corpus, mixtures = data
    paths = {
        "tts_separation": [f"data.train.utterances={corpus}", f"data.valid.manifests={mixtures / 'manifest_cv.jsonl'}"],
        "wsj0mix": [f"data.train.root={mixtures}", f"data.valid.root={mixtures}"],
        "librimix": [f"data.train.csv_paths=[{mixtures / 'metadata/mixture_tr_2spk.csv'}]",
                     f"data.valid.csv_paths=[{mixtures / 'metadata/mixture_cv_2spk.csv'}]"],
    }[recipe]
    config = apply_overrides(read_yaml(REPO / "recipes" / recipe / "conf_debug.yaml"),
                             [f"run_dir={tmp_path / 'run'}", "trainer.num_workers=0", *paths])
    run_dir = train(config)
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    epochs = [h for h in history if "epoch" in h and "val/loss" in h]
    n_epochs = config["trainer"]["max_epochs"]
    assert len(epochs) == n_epochs and all(math.isfinite(h["val/loss"]) for h in epochs)
    assert all(math.isfinite(h["val/si_snri"]) for h in epochs)
    model, ckpt = load_model(str(run_dir / "best.pt"), task="separation")
    n_train = len(get_task("separation").build_datasets(config["data"], 8000)[0])
    steps_per_epoch = -(-n_train // config["trainer"]["batch_size"])
    assert ckpt["task"] == "separation" and ckpt["step"] == steps_per_epoch * n_epochs
    mix = torch.randn(4000) * 0.1
    (est,) = model.separate(mix, 2)
    assert est.shape == (2, 4000) and torch.isfinite(est).all()
