"""engine.checkpoint: plain-data format, model registry, clear errors for bad files."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from engine.checkpoint import (
    CHECKPOINT_KEYS, FORMAT_VERSION, build_model, load_checkpoint, model_from_checkpoint, register_model,
    registered_models, save_checkpoint,
)
from frontend.errors import VoxsepError
from tests.engine.toy_task import ToyLinear


@register_model("test_mlp_from_config")
class MLP(nn.Module):
    """A model built through ``from_config`` (registry convention 1), with a buffer."""

    def __init__(self, hidden: int, layers: int):
        super().__init__()
        self.hidden, self.layers = hidden, layers
        self.net = nn.Sequential(*[nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh()) for _ in range(layers)])
        self.register_buffer("scale", torch.full((hidden,), 2.0))

    @classmethod
    def from_config(cls, config: dict) -> "MLP":
        return cls(hidden=config["hidden"], layers=config.get("layers", 2))

    def forward(self, x):
        return self.net(x) * self.scale


@register_model("test_kwargs_model")
class KwargsModel(nn.Module):
    """No config class: built as ``cls(**config)`` (registry convention 3)."""

    def __init__(self, size: int = 3):
        super().__init__()
        self.proj = nn.Linear(size, size, bias=False)

    def forward(self, x):
        return self.proj(x)


def _save(path, model, name, config, **kw):
    return save_checkpoint(path, task="separation", model_name=name, model_config=config, sample_rate=8000,
                           model=model, **kw)


@pytest.mark.parametrize("name, config, shape", [
    ("toy_linear", ToyLinear.Config(in_features=5, out_features=3), (7, 5)),
    ("test_mlp_from_config", {"hidden": 6, "layers": 3}, (4, 6)),
    ("test_kwargs_model", {"size": 4}, (2, 4)),
])
def test_round_trip_gives_identical_outputs(tmp_path, name, config, shape):
    torch.manual_seed(0)
    model = build_model(name, dataclasses.asdict(config) if dataclasses.is_dataclass(config) else config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))  # not the init a rebuild would give
    path = _save(tmp_path / "m.pt", model, name, config, train_config={"optim": {"lr": 1e-3}, "dims": (1, 2)},
                 step=12, metrics={"val/loss": torch.tensor(0.25), "acc": 0.5})
    # plain data: the raw file loads with weights_only=True
    raw = torch.load(path, weights_only=True)
    assert set(raw) == set(CHECKPOINT_KEYS)
    ckpt = load_checkpoint(path)
    assert ckpt["format_version"] == FORMAT_VERSION == 1
    assert ckpt["task"] == "separation" and ckpt["model_name"] == name and ckpt["sample_rate"] == 8000
    assert ckpt["step"] == 12 and ckpt["metrics"] == {"val/loss": 0.25, "acc": 0.5}
    assert ckpt["train_config"] == {"optim": {"lr": 1e-3}, "dims": [1, 2]}
    assert ckpt["versions"]["torch"] == str(torch.__version__) and set(ckpt["versions"]) == {"voxsep", "torch", "python"}
    assert ckpt["path"] == str(path)
    rebuilt = model_from_checkpoint(ckpt)
    assert not rebuilt.training and type(rebuilt) is type(model)
    x = torch.randn(*shape)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))
    for key, value in model.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[key], value)
    # a path works too
    with torch.no_grad():
        assert torch.equal(model_from_checkpoint(path)(x), model(x))
    assert not list(tmp_path.glob(".*"))  # no temp files left behind


def test_registry_errors():
    assert {"toy_linear", "test_mlp_from_config", "test_kwargs_model"} <= set(registered_models())
    with pytest.raises(VoxsepError, match=r"unknown model 'nope' \(known models: .*test_kwargs_model.*toy_linear"):
        build_model("nope", {})
    with pytest.raises(VoxsepError, match="model 'toy_linear': bad config .*unexpected keyword argument 'width'"):
        build_model("toy_linear", {"width": 3})
    with pytest.raises(ValueError, match="already registered"):
        register_model("toy_linear")(KwargsModel)
    assert register_model("toy_linear")(ToyLinear) is ToyLinear  # same class again: fine (module reload)
    assert build_model("toy_linear", {}).linear.in_features == ToyLinear.Config().in_features


def test_truncated_file_gives_one_clear_error(tmp_path):
    model = build_model("test_mlp_from_config", {"hidden": 32, "layers": 4})
    path = _save(tmp_path / "m.pt", model, "test_mlp_from_config", {"hidden": 32, "layers": 4})
    data = path.read_bytes()
    for size in (0, 10, len(data) // 3, len(data) // 2, len(data) - 100):
        path.write_bytes(data[:size])
        with pytest.raises(VoxsepError) as info:
            load_checkpoint(path)
        message = str(info.value)
        assert message.startswith(f"{path}: not a readable checkpoint"), message
        assert "\n" not in message and len(message) < 300


def test_other_bad_files(tmp_path):
    with pytest.raises(VoxsepError, match="no such checkpoint file"):
        load_checkpoint(tmp_path / "missing.pt")
    text = tmp_path / "text.pt"
    text.write_text("hello, not a checkpoint")
    with pytest.raises(VoxsepError, match=f"{text}: not a readable checkpoint"):
        load_checkpoint(text)
    pickled = tmp_path / "pickled.pt"
    torch.save({"model": nn.Linear(2, 2)}, pickled)  # a pickled module: refused, never executed
    with pytest.raises(VoxsepError, match="not a readable checkpoint: WeightsUnpickler error: Unsupported global"):
        load_checkpoint(pickled)
    for content, message in [
        ([1, 2], "holds a list, not a dict"),
        ({"epoch": 3, "pytorch-lightning_version": "2.6", "state_dict": {}}, "Lightning training-state checkpoint"),
        ({"format_version": 2}, "format 2 is newer than this voxsep reads"),
        ({"state_dict": {}}, "format_version None, expected 1"),
        ({"format_version": 1, "task": "separation"}, "missing keys: model_name, model_config"),
    ]:
        torch.save(content, tmp_path / "x.pt")
        with pytest.raises(VoxsepError, match=message):
            load_checkpoint(tmp_path / "x.pt")
    # weights of another shape: one line naming the file and the model
    small = _save(tmp_path / "s.pt", build_model("toy_linear", {}), "toy_linear", {})
    ckpt = load_checkpoint(small)
    ckpt["model_config"] = {"in_features": 9}
    with pytest.raises(VoxsepError, match=f"{small}: weights do not fit model 'toy_linear'"):
        model_from_checkpoint(ckpt)
    ckpt["model_name"] = "gone"
    with pytest.raises(VoxsepError, match=f"{small}: unknown model 'gone'"):
        model_from_checkpoint(ckpt)


def test_failed_save_keeps_the_previous_file(tmp_path, monkeypatch):
    model = build_model("toy_linear", {})
    path = _save(tmp_path / "m.pt", model, "toy_linear", {}, step=1)

    def broken_save(obj, f, *args, **kwargs):
        with open(f, "wb") as out:
            out.write(b"PK\x03\x04 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        _save(path, model, "toy_linear", {}, step=2)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]
    with pytest.raises(TypeError, match="cannot store a object"):
        _save(tmp_path / "n.pt", model, "toy_linear", {}, train_config={"x": object()})
    assert not (tmp_path / "n.pt").exists()


def test_bad_model_configs_are_one_clear_error():
    from engine.checkpoint import build_model
    from frontend.errors import VoxsepError
    import separation.model  # noqa: F401  (registers the models)
    import generation.enhancer  # noqa: F401

    with pytest.raises(VoxsepError, match=r"unknown MulCatSeparator config keys: \['n_heads'\]"):
        build_model("svoice_multihead", {"n_heads": 3})
    # a config value the dataclass rejects (ValueError) is the same one-line error
    with pytest.raises(VoxsepError, match="wavenet_denoiser"):
        build_model("wavenet_denoiser", {"wavenet": {"output": "mulaw"}})
    with pytest.raises(VoxsepError, match=r"unknown WaveNet config keys: \['layers'\]"):
        build_model("wavenet_denoiser", {"wavenet": {"layers": 3}})


def test_int8_weights_round_trip_within_half_a_step(tmp_path):
    from engine.checkpoint import INT8_SCALE_SUFFIX, dequantize_int8, quantize_int8

    torch.manual_seed(0)
    state = {"lstm.weight_ih_l0": torch.randn(64, 40) * torch.linspace(0.01, 3.0, 64)[:, None],
             "conv.weight": torch.randn(16, 8, 3),  # 384 elements: small, stays float16
             "big_conv.weight": torch.randn(32, 16, 3),
             "lstm.bias_ih_l0": torch.randn(64), "steps": torch.tensor(7)}
    q = quantize_int8(state, skip=lambda key: key.startswith("conv."))
    assert q["lstm.weight_ih_l0"].dtype == torch.int8 and q["big_conv.weight"].dtype == torch.int8
    assert q["lstm.weight_ih_l0" + INT8_SCALE_SUFFIX].shape == (64,)
    assert q["conv.weight"].dtype == torch.float32  # skipped: as it was
    assert q["lstm.bias_ih_l0"].dtype == torch.float16 and q["steps"].dtype == torch.int64
    back = dequantize_int8(q)
    assert set(back) == set(state)
    for key in ("lstm.weight_ih_l0", "big_conv.weight"):
        w = state[key]
        step = w.reshape(w.shape[0], -1).abs().amax(dim=1) / 127
        err = (back[key] - w).reshape(w.shape[0], -1).abs().amax(dim=1)
        assert back[key].dtype == torch.float32 and bool((err <= step / 2 + 1e-7).all())
    # a checkpoint with int8 weights loads (weights_only) as float32 weights of the same model
    torch.manual_seed(1)
    model = build_model("test_lstm_int8", {"width": 64}).eval()
    full, small = tmp_path / "full.pt", tmp_path / "int8.pt"
    save_checkpoint(full, task="toy", model_name="test_lstm_int8", model_config={"width": 64}, sample_rate=8000,
                    model=model)
    save_checkpoint(small, task="toy", model_name="test_lstm_int8", model_config={"width": 64}, sample_rate=8000,
                    model=quantize_int8(model.state_dict()))
    assert small.stat().st_size < 0.4 * full.stat().st_size
    ckpt = load_checkpoint(small)
    assert not any(k.endswith(INT8_SCALE_SUFFIX) for k in ckpt["state_dict"])
    loaded = model_from_checkpoint(ckpt)
    x = torch.randn(2, 50, 16)
    with torch.no_grad():
        a, b = loaded(x), model(x)
    assert 0 < float((a - b).norm() / b.norm()) < 1e-2


@register_model("test_lstm_int8")
class LSTMNet(nn.Module):
    """An LSTM and a linear layer (the matrices int8 storage is for)."""

    def __init__(self, width: int = 64):
        super().__init__()
        self.lstm = nn.LSTM(16, width, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * width, 8)

    def forward(self, x):
        return self.out(self.lstm(x)[0])
