"""Inference without the training stack: the core install's commands run with Lightning, asteroid
(and its pins), PyYAML, pesq and pystoi unavailable, and a command that needs an extra says which
one in one line (exit 2).

The unavailable packages are hidden in a child process (``sys.modules[name] = None`` makes their
import fail and ``importlib.util.find_spec`` return None, as in an install without them).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine.checkpoint import save_checkpoint
from generation.enhancer import Enhancer, EnhancerConfig
from generation.wavenet import WaveNetConfig
from voxsep.extras import EXTRAS, extra_message

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "voxsep" / "examples" / "espeak-en-029+linda-p70-s160_000.flac"
HIDDEN = ("pytorch_lightning", "lightning", "lightning_fabric", "asteroid", "asteroid_filterbanks", "torchmetrics",
          "yaml", "pesq", "pystoi", "requests")

# Runs the CLI commands given as JSON in argv[1] in one process; prints one JSON line per command.
CHILD = f"""
import contextlib, io, json, sys
for name in {HIDDEN!r}:
    sys.modules[name] = None
from voxsep.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = main(argv)
    results.append({{"code": code, "stderr": err.getvalue(), "stdout": out.getvalue()}})
for module in ("separation.inference", "separation.mixing", "voxsep.mixtures", "voxsep.demo", "voxsep.corpus",
               "voxsep.commands.mix", "voxsep.commands.corpus", "voxsep.commands.evaluate", "evaluation", "generation"):
    __import__(module)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in {HIDDEN!r} and sys.modules[m] is not None)
print(json.dumps({{"results": results, "loaded": loaded}}))
"""


def _run_without_extras(commands: list[list[str]]) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(commands)], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_core_commands_run_without_the_training_stack_and_extras_are_named(tmp_path):
    torch.manual_seed(0)
    enhancer = Enhancer(EnhancerConfig(
        wavenet=WaveNetConfig(layers_per_cycle=2, n_cycles=1, kernel_size=3, causal=False, residual_channels=4,
                              gate_channels=4, skip_channels=4, output="regression"), target_field=64)).eval()
    denoiser = tmp_path / "denoiser.pt"
    save_checkpoint(denoiser, task="enhancement", model_name="wavenet_denoiser", model_config=enhancer.config,
                    sample_rate=8000, model=enhancer)
    from separation.baselines import DPRNNBaseline

    baseline = DPRNNBaseline({"max_speakers": 2, "asteroid_options": {"n_filters": 8, "bn_chan": 8, "hid_size": 8,
                                                                      "n_repeats": 1}})
    baseline_ckpt = tmp_path / "dprnn.pt"
    save_checkpoint(baseline_ckpt, task="separation", model_name="dprnn_tasnet", model_config=baseline.get_config(),
                    sample_rate=8000, model=baseline)
    config = ROOT / "recipes" / "tts_separation" / "conf_debug.yaml"
    commands = [
        ["separate", str(EXAMPLE), "-o", str(tmp_path / "sep"), "-k", "2"],
        ["count", str(EXAMPLE)],
        ["enhance", str(EXAMPLE), "-o", str(tmp_path / "enh"), "--model", str(denoiser)],
        ["train", str(config), "--run-dir", str(tmp_path / "run")],
        ["separate", str(EXAMPLE), "-o", str(tmp_path / "base"), "--model", str(baseline_ckpt)],
    ]
    out = _run_without_extras(commands)
    sep, count, enhance, train, base = out["results"]
    assert sep["code"] == 0 and sorted(p.name for p in (tmp_path / "sep" / EXAMPLE.stem).iterdir()) == [
        "s1.wav", "s2.wav", "summary.json"]
    assert count["code"] == 0 and count["stdout"].startswith(str(EXAMPLE))
    assert enhance["code"] == 0 and (tmp_path / "enh" / f"{EXAMPLE.stem}.wav").is_file()
    # voxsep train without Lightning: one line naming the extra, exit 2, nothing written
    assert train["code"] == 2 and not (tmp_path / "run").exists()
    assert train["stderr"] == "voxsep: error: voxsep train needs the training extra: pip install 'voxsep[train]'\n"
    # asteroid's baselines need [train] at inference too
    lines = base["stderr"].splitlines()
    assert base["code"] == 2 and len(lines) == 1 and "pip install 'voxsep[train]'" in lines[0]
    assert str(baseline_ckpt) in lines[0] and "asteroid" in lines[0] and not (tmp_path / "base").exists()
    # nothing of the training stack or the other extras got imported by the core modules
    assert out["loaded"] == []


def test_extra_message_names_the_extra():
    assert extra_message("voxsep train", "train") == "voxsep train needs the training extra: pip install 'voxsep[train]'"
    assert set(EXTRAS) >= {"train", "eval"}


def test_pyproject_core_has_no_training_stack():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"]).lower()
    for name in ("lightning", "asteroid", "torchmetrics", "setuptools", "requests", "pyyaml", "pesq", "pystoi"):
        assert name not in core, name
    extras = project["optional-dependencies"]
    assert any(d.startswith("pytorch-lightning") for d in extras["train"])
    assert "asteroid==0.7.0" in extras["train"] and any(d.startswith("setuptools<81") for d in extras["train"])
    assert any("train" in d and "eval" in d for d in extras["dev"] if d.startswith("voxsep["))
