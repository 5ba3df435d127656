"""The composed multi-head separator: every registered trunk (with both encoders) honours one
contract, checkpoints round-trip with weights_only, SVoice-layout checkpoints still load."""
from __future__ import annotations

import pytest
import torch

from engine.checkpoint import build_model, load_checkpoint, save_checkpoint
from engine.train import init_weights
from frontend.errors import VoxsepError
from separation.losses import SeparationLossConfig, separation_loss
from separation.model import (MulCatSeparator, MultiHeadSeparator, upgrade_svoice_state_dict)
from separation.trunks import TRUNKS

SR = 8000

#: tiny sizes of every registered trunk (a new trunk must add its entry: the test below checks it)
TINY_TRUNKS = {
    "mulcat": {"feature_size": 16, "hidden_size": 8, "chunk_size": 10, "n_blocks": 2},
    "dprnn": {"feature_size": 16, "hidden_size": 8, "chunk_size": 10, "n_blocks": 2},
    "blstm": {"hidden_size": 16, "n_layers": 2},
    "sudormrf": {"bottleneck_size": 16, "n_blocks": 2, "upsampling_depth": 2},
}
ENCODERS = {
    "conv": {"type": "conv", "n_filters": 16, "kernel_size": 16, "stride": 8, "decoder_frame_length": 16},
    "stft": {"type": "stft", "n_fft": 64, "hop_length": 16},
}


def tiny(trunk: str, encoder: str = "stft", counter: str = "head", max_speakers: int = 5) -> dict:
    return {"max_speakers": max_speakers, "encoder": ENCODERS[encoder],
            "trunk": {"type": trunk, **TINY_TRUNKS[trunk]},
            "counter": {"type": counter} if counter == "head" else
            {"type": "crnn", "n_mels": 16, "n_fft": 128, "hop_length": 32, "channels": [4, 4], "hidden_size": 8},
            "sample_rate": SR}


def test_every_registered_trunk_is_covered():
    assert set(TRUNKS.classes) == set(TINY_TRUNKS)


@pytest.mark.parametrize("encoder", sorted(ENCODERS))
@pytest.mark.parametrize("trunk", sorted(TINY_TRUNKS))
def test_trunk_contract_shapes_counts_and_checkpoint_round_trip(trunk, encoder, tmp_path):
    torch.manual_seed(0)
    model = build_model("multihead", tiny(trunk, encoder)).eval()
    assert model.hop == ENCODERS[encoder].get("stride", ENCODERS[encoder].get("hop_length"))
    mix = torch.randn(3, 1237) * 0.1
    out = model(mix, lengths=torch.tensor([1237, 1000, 800]), all_blocks=True)
    for block in out.blocks:
        assert sorted(block.est_sources) == [1, 2, 3, 4, 5]
        for c, est in block.est_sources.items():
            assert est.shape == (3, c, 1237) and torch.isfinite(est).all()
        assert block.count_logits.shape == (3, 5)
    for k in range(1, 6):
        (est,) = model.separate(mix[0], k)
        assert est.shape == (k, 1237)
    assert model.count(mix) == [int(p.argmax()) for p in model.count_probabilities(mix)]
    # a short input (fewer samples than one chunk of frames) works too
    assert model.separate(mix[0, :300], 2)[0].shape == (2, 300)
    path = tmp_path / "m.pt"
    save_checkpoint(path, task="separation", model_name="multihead", model_config=model.get_config(),
                    sample_rate=SR, model=model)
    ckpt = load_checkpoint(path)  # weights_only
    again = build_model(ckpt["model_name"], ckpt["model_config"]).eval()
    again.load_state_dict(ckpt["state_dict"])
    assert torch.equal(again.separate(mix[1], 3)[0], model.separate(mix[1], 3)[0])


@pytest.mark.slow
@pytest.mark.parametrize("trunk", sorted(TINY_TRUNKS))
def test_every_trunk_overfits_a_tiny_batch(trunk):
    """Two fixed 2-talker mixtures: 60 Adam steps must raise the SI-SNR of the 2-talker head well
    above where it starts (the trunk is wired into the loss)."""
    torch.manual_seed(0)
    t = torch.arange(2000) / SR
    sources = torch.stack([torch.stack([torch.sin(2 * torch.pi * 220 * t) * (t * 7 % 1 > 0.5),
                                        torch.sign(torch.sin(2 * torch.pi * 1300 * t)) * 0.3]),
                           torch.stack([torch.sin(2 * torch.pi * 500 * t),
                                        torch.randn(2000) * 0.2 * (t * 3 % 1 > 0.4)])]).float()
    mix = sources.sum(1)
    n_src = torch.tensor([2, 2])
    model = build_model("multihead", tiny(trunk, "stft", max_speakers=2)).train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    config = SeparationLossConfig(count_weight=0.1, multi_scale=True)
    first = None
    for _ in range(60):
        loss, logs = separation_loss(model(mix, heads=[2]), sources, n_src, mix, None, config=config,
                                     count_offset=model.count_offset)
        first = logs["neg_sisnr"] if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert logs["neg_sisnr"] < first - 6.0, (first, logs["neg_sisnr"])


def test_svoice_layout_checkpoints_load_and_convert():
    """An SVoice-layout state dict (as in voxsep <= stop 8 checkpoints) loads into the composed
    MulCat model, and init_from's upgrade maps its keys onto the composed layout."""
    flat = dict(max_speakers=3, n_filters=16, kernel_size=16, stride=8, decoder_frame_length=16, hidden_size=8,
                chunk_size=10, n_blocks=2)
    model = MulCatSeparator(flat).eval()
    old_layout = {}
    for key, value in model.state_dict().items():
        for new, old in (("trunk.blocks.", "blocks."), ("counter.proj.", "count_proj."),
                         ("counter.classifier.", "count_classifier.")):
            if key.startswith(new):
                key = old + key[len(new):]
        old_layout[key] = value
    assert any(k.startswith("blocks.") for k in old_layout)
    fresh = MulCatSeparator(flat).eval()
    fresh.load_state_dict(old_layout)
    mix = torch.randn(1, 800)
    assert torch.equal(fresh.separate(mix, 2)[0], model.separate(mix, 2)[0])
    assert upgrade_svoice_state_dict(old_layout).keys() == model.state_dict().keys()
    composed = MultiHeadSeparator(model.config).eval()
    composed.load_state_dict(composed.upgrade_state_dict(old_layout))
    assert torch.equal(composed.separate(mix, 3)[0], model.separate(mix, 3)[0])
    assert MulCatSeparator.from_config(model.get_config()).get_config() == model.get_config()


def test_bad_part_configs_are_one_line_errors():
    with pytest.raises(VoxsepError, match=r"unknown trunk 'lstm' \(known trunks: blstm, dprnn, mulcat, sudormrf\)"):
        build_model("multihead", {"trunk": {"type": "lstm"}})
    with pytest.raises(VoxsepError, match=r"unknown trunk blstm config keys: \['hidden'\]"):
        build_model("multihead", {"trunk": {"type": "blstm", "hidden": 3}})
    with pytest.raises(VoxsepError, match="unknown encoder"):
        build_model("multihead", {"encoder": {"type": "wavelet"}})
    with pytest.raises(VoxsepError, match="mask must be one of"):
        build_model("multihead", {"encoder": {"type": "stft", "mask": "ratio"}})


def _difference_db(est: torch.Tensor, ref: torch.Tensor) -> float:
    """Energy of ``est - ref`` relative to ``ref``, in dB."""
    return float(10 * torch.log10((est - ref).pow(2).sum() / ref.pow(2).sum()))


def _trained_looking(tmp_path, name: str, **trunk):
    """A tiny BLSTM separator (``trunk`` options) with weights far from a fresh init, as a trained
    model's are, saved as ``tmp_path/name.pt``. Returns ``(model, config, path)``."""
    torch.manual_seed(0)
    config = tiny("blstm")
    config["trunk"].update(trunk)
    model = build_model("multihead", config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    path = tmp_path / f"{name}.pt"
    save_checkpoint(path, task="separation", model_name="multihead", model_config=model.get_config(),
                    sample_rate=SR, model=model)
    return model, config, path


def _deepened(tmp_path, residual: bool = True):
    """A trained-looking 2-layer BLSTM separator saved, and a 3-layer one initialised from it."""
    shallow, shallow_config, path = _trained_looking(tmp_path, "shallow", residual=residual)
    deep_config = {**shallow_config, "trunk": {**shallow_config["trunk"], "n_layers": 3}}
    deep = build_model("multihead", deep_config)
    report = init_weights(deep, [str(path)])
    return shallow, deep.eval(), report


def test_init_from_into_a_deeper_blstm_keeps_the_function_and_trains_the_new_layer(tmp_path):
    shallow, deep, report = _deepened(tmp_path)
    assert report["trunk_layers_grown"] == [2]
    assert all(k.startswith("trunk.layers.2.") for k in report["missing"]) and report["missing"]
    mix = torch.randn(1237) * 0.1
    for k in (1, 3):
        ref, est = shallow.separate(mix, k)[0], deep.separate(mix, k)[0]
        assert _difference_db(est, ref) < -30  # same output
    # a fresh 3-layer stack computes something else: the check above can fail
    torch.manual_seed(1)
    fresh = build_model("multihead", deep.get_config()).eval()
    fresh.load_state_dict({k: v for k, v in deep.state_dict().items() if not k.startswith("trunk.layers.2.")},
                          strict=False)
    ref = shallow.separate(mix, 3)[0]
    assert _difference_db(fresh.separate(mix, 3)[0], ref) > -30
    # the nearly shut gates still pass gradients to every weight of the new layer
    deep.train()
    loss = deep(mix[None], heads=(2,)).blocks[-1].est_sources[2].pow(2).mean()
    loss.backward()
    for name, p in deep.trunk.layers[2].named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def _widened(tmp_path, bidirectional: bool = True, residual: bool = True):
    """A trained-looking narrow BLSTM separator saved, and one 1.5 times wider initialised from it."""
    narrow, narrow_config, path = _trained_looking(tmp_path, "narrow", bidirectional=bidirectional, residual=residual)
    wide_config = {**narrow_config, "trunk": {**narrow_config["trunk"], "hidden_size": 24}}
    wide = build_model("multihead", wide_config)
    report = init_weights(wide, [f"trunk={path}", f"heads={path}", f"counter={path}"])
    return narrow, wide.eval(), report


@pytest.mark.parametrize("bidirectional,residual", [(True, True), (False, True), (True, False)])
def test_init_from_into_a_wider_blstm_keeps_the_function_and_trains_the_new_units(tmp_path, bidirectional, residual):
    narrow, wide, report = _widened(tmp_path, bidirectional, residual)
    assert report["missing"] == [] and report["ignored"] == []
    assert wide.trunk.layers[0].weight_hh_l0.shape == (4 * 24, 24)
    mix = torch.randn(1237) * 0.1
    with torch.no_grad():
        for k in (1, 3, 5):
            ref, est = narrow.separate(mix, k)[0], wide.separate(mix, k)[0]
            assert _difference_db(est, ref) < -80  # the same output
        assert torch.allclose(wide.count_logits(mix[None]), narrow.count_logits(mix[None]), atol=1e-5)
    # the same wide layout freshly built computes something else: the check above can fail
    torch.manual_seed(1)
    fresh = build_model("multihead", wide.get_config()).eval()
    with torch.no_grad():
        assert _difference_db(fresh.separate(mix, 3)[0], narrow.separate(mix, 3)[0]) > -30
    # the zero weights that read the new units get gradients, so training uses the new units
    wide.train()
    out = wide(mix[None], heads=(3,))
    (out.blocks[-1].est_sources[3].pow(2).mean() + out.count_logits.pow(2).mean()).backward()
    width = (2 if bidirectional else 1) * 24
    new_features = [c for c in range(width) if c % 24 >= 16]
    for name, weight in (("heads.3.1.weight", wide.heads["3"][1].weight),
                         ("counter.proj.1.weight", wide.counter.proj[1].weight)):
        assert torch.count_nonzero(weight[:, new_features]) == 0, name
        assert weight.grad[:, new_features].abs().sum() > 0, name
    assert wide.trunk.layers[1].weight_ih_l0.grad[:, new_features].abs().sum() > 0


def test_init_from_a_wider_blstm_into_a_narrower_one_is_an_error(tmp_path):
    _, wide, _ = _widened(tmp_path)
    path = tmp_path / "wide.pt"
    save_checkpoint(path, task="separation", model_name="multihead", model_config=wide.get_config(),
                    sample_rate=SR, model=wide)
    with pytest.raises(VoxsepError, match=r"init_from weight trunk\.layers\.0\.weight_ih_l0 has shape \(96, 33\), the model.s is \(64, 33\)"):
        init_weights(build_model("multihead", tiny("blstm")), [str(path)])


def test_init_from_into_a_shallower_trunk_says_what_it_left_out(tmp_path, capsys):
    _, deep, _ = _deepened(tmp_path)
    path = tmp_path / "deep.pt"
    save_checkpoint(path, task="separation", model_name="multihead", model_config=deep.get_config(),
                    sample_rate=SR, model=deep)
    capsys.readouterr()
    shallow = build_model("multihead", tiny("blstm"))
    report = init_weights(shallow, [f"trunk={path}"])
    assert report["ignored"] and all(k.startswith("trunk.layers.2.") for k in report["ignored"])
    err = capsys.readouterr().err.strip()
    assert err == (f"voxsep: note: init_from: the model has no place for {len(report['ignored'])} checkpoint "
                   "weights (trunk.layers.2): they are not loaded")


def test_init_from_leaves_a_non_residual_or_fresh_trunk_as_built(tmp_path):
    _, _, report = _deepened(tmp_path, residual=False)
    assert "trunk_layers_grown" not in report  # without the residual path a quiet layer blocks the signal
    torch.manual_seed(0)
    model = build_model("multihead", tiny("blstm"))
    counter_only = tmp_path / "counter.pt"
    save_checkpoint(counter_only, task="separation", model_name="multihead", model_config=model.get_config(),
                    sample_rate=SR, model=model)
    other = build_model("multihead", tiny("blstm"))
    before = {k: v.clone() for k, v in other.state_dict().items()}
    report = init_weights(other, [f"counter={counter_only}"])
    assert "trunk_layers_grown" not in report
    assert all(torch.equal(before[k], v) for k, v in other.state_dict().items() if k.startswith("trunk."))


def test_log_features_are_log_magnitudes_beside_log1p():
    config = tiny("blstm")
    config["encoder"] = {**config["encoder"], "features": "log1p+log"}
    model = build_model("multihead", config).eval()
    mix = torch.randn(1, 1600) * 0.1
    features, spec = model.encoder.encode(mix)
    n_bins = model.encoder.n_bins
    assert features.shape == (1, spec.shape[-1], 2 * n_bins)
    magnitude = spec.abs().transpose(1, 2)
    assert torch.allclose(features[..., :n_bins], torch.log1p(magnitude))
    assert torch.allclose(features[..., n_bins:], torch.log(magnitude + 0.01))
    assert model.trunk.layers[0].weight_ih_l0.shape[1] == 2 * n_bins
    with pytest.raises(VoxsepError, match="features must be one of"):
        build_model("multihead", {"encoder": {"type": "stft", "features": "mel"}})


@pytest.mark.parametrize("hidden_size", [16, 24])
def test_init_from_into_log_features_keeps_the_function_and_trains_the_new_inputs(tmp_path, hidden_size):
    """A log1p model into one with log1p+log features (and, with 24 units, a wider trunk too)."""
    old, old_config, path = _trained_looking(tmp_path, "log1p")
    config = {**old_config, "encoder": {**old_config["encoder"], "features": "log1p+log"},
              "trunk": {**old_config["trunk"], "hidden_size": hidden_size}}
    new = build_model("multihead", config)
    report = init_weights(new, [f"trunk={path}", f"heads={path}", f"counter={path}"])
    assert report["missing"] == [] and report["ignored"] == []
    new.eval()
    n_bins = new.encoder.n_bins
    weight = new.trunk.layers[0].weight_ih_l0
    # the old units read the new features through zero weights (new units of a wider trunk read all)
    old_rows = torch.cat([torch.arange(16) + g * hidden_size for g in range(4)])
    assert weight.shape[1] == 2 * n_bins and torch.count_nonzero(weight[old_rows, n_bins:]) == 0
    mix = torch.randn(1237) * 0.1
    with torch.no_grad():
        for k in (1, 3, 5):
            assert _difference_db(new.separate(mix, k)[0], old.separate(mix, k)[0]) < -80
    # the same layout freshly built computes something else: the check above can fail
    torch.manual_seed(1)
    fresh = build_model("multihead", new.get_config()).eval()
    with torch.no_grad():
        assert _difference_db(fresh.separate(mix, 3)[0], old.separate(mix, 3)[0]) > -30
    # the zero weights on the new features get gradients
    new.train()
    new(mix[None], heads=(3,)).blocks[-1].est_sources[3].pow(2).mean().backward()
    assert new.trunk.layers[0].weight_ih_l0.grad[:, n_bins:].abs().sum() > 0


def test_init_from_a_narrower_stft_into_log_features_is_still_an_error(tmp_path):
    """Only a log1p model of the same STFT grows into log1p+log; other input widths stay a mismatch."""
    _, old_config, path = _trained_looking(tmp_path, "log1p")
    encoder = {**old_config["encoder"], "features": "log1p+log", "n_fft": 2 * old_config["encoder"]["n_fft"]}
    new = build_model("multihead", {**old_config, "encoder": encoder})
    with pytest.raises(VoxsepError, match=r"init_from weight trunk\.layers\.0\.weight_ih_l0 has shape"):
        init_weights(new, [str(path)])


def test_head_blocks_start_as_the_identity_and_learn_one_per_count(tmp_path):
    """``head_rnn``: each count's own residual BLSTM before its head. Grown from a checkpoint
    without them the model computes what it did; the blocks learn; only the chosen count's runs."""
    old, old_config, path = _trained_looking(tmp_path, "plain")
    new = build_model("multihead", {**old_config, "head_rnn": 8})
    assert sorted(new.head_blocks) == ["1", "2", "3", "4", "5"]
    report = init_weights(new, [f"trunk={path}", f"heads={path}", f"counter={path}"])
    assert report["missing"] and all(k.startswith("head_blocks.") for k in report["missing"])
    new.eval()
    mix = torch.randn(1237) * 0.1
    with torch.no_grad():
        for k in (1, 3, 5):
            assert _difference_db(new.separate(mix, k)[0], old.separate(mix, k)[0]) < -80
    # trained, the blocks change the output: the check above can fail
    new.train()
    opt = torch.optim.Adam(new.head_blocks.parameters(), lr=0.05)  # the blocks alone: the rest stays
    for _ in range(3):
        opt.zero_grad()
        new(mix[None], heads=(3,)).blocks[-1].est_sources[3].pow(2).mean().backward()
        assert new.head_blocks["3"].proj.weight.grad.abs().sum() > 0
        assert new.head_blocks["2"].proj.weight.grad is None  # only the decoded count's block runs
        opt.step()
    assert new.head_blocks["3"].rnn.weight_ih_l0.grad.abs().sum() > 0  # through the moved projection
    new.eval()
    with torch.no_grad():
        assert _difference_db(new.separate(mix, 3)[0], old.separate(mix, 3)[0]) > -30
        assert _difference_db(new.separate(mix, 2)[0], old.separate(mix, 2)[0]) < -80
    # the layout round-trips through a weights_only checkpoint
    saved = save_checkpoint(tmp_path / "blocks.pt", task="separation", model_name="multihead",
                            model_config=new.get_config(), sample_rate=SR, model=new)
    again = build_model("multihead", load_checkpoint(saved)["model_config"])
    again.load_state_dict(load_checkpoint(saved)["state_dict"])
    with torch.no_grad():
        assert torch.equal(again.eval().separate(mix, 3)[0], new.separate(mix, 3)[0])
    with pytest.raises(VoxsepError, match="head_rnn must be >= 0, got -1"):
        build_model("multihead", {**old_config, "head_rnn": -1})


def test_phase_masks_rotate_the_mixture_and_grow_from_sigmoid_masks(tmp_path):
    """``mask: sigmoid+phase``: each bin's mask is ``sigmoid(a) exp(j phi)``. A ``sigmoid`` model
    grows into it with ``init_from`` (magnitude rows copied, phase rows zero) and computes what it
    did; trained, the phase rows move and the output changes."""
    old, old_config, path = _trained_looking(tmp_path, "magnitude")
    config = {**old_config, "encoder": {**old_config["encoder"], "mask": "sigmoid+phase"}}
    new = build_model("multihead", config)
    n_bins = new.encoder.n_bins
    assert new.heads["3"][1].weight.shape[0] == 3 * 2 * n_bins
    report = init_weights(new, [str(path)])
    assert report["missing"] == [] and report["ignored"] == []
    rows = new.heads["3"][1].weight.detach().view(3, 2 * n_bins, -1)
    assert torch.equal(rows[:, :n_bins], old.heads["3"][1].weight.detach().view(3, n_bins, -1))
    assert torch.count_nonzero(rows[:, n_bins:]) == 0
    new.eval()
    mix = torch.randn(1237) * 0.1
    with torch.no_grad():
        for k in (1, 3, 5):
            assert _difference_db(new.separate(mix, k)[0], old.separate(mix, k)[0]) < -80
    # the decoder: magnitude sigmoid(a), phase phi, applied to the mixture's STFT
    features, spec = new.encoder.encode(mix[None])
    a, phi = torch.randn(1, spec.shape[-1], 2, n_bins), torch.full((1, spec.shape[-1], 2, n_bins), 0.7)
    est = new.encoder.decode(torch.cat([a, phi], dim=-1), spec, 1237)
    mask = torch.sigmoid(a).permute(0, 2, 3, 1) * torch.exp(torch.tensor(0.7j))
    expected = new.encoder.stft.inverse(spec.unsqueeze(1) * mask, 1237)
    assert torch.allclose(est, expected, atol=1e-6)
    # a rotation of the whole mixture by 90 degrees in every bin: the real signal's Hilbert pair,
    # not the signal (the phase is used, not ignored)
    quarter = new.encoder.decode(torch.cat([torch.full_like(a, 20.0), torch.full_like(phi, torch.pi / 2)], -1), spec, 1237)
    assert _difference_db(quarter[0, 0], mix) > -3
    # the zero phase rows get gradients and, trained, change the output
    new.train()
    opt = torch.optim.Adam([new.heads["3"][1].weight], lr=0.05)
    for _ in range(3):
        opt.zero_grad()
        new(mix[None], heads=(3,)).blocks[-1].est_sources[3].pow(2).mean().backward()
        assert new.heads["3"][1].weight.grad.view(3, 2 * n_bins, -1)[:, n_bins:].abs().sum() > 0
        opt.step()
    new.eval()
    with torch.no_grad():
        assert _difference_db(new.separate(mix, 3)[0], old.separate(mix, 3)[0]) > -30
    with pytest.raises(VoxsepError, match="mask must be one of"):
        build_model("multihead", {**old_config, "encoder": {**old_config["encoder"], "mask": "phase"}})
