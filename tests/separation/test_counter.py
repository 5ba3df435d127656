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


# ---- fusion of counters (stacking) -----------------------------------------------------------------
def test_fit_fusion_matches_scikit_learn_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    from separation.counters import fit_fusion

    g = torch.Generator().manual_seed(0)
    n, d, k = 300, 6, 4
    y = torch.randint(0, k, (n,), generator=g)
    x = torch.randn(n, d, generator=g) * torch.tensor([1.0, 3.0, 0.5, 2.0, 1.0, 10.0]) + 2.0
    x[:, :k] += 1.5 * torch.nn.functional.one_hot(y, k)  # informative, noisy columns
    l2 = 1e-2
    weight, bias = fit_fusion(x, y, k, l2=l2)
    mu, sd = x.double().mean(0), x.double().std(0, unbiased=False)
    ref = LogisticRegression(C=1.0 / (2 * l2 * n), tol=1e-10, max_iter=10000).fit(((x.double() - mu) / sd).numpy(),
                                                                                   y.numpy())
    ours = x.double() @ weight.double().T + bias.double()
    theirs = torch.from_numpy(ref.decision_function(((x.double() - mu) / sd).numpy()))
    # softmax logits are defined up to a constant per row
    diff = (ours - ours.mean(1, keepdim=True)) - (theirs - theirs.mean(1, keepdim=True))
    assert diff.abs().max() < 1e-3
    assert torch.equal(ours.argmax(1), theirs.argmax(1))


def test_select_l2_picks_the_least_held_out_cross_entropy_as_scikit_learn_measures_it():
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    from separation.counters import cv_folds, select_l2

    g = torch.Generator().manual_seed(1)
    n, d, k = 120, 8, 3
    y = torch.randint(0, k, (n,), generator=g)
    x = torch.randn(n, d, generator=g) * 2.0
    x[:, :k] += 1.0 * torch.nn.functional.one_hot(y, k)  # few items, weak signal, noise columns
    fold = cv_folds(y, 4)
    # stratified: each class dealt evenly to the folds
    for c in range(k):
        sizes = torch.bincount(fold[y == c], minlength=4)
        assert int(sizes.max() - sizes.min()) <= 1
    grid = (1e-4, 1e-2, 1.0)
    best, scores = select_l2(x, y, k, grid=grid, folds=4)
    for l2 in grid:
        total = 0.0
        for f in range(4):
            tr, te = fold != f, fold == f
            mu, sd = x[tr].double().mean(0), x[tr].double().std(0, unbiased=False)
            ref = LogisticRegression(C=1.0 / (2 * l2 * int(tr.sum())), tol=1e-10, max_iter=10000)
            ref.fit(((x[tr].double() - mu) / sd).numpy(), y[tr].numpy())
            prob = ref.predict_proba(((x[te].double() - mu) / sd).numpy())
            total += log_loss(y[te].numpy(), prob, labels=list(range(k))) * int(te.sum())
        assert abs(scores[l2] - total / n) < 1e-3, l2
    assert best == min(grid, key=lambda l2: scores[l2])
    # weak signal among noise columns: the smallest weight overfits
    assert best > 1e-4
    with pytest.raises(ValueError, match="folds must be >= 2"):
        select_l2(x, y, k, folds=1)


def test_fit_fusion_rejects_bad_labels():
    from separation.counters import fit_fusion

    with pytest.raises(ValueError, match="labels must be in 0..2"):
        fit_fusion(torch.zeros(4, 3), torch.tensor([0, 1, 2, 3]), 3)
    with pytest.raises(ValueError, match="expected inputs"):
        fit_fusion(torch.zeros(4, 3), torch.tensor([0, 1]), 3)


def test_fusion_counter_starts_as_the_mean_of_its_members_log_probabilities():
    config = {**COUNTER, "trunk": {"type": "blstm", "hidden_size": 8, "n_layers": 1},
              "counter": {"type": "fusion", "members": [{"type": "head", "hidden_size": 8},
                                                        {**COUNTER["counter"]}]}}
    torch.manual_seed(0)
    model = build_model("multihead", config).eval()
    # the stored spec is complete (every member's defaults filled in): a checkpoint rebuilds it exactly
    members = model.get_config()["counter"]["members"]
    assert members[0] == {"type": "head", "hidden_size": 8} and members[1]["features"] == "mel"
    assert model.counter.needs_trunk
    mix = torch.randn(2, 4000) * 0.1
    head, crnn = model.counter.members
    inputs = model.count_inputs(mix)
    expected = (head(*inputs).log_softmax(-1) + crnn(*inputs).log_softmax(-1)) / 2
    assert torch.allclose(model.count_logits(mix), expected, atol=1e-6)
    # the scale of the input does not change the count (every counter reads the normalised mixture)
    assert torch.allclose(model.count_logits(mix * 7.0), model.count_logits(mix), atol=1e-4)
    probs = model.count_probabilities(mix)
    assert torch.allclose(probs[:, 1:], expected.softmax(-1), atol=1e-6) and torch.all(probs[:, 0] == 0)
    _, probs_sep = model.separate_and_count(mix)
    assert torch.allclose(probs_sep, probs, atol=1e-6)


def test_fusion_counter_with_duration_reads_the_clipped_log_duration():
    from frontend.errors import VoxsepError

    config = {**COUNTER, "trunk": {"type": "blstm", "hidden_size": 8, "n_layers": 1},
              "counter": {"type": "fusion", "duration": [0.5, 1.0],
                          "members": [{"type": "head", "hidden_size": 8}, {**COUNTER["counter"]}]}}
    torch.manual_seed(0)
    model = build_model("multihead", config).eval()
    assert model.get_config()["counter"]["duration"] == [0.5, 1.0]
    fusion = model.counter
    assert fusion.combine.weight.shape == (3, 2 * 6 + 1)
    mix = torch.randn(3, 12000) * 0.1
    lengths = torch.tensor([12000, 6000, 2000])  # 1.5 s, 0.75 s, 0.25 s at 8 kHz
    inputs = model.count_inputs(mix, lengths)
    log_probs = fusion.member_log_probs(*inputs)
    x = fusion.combiner_inputs(log_probs, fusion.seconds(mix, lengths))
    log_s = torch.tensor([1.0, 0.75, 0.5]).log()  # clipped to [0.5, 1.0] s
    assert torch.allclose(x[:, 6], log_s) and torch.allclose(x[:, :6], log_probs)
    assert torch.allclose(x[:, 7:], log_probs * log_s[:, None])
    # unfitted, it is the mean of the members (the duration's columns start at zero) ...
    head, crnn = fusion.members
    expected = (head(*inputs).log_softmax(-1) + crnn(*inputs).log_softmax(-1)) / 2
    assert torch.allclose(fusion(*inputs), expected, atol=1e-6)
    # ... and a fitted duration column moves the logits by its weight times the log duration
    with torch.no_grad():
        fusion.combine.weight[0, 6] = 2.0
    assert torch.allclose(fusion(*inputs)[:, 0] - expected[:, 0], 2.0 * log_s, atol=1e-5)
    # without lengths, a mixture's duration is its length
    single = model.count_inputs(mix[1:2, :6000])
    assert torch.allclose(fusion.seconds(mix[1:2, :6000], None), torch.tensor([0.75]))
    assert torch.allclose(model.count_logits(mix[1:2, :6000]), fusion(*single))
    for bad in ([0.0, 1.0], [2.0, 1.0]):
        with pytest.raises((ValueError, VoxsepError), match="duration must be"):
            build_model("multihead", {**config, "counter": {**config["counter"], "duration": bad}})


def test_fusion_counter_refuses_nested_or_empty_members():
    from frontend.errors import VoxsepError

    for members, message in (([], "members is empty"), ([{"type": "fusion"}], "cannot itself be a fusion"),
                             ([{"type": "nope"}], "unknown counter 'nope'")):
        with pytest.raises((ValueError, VoxsepError), match=message):
            build_model("multihead", {**COUNTER, "counter": {"type": "fusion", "members": members}})


# ---- a counter on the frozen trunk of a separator ------------------------------------------------
TRUNK_COUNTER = {**COUNTER, "trunk": {"type": "blstm", "hidden_size": 8, "n_layers": 2},
                 "counter": {"type": "head_rnn", "hidden_size": 8, "rnn_size": 8}}


def test_counting_task_freeze_trains_the_counter_only(corpus):
    from frontend.errors import VoxsepError

    torch.manual_seed(0)
    task = CountingTask(freeze=["encoder", "trunk", "heads"])
    model = task.build_model("multihead", TRUNK_COUNTER)
    assert model.counter.needs_trunk
    assert not any(p.requires_grad for name in ("trunk", "heads") for p in getattr(model, name).parameters())
    assert all(p.requires_grad for p in model.counter.parameters())
    data = DynamicMixingDataset(corpus, counts=[1, 2, 3], segment=1.0, sample_rate=SR, epoch_size=4, seed=3)
    batch = collate_mixtures([data[i] for i in range(4)])
    model.train()
    loss, logs = task.loss(model, batch)
    loss.backward()
    assert not model.trunk.training and model.counter.training  # frozen parts run in eval mode
    assert all(p.grad is None for p in model.trunk.parameters())
    assert all(p.grad is not None for p in model.counter.parameters())
    with pytest.raises(VoxsepError, match="cannot freeze 'counter'"):
        CountingTask(freeze=["counter"]).build_model("multihead", TRUNK_COUNTER)
    with pytest.raises(VoxsepError, match="cannot freeze 'nope'"):
        CountingTask(freeze=["nope"]).build_model("multihead", TRUNK_COUNTER)


@pytest.mark.slow
def test_trunk_counter_recipe_trains_on_a_frozen_separator_then_export_fuses_it(corpus, tmp_path_factory, tmp_path,
                                                                                capsys):
    from engine.checkpoint import load_checkpoint, save_checkpoint

    mixtures = cached_mixtures(tmp_path_factory, corpus, **SETTINGS)
    manifest = mixtures / "manifest_cv.jsonl"
    small = ["model.config.max_speakers=3", "model.config.trunk.hidden_size=16",
             "model.config.counter.hidden_size=16", "model.config.counter.rnn_size=16"]
    from engine.config import load_config

    config = load_config(REPO / "recipes" / "real_separation" / "conf_counter_trunk.yaml", small)
    separators = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        sep = build_model("multihead", {**config["model"]["config"], "counter": {"type": "head", "hidden_size": 8}})
        path = tmp_path / f"sep{seed}.pt"
        save_checkpoint(path, task="separation", model_name="multihead", model_config=sep.get_config(),
                        sample_rate=SR, model=sep, train_config={}, step=seed)
        separators.append(path)
    run_dir = tmp_path / "count"
    result = run_voxsep("train", str(REPO / "recipes" / "real_separation" / "conf_counter_trunk.yaml"), *small,
                        "--run-dir", str(run_dir), f"init_from=[trunk={separators[0]}, heads={separators[0]}]",
                        f"data.train.utterances={corpus}", "data.train.augment.noise.files=null",
                        "data.train.epoch_size=32", "trainer.batch_size=4", "data.train.segment=1.0",
                        "data.train.counts=[1, 2, 3]",
                        f"data.valid.manifests={manifest}", "trainer.max_epochs=1", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    trained, first = load_checkpoint(run_dir / "best.pt"), load_checkpoint(separators[0])
    for key, value in first["state_dict"].items():
        if key.startswith(("trunk.", "heads.")):
            # the separator did not change, not even by the weight average's rounding (8 steps of EMA)
            assert torch.equal(trained["state_dict"][key], value), key
    # export fuses the separator's head, the trunk counter and nothing else, fitted on the manifest
    out = tmp_path / "fused.pt"
    assert main(["export", str(out), "--model", str(separators[0]), "--counter", str(run_dir / "best.pt"),
                 "--calibrate", str(manifest)]) == 0
    spec = load_checkpoint(out)["model_config"]["counter"]
    assert [m["type"] for m in spec["members"]] == ["head", "head_rnn"]
    capsys.readouterr()
    # ... but refuses it for another separator: the counter reads a trunk that is not there
    out2 = tmp_path / "other.pt"
    assert main(["export", str(out2), "--model", str(separators[1]), "--counter", str(run_dir / "best.pt"),
                 "--calibrate", str(manifest)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "reads the trunk of another separator" in err[0] and not out2.exists()
