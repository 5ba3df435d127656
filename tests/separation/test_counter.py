"""The dedicated talker counter (CRNN on log-mel, `counting` task): it learns a fixed tiny set, the
recipe config trains through `voxsep train`, and the CLI counts with it (silence is 0)."""
from __future__ import annotations

import pytest
import torch

from engine.checkpoint import build_model
from frontend import save_audio
from separation.data import DynamicMixingDataset, collate_mixtures
from separation.inference import Separator
from separation.task import CountingTask
from tests.engine.conftest import REPO, run_voxsep
from tests.speech_fixture import cached_mixtures, cached_tiny_corpus
from voxsep.cli import main

SR = 8000
CORPUS = dict(n_speakers=16, n_utts=3, split_sizes=(10, 3, 3))
SETTINGS = dict(speakers=[1, 2, 3], n_mixtures={"tr": 2, "cv": 2, "tt": 2}, mode="min", gains="wsj0",
                noise="none", seed=11)
COUNTER = {"max_speakers": 3, "encoder": {"type": "stft", "n_fft": 64, "hop_length": 16},
           "trunk": {"type": "blstm", "hidden_size": 4, "n_layers": 1},
           "counter": {"type": "crnn", "n_mels": 32, "n_fft": 256, "hop_length": 80, "channels": [8, 16],
                       "hidden_size": 16}, "sample_rate": SR}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return cached_tiny_corpus(tmp_path_factory, **CORPUS)


@pytest.mark.slow
def test_counter_learns_a_fixed_tiny_set_without_running_the_trunk(corpus):
    torch.manual_seed(0)
    data = DynamicMixingDataset(corpus, counts=[1, 2, 3], segment=1.5, sample_rate=SR, epoch_size=24, seed=3)
    items = [data[i] for i in range(len(data))]
    model = build_model("multihead", COUNTER)
    task = CountingTask()
    trunk_before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("counter.")}
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(120):
        batch = collate_mixtures([items[(step * 8 + j) % len(items)] for j in range(8)])
        loss, _ = task.loss(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    batch = collate_mixtures(items)
    metrics = task.validation_metrics(model, batch)
    assert metrics["count_acc"] >= 0.9, metrics
    # only the counter learned: the separation parts are untouched
    for key, value in model.state_dict().items():
        if key in trunk_before:
            assert torch.equal(value, trunk_before[key]), key
    # the Separator (CLI path) counts each item as the counter does; silence is 0 talkers
    separator = Separator(model, SR)
    for item in items[:6]:
        probs = separator.count_probabilities(item["mix"][:int(item["length"])])
        assert int(probs.argmax()) == int(model.count(item["mix"][:int(item["length"])])[0])
    assert int(separator.count_probabilities(torch.zeros(SR)).argmax()) == 0


@pytest.mark.slow
def test_counter_recipe_config_trains_with_voxsep_train(corpus, tmp_path_factory, tmp_path, capsys):
    mixtures = cached_mixtures(tmp_path_factory, corpus, **SETTINGS)
    run_dir = tmp_path / "count"
    result = run_voxsep("train", str(REPO / "recipes" / "real_separation" / "conf_counter.yaml"),
                        "--run-dir", str(run_dir), f"data.train.utterances={corpus}",
                        "data.train.augment.noise.files=null", "data.train.epoch_size=8", "trainer.batch_size=4",
                        f"data.valid.manifests={mixtures / 'manifest_cv.jsonl'}", "trainer.max_epochs=1",
                        timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    wav = torch.randn(SR * 2) * 0.1
    save_audio(tmp_path / "x.wav", wav, SR)
    assert main(["count", str(tmp_path / "x.wav"), "--model", str(run_dir / "best.pt")]) == 0
    count = int(capsys.readouterr().out.split("\t")[1])
    assert 1 <= count <= 5


def test_linear_frequency_counter_reads_the_stft_bins_up_to_max_hz():
    from separation.counters import COUNTERS, CountCRNN, counter_config
    # a spec without the new keys (checkpoints before them) is the log-mel counter
    assert counter_config({"type": "crnn"})["features"] == "mel"
    spec = {"type": "crnn", "features": "linear", "max_hz": 2000.0, "n_fft": 512, "hop_length": 128,
            "channels": [4, 4], "hidden_size": 8}
    counter = COUNTERS.build(spec, 5, 1, SR)
    assert isinstance(counter, CountCRNN) and counter.n_bands == 129  # 0..2000 Hz in 15.625 Hz bins
    t = torch.arange(SR) / SR
    tone = torch.sin(2 * torch.pi * 1000.0 * t)[None]
    spectrum = counter.mel(tone)[:, :counter.n_bands]
    reference = torch.stft(tone, 512, 128, window=torch.hann_window(512), return_complex=True).abs() ** 2
    assert torch.allclose(spectrum, reference[:, :129], rtol=1e-4, atol=1e-6)
    assert int(spectrum[0, :, 10].argmax()) == 64  # 1000 Hz / 15.625 Hz
    assert counter(tone, None).shape == (1, 5)
    with pytest.raises(ValueError, match="'mel' or 'linear'"):
        COUNTERS.build({**spec, "features": "bark"}, 5, 1, SR)
