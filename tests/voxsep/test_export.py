"""voxsep export: a separator plus a separately trained counter in one portable checkpoint."""
from __future__ import annotations

import pytest
import torch

from engine.checkpoint import build_model, load_checkpoint, save_checkpoint
from separation import model as _separation_model  # noqa: F401  (registers "multihead")
from frontend import save_audio
from voxsep.cli import main
from voxsep.export import portable, portable_path

SR = 8000
SEPARATOR = {"max_speakers": 3, "encoder": {"type": "stft", "n_fft": 64, "hop_length": 16},
             "trunk": {"type": "blstm", "hidden_size": 8, "n_layers": 1}, "counter": {"type": "head"},
             "sample_rate": SR}
COUNTER = {**SEPARATOR, "trunk": {"type": "blstm", "hidden_size": 4, "n_layers": 1},
           "counter": {"type": "crnn", "n_mels": 16, "n_fft": 128, "hop_length": 32, "channels": [4, 4],
                       "hidden_size": 8}}


def _save(path, config, seed, train_config=None, metrics=None):
    torch.manual_seed(seed)
    model = build_model("multihead", config)
    save_checkpoint(path, task="separation", model_name="multihead", model_config=model.get_config(),
                    sample_rate=SR, model=model, train_config=train_config or {}, step=seed, metrics=metrics)
    return model


def test_export_merges_the_counter_and_makes_paths_portable(tmp_path, capsys):
    train_config = {"run_dir": "runs/real_separation/r01", "data": {"train": {
        "utterances": [{"path": "/home/someone/work/shared/speech/manifest.csv", "weight": 1.0}],
        "augment": {"noise": {"files": "../shared/noise"}}}}, "init_from": ["/tmp/x/runs/a/best.pt"]}
    separator = _save(tmp_path / "sep.pt", SEPARATOR, 1, train_config, {"val/si_snri": 3.5, "val/count_acc": 0.3})
    counter = _save(tmp_path / "count.pt", COUNTER, 2, metrics={"val/count_acc": 0.7})
    out = tmp_path / "exported.pt"
    assert main(["export", str(out), "--model", str(tmp_path / "sep.pt"), "--counter", str(tmp_path / "count.pt")]) == 0
    assert "counter crnn" in capsys.readouterr().out
    ckpt = load_checkpoint(out)
    assert ckpt["model_config"]["counter"]["type"] == "crnn" and ckpt["model_config"]["trunk"]["hidden_size"] == 8
    assert ckpt["metrics"] == {"val/si_snri": 3.5, "counter/val/count_acc": 0.7}  # the counter's count figures
    for key, value in ckpt["state_dict"].items():
        source = counter if key.startswith("counter.") else separator
        assert torch.equal(value, source.state_dict()[key]), key
    text = repr(ckpt["train_config"])
    assert "/home/" not in text and "/tmp/" not in text and "../" not in text
    assert ckpt["train_config"]["data"]["train"]["utterances"][0]["path"] == "DATA/speech/manifest.csv"
    assert ckpt["train_config"]["data"]["train"]["augment"]["noise"]["files"] == "DATA/noise"
    assert ckpt["train_config"]["run_dir"] == "RUN/real_separation/r01"
    # the exported model counts with the counter it was given
    model = build_model("multihead", ckpt["model_config"]).eval()
    model.load_state_dict(ckpt["state_dict"])
    counter.eval()
    wav = torch.randn(4000) * 0.1
    assert torch.allclose(model.count_probabilities(wav), counter.count_probabilities(wav))
    save_audio(tmp_path / "mix.wav", wav, SR)
    assert main(["count", str(tmp_path / "mix.wav"), "--model", str(out)]) == 0
    assert capsys.readouterr().out.split("\t")[1] == str(int(counter.count_probabilities(wav).argmax()))


def test_export_refuses_a_counter_that_does_not_fit(tmp_path, capsys):
    _save(tmp_path / "sep.pt", SEPARATOR, 1)
    _save(tmp_path / "count.pt", {**COUNTER, "max_speakers": 5}, 2)
    out = tmp_path / "exported.pt"
    assert main(["export", str(out), "--model", str(tmp_path / "sep.pt"), "--counter", str(tmp_path / "count.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "its max_speakers is 5, the separator's is 3" in err[0]
    assert not out.exists()


def test_portable_paths():
    assert portable_path("/work/shared/speech/manifest.csv") == "DATA/speech/manifest.csv"
    assert portable_path("../shared/noise") == "DATA/noise"
    assert portable_path("runs/x/best.pt") == "RUN/x/best.pt"
    assert portable_path("data/real_separation/mixtures/manifest_cv.jsonl") == \
        "data/real_separation/mixtures/manifest_cv.jsonl"
    assert portable({"task": "separation", "lr": 1e-3, "manifests": ["/a/b/c.jsonl"]}) == \
        {"task": "separation", "lr": 1e-3, "manifests": ["DATA/b/c.jsonl"]}


def test_export_half_precision_weights_load_into_the_float32_model(tmp_path):
    separator = _save(tmp_path / "sep.pt", SEPARATOR, 1).eval()
    out = tmp_path / "half.pt"
    assert main(["export", str(out), "--model", str(tmp_path / "sep.pt"), "--half"]) == 0
    ckpt = load_checkpoint(out)
    assert all(v.dtype == torch.float16 for v in ckpt["state_dict"].values() if v.is_floating_point())
    assert out.stat().st_size < 0.6 * (tmp_path / "sep.pt").stat().st_size
    model = build_model("multihead", ckpt["model_config"]).eval()
    model.load_state_dict(ckpt["state_dict"])
    assert all(p.dtype == torch.float32 for p in model.parameters())
    wav = torch.randn(4000) * 0.1
    (a,), (b,) = model.separate(wav, 2), separator.separate(wav, 2)
    assert float((a - b).norm() / b.norm()) < 1e-2


def test_export_int8_weights_are_a_quarter_of_float32_and_load_as_float32(tmp_path, capsys):
    from engine.checkpoint import INT8_SCALE_SUFFIX

    config = {**SEPARATOR, "trunk": {"type": "blstm", "hidden_size": 64, "n_layers": 2}}
    separator = _save(tmp_path / "sep.pt", config, 1).eval()
    half, small = tmp_path / "half.pt", tmp_path / "int8.pt"
    assert main(["export", str(half), "--model", str(tmp_path / "sep.pt"), "--half"]) == 0
    assert main(["export", str(small), "--model", str(tmp_path / "sep.pt"), "--int8"]) == 0
    raw = torch.load(small, weights_only=True)["state_dict"]
    assert raw["trunk.layers.1.weight_ih_l0"].dtype == torch.int8 and "trunk.layers.1.weight_ih_l0" + INT8_SCALE_SUFFIX in raw
    assert small.stat().st_size < 0.62 * half.stat().st_size < 0.62 * 0.6 * (tmp_path / "sep.pt").stat().st_size
    ckpt = load_checkpoint(small)
    model = build_model("multihead", ckpt["model_config"]).eval()
    model.load_state_dict(ckpt["state_dict"])
    wav = torch.randn(4000) * 0.1
    with torch.no_grad():
        (a,), (b,) = model.separate(wav, 2), separator.separate(wav, 2)
    assert 0 < float((a - b).norm() / b.norm()) < 2e-2
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(tmp_path / "x.pt"), "--model", str(tmp_path / "sep.pt"), "--half", "--int8"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "voxsep export: error: argument --int8: not allowed with argument --half")
    assert not (tmp_path / "x.pt").exists()


def _calibration_manifest(tmp_path_factory):
    from tests.separation.test_counter import CORPUS, SETTINGS
    from tests.speech_fixture import cached_mixtures, cached_tiny_corpus

    corpus = cached_tiny_corpus(tmp_path_factory, **CORPUS)
    return cached_mixtures(tmp_path_factory, corpus, **SETTINGS) / "manifest_cv.jsonl"


def test_export_calibrate_fuses_both_counters_fitted_on_the_manifest(tmp_path, tmp_path_factory, capsys):
    import json

    from separation.counters import fit_fusion
    from separation.data import MixtureManifestDataset

    manifest = _calibration_manifest(tmp_path_factory)
    _save(tmp_path / "sep.pt", SEPARATOR, 1, {"run_dir": "runs/a"}, {"val/si_snri": 3.5, "val/count_acc": 0.3})
    _save(tmp_path / "count.pt", COUNTER, 2, metrics={"val/count_acc": 0.7})
    separator, counter = load_checkpoint(tmp_path / "sep.pt"), load_checkpoint(tmp_path / "count.pt")
    out = tmp_path / "fused.pt"
    assert main(["export", str(out), "--model", str(tmp_path / "sep.pt"), "--counter", str(tmp_path / "count.pt"),
                 "--calibrate", str(manifest), "--l2", "0.01", "--half"]) == 0
    n = sum(1 for line in manifest.read_text().splitlines() if line.strip())
    assert f"counter calibrated on {n} mixtures" in capsys.readouterr().out
    ckpt = load_checkpoint(out)
    spec = ckpt["model_config"]["counter"]
    assert spec["type"] == "fusion" and [m["type"] for m in spec["members"]] == ["head", "crnn"]
    state = ckpt["state_dict"]
    # members: the separator's own head and the counter's CRNN, float16; the combiner float32
    for key, value in state.items():
        if key.startswith("counter.members.0."):
            source = separator["state_dict"]["counter." + key[len("counter.members.0."):]]
        elif key.startswith("counter.members.1."):
            source = counter["state_dict"]["counter." + key[len("counter.members.1."):]]
        elif key.startswith("counter."):
            assert key.startswith("counter.combine.") and value.dtype == torch.float32
            continue
        else:
            source = separator["state_dict"][key]
        assert torch.equal(value, source.half() if source.is_floating_point() else source), key
    # the combiner is the logistic regression of the count on the members' log-probabilities
    model = build_model("multihead", ckpt["model_config"]).eval()
    model.load_state_dict(state)
    data = MixtureManifestDataset(manifest, sample_rate=SR)
    with torch.no_grad():
        x = torch.cat([model.counter.member_log_probs(*model.count_inputs(data[i]["mix"][None].float()))
                       for i in range(len(data))])
    y = torch.tensor([data[i]["n_src"] - 1 for i in range(len(data))])
    assert sorted(set(y.tolist())) == [0, 1, 2]
    weight, bias = fit_fusion(x, y, 3, l2=0.01)
    assert torch.allclose(state["counter.combine.weight"], weight, atol=1e-4)
    assert torch.allclose(state["counter.combine.bias"], bias, atol=1e-4)
    fused = (model.counter.combine(x).argmax(-1) == y).float().mean()
    assert ckpt["metrics"]["calibration/n"] == n and abs(ckpt["metrics"]["calibration/count_acc"] - fused) < 1e-6
    # the members' own count figures no longer describe the exported counter
    assert "counter/val/count_acc" not in ckpt["metrics"] and "val/count_acc" not in ckpt["metrics"]
    assert ckpt["metrics"]["val/si_snri"] == 3.5
    assert ckpt["train_config"]["exported_from"]["calibration_l2"] == 0.01
    assert json.dumps(ckpt["train_config"]).count("/tmp/") == 0

    # init_from=[counter=FUSED] continues training the member that fits the model's counter (the CRNN)
    from engine.train import init_weights

    crnn = build_model("multihead", COUNTER)
    report = init_weights(crnn, [f"counter={out}"])
    assert not [k for k in report["missing"] if k.startswith("counter.")]
    for key, value in crnn.state_dict().items():
        if key.startswith("counter.") and value.is_floating_point():
            assert torch.equal(value, counter["state_dict"][key].half().float()), key
    # a fused checkpoint is fitted again from its members (not nested) ...
    again = tmp_path / "again.pt"
    assert main(["export", str(again), "--model", str(out), "--calibrate", str(manifest), "--l2", "0.01"]) == 0
    again_ckpt = load_checkpoint(again)
    assert [m["type"] for m in again_ckpt["model_config"]["counter"]["members"]] == ["head", "crnn"]
    assert torch.allclose(again_ckpt["state_dict"]["counter.combine.weight"], weight, atol=1e-4)
    # by default the L2 weight is chosen by cross-validation on the calibration mixtures
    from separation.counters import L2_GRID, select_l2

    capsys.readouterr()
    auto = tmp_path / "auto.pt"
    assert main(["export", str(auto), "--model", str(out), "--calibrate", str(manifest)]) == 0
    assert "chosen by 5-fold cross-validation" in capsys.readouterr().out
    auto_ckpt = load_checkpoint(auto)
    best, scores = select_l2(x, y, 3)
    assert auto_ckpt["metrics"]["calibration/l2"] == best and best in L2_GRID
    assert abs(auto_ckpt["metrics"]["calibration/cv_ce"] - scores[best]) < 1e-4
    assert auto_ckpt["train_config"]["exported_from"]["calibration_l2"] == best
    weight_auto, _ = fit_fusion(x, y, 3, l2=best)
    assert torch.allclose(auto_ckpt["state_dict"]["counter.combine.weight"], weight_auto, atol=1e-4)
    for bad in ("-1", "much"):
        with pytest.raises(SystemExit) as exit_info:
            main(["export", str(tmp_path / "x.pt"), "--model", str(out), "--calibrate", str(manifest), "--l2", bad])
        assert exit_info.value.code == 2
        assert capsys.readouterr().err.strip().splitlines()[-1] == (
            f"voxsep export: error: argument --l2: expected 'auto' or a number >= 0, got {bad!r}")
    assert not (tmp_path / "x.pt").exists()
    # ... and brings its members to another separator, less the head that reads its own trunk
    _save(tmp_path / "sep_other.pt", SEPARATOR, 3)
    other = tmp_path / "other.pt"
    assert main(["export", str(other), "--model", str(tmp_path / "sep_other.pt"), "--counter", str(out),
                 "--calibrate", str(manifest)]) == 0
    other_ckpt = load_checkpoint(other)
    assert [m["type"] for m in other_ckpt["model_config"]["counter"]["members"]] == ["head", "crnn"]
    third = load_checkpoint(tmp_path / "sep_other.pt")["state_dict"]
    assert torch.equal(other_ckpt["state_dict"]["counter.members.0.classifier.weight"], third["counter.classifier.weight"])
    assert torch.equal(other_ckpt["state_dict"]["counter.members.1.classifier.weight"],
                       counter["state_dict"]["counter.classifier.weight"].half().float())
    capsys.readouterr()
    # a fusion is never taken without fitting it again
    assert main(["export", str(tmp_path / "x.pt"), "--model", str(tmp_path / "sep_other.pt"), "--counter", str(out)]) == 2
    assert "its counter is a fusion; give --calibrate" in capsys.readouterr().err


def test_export_count_duration_fits_the_fusion_with_the_durations(tmp_path, tmp_path_factory, capsys):
    from separation.counters import fit_fusion
    from separation.data import MixtureManifestDataset

    manifest = _calibration_manifest(tmp_path_factory)
    _save(tmp_path / "sep.pt", SEPARATOR, 1)
    _save(tmp_path / "count.pt", COUNTER, 2)
    out = tmp_path / "fused.pt"
    args = ["export", str(out), "--model", str(tmp_path / "sep.pt"), "--counter", str(tmp_path / "count.pt")]
    # l2 1: the tiny set is separable, and at l2 0.01 the weights reach ~1000, where float32 rounding
    # of the logits computed two ways (model vs. by hand) exceeds the tolerance
    assert main(args + ["--calibrate", str(manifest), "--l2", "1", "--count-duration"]) == 0
    ckpt = load_checkpoint(out)
    data = MixtureManifestDataset(manifest, sample_rate=SR)
    seconds = torch.tensor([data[i]["mix"].shape[-1] / SR for i in range(len(data))])
    assert seconds.max() > seconds.min()
    assert ckpt["model_config"]["counter"]["duration"] == pytest.approx([float(seconds.min()), float(seconds.max())])
    model = build_model("multihead", ckpt["model_config"]).eval()
    model.load_state_dict(ckpt["state_dict"])
    with torch.no_grad():
        lp = torch.cat([model.counter.member_log_probs(*model.count_inputs(data[i]["mix"][None].float()))
                        for i in range(len(data))])
    y = torch.tensor([data[i]["n_src"] - 1 for i in range(len(data))])
    x = torch.cat([lp, seconds.log()[:, None], lp * seconds.log()[:, None]], dim=1)
    weight, bias = fit_fusion(x, y, 3, l2=1.0)
    assert torch.allclose(ckpt["state_dict"]["counter.combine.weight"], weight, atol=1e-4)
    assert torch.allclose(ckpt["state_dict"]["counter.combine.bias"], bias, atol=1e-4)
    with torch.no_grad():
        logits = torch.cat([model.count_logits(data[i]["mix"][None].float()) for i in range(len(data))])
    assert torch.allclose(logits, x @ weight.T + bias, atol=1e-4)
    assert ckpt["metrics"]["calibration/count_acc"] == pytest.approx(float((logits.argmax(-1) == y).float().mean()))
    # it needs the calibration mixtures: one line, exit 2, nothing written
    capsys.readouterr()
    assert main(["export", str(tmp_path / "x.pt"), "--model", str(tmp_path / "sep.pt"), "--count-duration"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert not (tmp_path / "x.pt").exists()
    assert len(err) == 1 and "--count-duration fits the fusion with the mixtures' durations" in err[0]


def test_export_calibrate_needs_every_count(tmp_path, tmp_path_factory, capsys):
    manifest = _calibration_manifest(tmp_path_factory)
    partial = manifest.parent / "manifest_partial.jsonl"
    import json
    lines = [line for line in manifest.read_text().splitlines() if line.strip() and json.loads(line)["n_src"] < 3]
    partial.write_text("\n".join(lines) + "\n")
    _save(tmp_path / "sep.pt", SEPARATOR, 1)
    out = tmp_path / "fused.pt"
    assert main(["export", str(out), "--model", str(tmp_path / "sep.pt"), "--calibrate", str(partial)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no mixture of [3] talkers" in err[0] and "manifest_partial.jsonl" in err[0]
    assert not out.exists()
    # one mixture per count: too few to choose the L2 weight by cross-validation; a given weight fits
    few = manifest.parent / "manifest_few.jsonl"
    first = {}
    for line in manifest.read_text().splitlines():
        if line.strip():
            first.setdefault(json.loads(line)["n_src"], line)
    few.write_text("\n".join(first.values()) + "\n")
    assert main(["export", str(out), "--model", str(tmp_path / "sep.pt"), "--calibrate", str(few)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "manifest_few.jsonl: 3 calibration mixtures are too few" in err[0] and "--l2 WEIGHT" in err[0]
    assert not out.exists()
    assert main(["export", str(out), "--model", str(tmp_path / "sep.pt"), "--calibrate", str(few), "--l2", "0.01"]) == 0
    assert load_checkpoint(out)["metrics"]["calibration/l2"] == 0.01


def _tiny_denoiser():
    """A frame denoiser (``wavenet_tf_denoiser``) small enough for tests, and its config."""
    from generation.enhancer import FrameEnhancer, FrameEnhancerConfig
    from generation.wavenet import WaveNetConfig

    torch.manual_seed(0)
    config = FrameEnhancerConfig(
        wavenet=WaveNetConfig(layers_per_cycle=2, n_cycles=1, kernel_size=3, causal=False, residual_channels=8,
                              gate_channels=8, skip_channels=8, output="regression", regression_channels=33),
        n_fft=64, hop_length=16, target_field=256)
    return FrameEnhancer(config).eval(), config


def test_export_of_a_denoiser_makes_paths_portable_and_halves_the_weights(tmp_path, capsys):
    model, config = _tiny_denoiser()
    save_checkpoint(tmp_path / "d.pt", task="enhancement", model_name="wavenet_tf_denoiser",
                    model_config=config, sample_rate=16000, model=model, step=7,
                    train_config={"data": {"manifest": "/home/x/shared/speech/manifest.csv"}, "run_dir": "runs/d03"},
                    metrics={"val/si_snri": 3.0})
    out = tmp_path / "denoiser.pt"
    assert main(["export", str(out), "--model", str(tmp_path / "d.pt"), "--half"]) == 0
    assert "enhancement model wavenet_tf_denoiser, step 7" in capsys.readouterr().out
    ckpt = load_checkpoint(out)
    assert ckpt["task"] == "enhancement" and ckpt["metrics"] == {"val/si_snri": 3.0}
    assert ckpt["train_config"]["data"]["manifest"] == "DATA/speech/manifest.csv"
    assert ckpt["train_config"]["run_dir"] == "RUN/d03" and "/home/" not in repr(ckpt["train_config"])
    assert all(v.dtype == torch.float16 for v in ckpt["state_dict"].values() if v.is_floating_point())
    from voxsep.registry import load_model

    loaded, _ = load_model(out, "enhancement")
    wav = torch.randn(4000) * 0.1
    a, b = loaded.enhance(wav), model.enhance(wav)
    assert float((a - b).norm() / b.norm()) < 1e-2
    # counters go with separators only
    assert main(["export", str(tmp_path / "x.pt"), "--model", str(tmp_path / "d.pt"), "--counter", str(out)]) == 2
    assert "counters go with a 'multihead' separator" in capsys.readouterr().err


def test_export_set_changes_an_inference_setting_and_refuses_what_does_not_fit(tmp_path, capsys):
    """--set mask_floor=F: the exported denoiser's mask never falls under F (a head that says "remove
    everything" leaves F x the input); bad values, unknown keys and shape changes: one line, no file."""
    model, config = _tiny_denoiser()
    with torch.no_grad():  # the mask's logits: -60 everywhere (sigmoid = 1e-26)
        model.wavenet.head2.weight.zero_()
        model.wavenet.head2.bias.fill_(-60.0)
    save_checkpoint(tmp_path / "d.pt", task="enhancement", model_name="wavenet_tf_denoiser", model_config=config,
                    sample_rate=16000, model=model, step=3)
    out = tmp_path / "floored.pt"
    assert main(["export", str(out), "--model", str(tmp_path / "d.pt"), "--set", "mask_floor=0.25"]) == 0
    ckpt = load_checkpoint(out)
    assert ckpt["model_config"]["mask_floor"] == 0.25
    assert ckpt["train_config"]["exported_from"]["settings"] == ["mask_floor=0.25"]
    from voxsep.registry import load_model

    floored, _ = load_model(out, "enhancement")
    wav = torch.randn(1, 2000) * 0.1
    with torch.no_grad():
        assert float(model(wav).abs().max()) < 1e-6
        torch.testing.assert_close(floored(wav), 0.25 * wav, atol=1e-5, rtol=1e-4)
    capsys.readouterr()
    for setting, message in [("mask_floor=1.5", "mask_floor must be in [0, 1), got 1.5"),
                             ("no_such_key=1", "unknown FrameEnhancer config keys: ['no_such_key']"),
                             ("n_fft=128", "regression_channels=65 (n_fft // 2 + 1)"),
                             ("wavenet.skip_channels=16", "--set wavenet.skip_channels=16 changes the model's "
                                                          "weights (their shapes differ)")]:
        bad = tmp_path / "bad.pt"
        assert main(["export", str(bad), "--model", str(tmp_path / "d.pt"), "--set", setting]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
        assert not bad.exists()
