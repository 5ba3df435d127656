"""voxsep.registry: bundled models by name, checkpoint paths, task checks."""
from __future__ import annotations

import pytest
import torch

from engine.checkpoint import build_model, save_checkpoint
from frontend.errors import VoxsepError
from voxsep.registry import MODELS_DIR, list_models, load_model, resolve_model
from tests.engine import toy_task  # noqa: F401  (registers toy_linear)


@pytest.fixture
def models_dir(tmp_path):
    folder = tmp_path / "models"
    torch.manual_seed(0)
    for task, name in [("separation", "default"), ("separation", "small"), ("enhancement", "default")]:
        model = build_model("toy_linear", {"in_features": 3 if task == "separation" else 2})
        save_checkpoint(folder / f"{task}-{name}.pt", task=task, model_name="toy_linear",
                        model_config=model.config, sample_rate=8000, model=model)
    (folder / "separation-default.md").write_text("# card\n")
    (folder / "README.txt").write_text("not a model\n")
    (folder / "nodash.pt").write_bytes(b"")  # not named task-name: ignored
    return folder


def test_list_and_resolve_by_name(models_dir):
    found = list_models(models_dir=models_dir)
    assert [(m.task, m.name) for m in found] == [("enhancement", "default"), ("separation", "default"),
                                                 ("separation", "small")]
    assert found[1].card == models_dir / "separation-default.md" and found[2].card is None
    assert [m.name for m in list_models("separation", models_dir)] == ["default", "small"]
    assert resolve_model("small", "separation", models_dir) == models_dir / "separation-small.pt"
    assert resolve_model("default", "enhancement", models_dir) == models_dir / "enhancement-default.pt"
    assert MODELS_DIR.name == "models" and MODELS_DIR.parent.name == "voxsep"


def test_unknown_name_lists_the_available_ones(models_dir):
    with pytest.raises(VoxsepError, match=r"unknown separation model 'big' \(bundled separation models: default, small;"):
        resolve_model("big", "separation", models_dir)
    with pytest.raises(VoxsepError, match=r"unknown vocoder model 'default' \(bundled vocoder models: none bundled"):
        resolve_model("default", "vocoder", models_dir)
    with pytest.raises(VoxsepError, match="runs/x/best.pt: no such checkpoint file"):
        resolve_model("runs/x/best.pt", "separation", models_dir)


def test_load_model_by_name_and_path_checks_the_task(models_dir):
    model, ckpt = load_model("default", "separation", models_dir)
    assert not model.training and model.linear.in_features == 3 and ckpt["sample_rate"] == 8000
    path = models_dir / "separation-small.pt"
    same, _ = load_model(str(path), "separation", models_dir)
    other, _ = load_model(path, "separation")
    x = torch.randn(2, 3)
    with torch.no_grad():
        assert torch.equal(same(x), other(x))
    with pytest.raises(VoxsepError, match=f"{path}: this is a 'separation' model, not a 'vocoder' model"):
        load_model(path, "vocoder")
