"""engine.config: YAML + overrides, validation, defaults, resume rules."""
from __future__ import annotations

import pytest
import yaml

from engine.config import (
    RESUMABLE_CHANGES, TRAINER_DEFAULTS, apply_overrides, check_resumable, config_changes, load_config,
    parse_overrides, read_yaml, resolve_config, save_config,
)
from frontend.errors import VoxsepError
from tests.engine.conftest import toy_config, write_config


def test_override_values_are_typed_yaml():
    parsed = dict((".".join(k), v) for k, v in parse_overrides([
        "optim.lr=1e-3", "a=5.0e-4", "b=3", "c=[1, 2]", "d=true", "e=null", "f=abc", "g=-2E5", "h={x: 1}", "i=",
    ]))
    assert parsed == {"optim.lr": 0.001, "a": 0.0005, "b": 3, "c": [1, 2], "d": True, "e": None, "f": "abc",
                      "g": -200000.0, "h": {"x": 1}, "i": None}
    assert isinstance(parsed["b"], int) and isinstance(parsed["optim.lr"], float)


def test_overrides_set_nested_keys_without_touching_the_input(tmp_path):
    raw = toy_config(tmp_path / "run")
    new = apply_overrides(raw, ["model.config.in_features=8", "data.extra.deep=[1,2]", "trainer.devices=2"])
    assert new["model"]["config"]["in_features"] == 8
    assert new["data"]["extra"] == {"deep": [1, 2]}
    assert new["trainer"]["devices"] == 2
    assert raw["model"]["config"]["in_features"] == 4 and "extra" not in raw["data"]
    with pytest.raises(VoxsepError, match="task is not a section"):
        apply_overrides(raw, ["task.x=1"])
    for bad in ("novalue", "=3", "a..b=1"):
        with pytest.raises(VoxsepError, match="bad override"):
            parse_overrides([bad])


def test_load_config_fills_defaults_and_applies_overrides(tmp_path):
    path = write_config(tmp_path / "c.yaml", toy_config(tmp_path / "run"))
    cfg = load_config(path, ["optim.lr=1e-2", "trainer.max_epochs=7"], run_dir=tmp_path / "other")
    assert cfg["optim"]["lr"] == 0.01 and cfg["trainer"]["max_epochs"] == 7
    assert cfg["run_dir"] == str(tmp_path / "other")
    # defaults filled in for keys the file does not set
    assert cfg["trainer"]["seed"] == TRAINER_DEFAULTS["seed"] == 0
    assert cfg["trainer"]["strategy"] == "auto" and cfg["trainer"]["precision"] == 32
    assert cfg["optim"]["weight_decay"] == 0.0
    assert cfg["optim"]["scheduler"] == {"name": "step", "step_size": 2, "gamma": 0.9}
    assert cfg["task_options"] == {}
    # resolving is idempotent, and the saved YAML reads back identical
    assert resolve_config(cfg) == cfg
    save_config(cfg, tmp_path / "saved.yaml")
    assert read_yaml(tmp_path / "saved.yaml") == cfg


@pytest.mark.parametrize("override, message", [
    ("foo.bar=1", "unknown config section 'foo'"),
    ("trainer.max_epoch=3", "unknown key trainer.max_epoch"),
    ("optim.scheduler.step=3", "unknown key optim.scheduler.step"),
    ("optim.scheduler.name=linear", "optim.scheduler.name must be one of"),
    ("optim.optimizer=lbfgs", "optim.optimizer must be one of"),
    ("optim.lr=-1", "optim.lr must be positive"),
    ("trainer.batch_size=2.5", "trainer.batch_size must be int"),
    ("trainer.batch_size=0", "trainer.batch_size must be positive"),
    ("trainer.progress_bar=3", "trainer.progress_bar must be bool"),
    ("sample_rate=8k", "sample_rate must be int"),
    ("trainer.monitor_mode=low", "monitor_mode must be min or max"),
    ("model.name=null", "model.name must be set"),
])
def test_bad_configs_name_the_file_and_the_key(tmp_path, override, message):
    path = write_config(tmp_path / "c.yaml", toy_config(tmp_path / "run"))
    with pytest.raises(VoxsepError, match=message) as info:
        load_config(path, [override])
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)


def test_missing_required_and_unreadable_files(tmp_path):
    raw = toy_config(tmp_path / "run")
    del raw["sample_rate"]
    with pytest.raises(VoxsepError, match="missing required key 'sample_rate'"):
        resolve_config(raw)
    with pytest.raises(VoxsepError, match="no such config file"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: [unclosed\n")
    with pytest.raises(VoxsepError, match=f"{bad}: invalid YAML"):
        load_config(bad)
    bad.write_text("- a list\n")
    with pytest.raises(VoxsepError, match="must be a YAML mapping"):
        load_config(bad)


def test_scheduler_defaults_per_name(tmp_path):
    base = toy_config(tmp_path / "run")
    for name, expected in [("none", {"name": "none"}), ("cosine", {"name": "cosine", "t_max": None, "eta_min": 0.0}),
                           ("cosine_steps", {"name": "cosine_steps", "t_max": None, "eta_min": 0.0}),
                           ("plateau", {"name": "plateau", "factor": 0.5, "patience": 5, "min_lr": 0.0})]:
        cfg = resolve_config(apply_overrides(base, [f"optim.scheduler={{name: {name}}}"]))
        assert cfg["optim"]["scheduler"] == expected
    assert resolve_config(apply_overrides(base, ["optim.scheduler=null"]))["optim"]["scheduler"] == {"name": "none"}


def test_resume_rules(tmp_path):
    old = resolve_config(toy_config(tmp_path / "run"))
    longer = resolve_config(apply_overrides(old, ["trainer.max_epochs=50", "trainer.devices=2", "trainer.num_workers=4"]))
    assert check_resumable(old, longer, "c.yaml") == ["trainer.devices", "trainer.max_epochs", "trainer.num_workers"]
    assert set(check_resumable(old, longer, "c.yaml")) <= RESUMABLE_CHANGES
    for change in ("optim.lr=0.1", "model.config.in_features=8", "data.noise=0.5", "trainer.batch_size=16",
                   "trainer.seed=3", "task_options.loss_scale=2", "sample_rate=16000"):
        new = resolve_config(apply_overrides(old, [change]))
        key = change.split("=")[0]
        assert config_changes(old, new) == [key]
        with pytest.raises(VoxsepError, match=f"c.yaml: cannot resume, the config changed \\({key}: "):
            check_resumable(old, new, "c.yaml")
    assert yaml.safe_load(yaml.safe_dump(old)) == old
    # programmatic configs with tuples and paths resolve to what their saved YAML reads back as
    programmatic = {**toy_config(tmp_path / "run"), "run_dir": tmp_path / "run"}
    programmatic["data"]["range"] = (1, (2, 3))
    resolved = resolve_config(programmatic)
    assert resolved["run_dir"] == str(tmp_path / "run") and resolved["data"]["range"] == [1, [2, 3]]
    save_config(resolved, tmp_path / "c.yaml")
    assert check_resumable(read_yaml(tmp_path / "c.yaml"), resolve_config(programmatic), "c.yaml") == []
