"""recipes/real_enhancement and recipes/real_vocoder: run.sh with conf_debug.yaml on tiny data, every
stage as a user runs it (enhancement: validation pairs of held-back speakers and noise files, training
with the SI-SNR + multi-resolution STFT loss and simulated rooms, evaluation on the validation pairs
and on real-style pairs; vocoder: training, evaluation on held-back speakers against Griffin-Lim)."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.checkpoint import load_checkpoint
from engine.config import read_yaml
from frontend import save_audio
from frontend.utterances import noise_recordings, read_utterances
from tests.evaluation.speech import espeak_utterance

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "real_enhancement"
VOCODER = ROOT / "recipes" / "real_vocoder"
SR = 16000


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """DATA/speech-like table (2 corpora, 24 speakers), DATA/noise-like folder (11 recordings) and a
    VoiceBank-DEMAND-like folder of 2 noisy/clean pairs."""
    root = tmp_path_factory.mktemp("real_enhancement")
    cache = tmp_path_factory.mktemp("espeak")
    rows = ["path,speaker,corpus,seconds"]
    for k in range(24):
        corpus = "so" if k < 12 else "ls"
        wav = np.roll(espeak_utterance(k % 6, SR, 1.0, cache), 211 * k)
        save_audio(root / "speech" / corpus / f"{k:02d}.flac", torch.from_numpy(wav), SR)
        rows.append(f"{corpus}/{k:02d}.flac,{corpus}{k:02d},{corpus},1.0")
    (root / "speech" / "manifest.csv").write_text("\n".join(rows) + "\n")
    rng = np.random.default_rng(0)
    for k in range(11):
        save_audio(root / "noise" / f"n{k:02d}.flac", torch.from_numpy(rng.normal(0, 0.1, SR // 2)).float(), SR)
    for k in range(2):
        clean = espeak_utterance(10 + k, SR, 1.0, cache)
        save_audio(root / "pairs" / "clean" / f"p{k}.flac", torch.from_numpy(clean), SR)
        noisy = clean + rng.normal(0, 0.05, clean.size).astype(np.float32)
        save_audio(root / "pairs" / "noisy" / f"p{k}.flac", torch.from_numpy(noisy), SR)
    return root


def test_conf_is_the_documented_cpu_recipe():
    conf = read_yaml(RECIPE / "conf.yaml")
    assert conf["task"] == "enhancement" and conf["sample_rate"] == 16000
    assert conf["task_options"]["loss"] == {"si_snr": 1.0, "mrstft": 1.0}
    data = conf["data"]
    assert data["manifest"] == "DATA/speech/manifest.csv" and data["noise_files"] == "DATA/noise"
    assert data["fractions"] == [0.91, 0.09, 0.0] and data["snr_db"] == [-5, 20]
    # the same speaker split as recipes/real_separation (one rule for the project)
    separation = read_yaml(ROOT / "recipes" / "real_separation" / "conf.yaml")
    assert separation["data"]["train"]["utterances"][0]["fractions"] == data["fractions"]


def test_conf_tf_is_conf_with_the_wavenet_on_frames():
    from engine.checkpoint import build_model
    from generation import enhancer  # noqa: F401  (registers the denoisers)

    conf, tf = read_yaml(RECIPE / "conf.yaml"), read_yaml(RECIPE / "conf_tf.yaml")
    # the same data, split, loss and training settings: only the model differs
    assert {k: v for k, v in tf.items() if k != "model"} == {k: v for k, v in conf.items() if k != "model"}
    model = build_model(tf["model"]["name"], tf["model"]["config"])
    assert type(model).__name__ == "FrameEnhancer"
    assert model.wavenet.receptive_field == 253 and model.receptive_field / 16000 == pytest.approx(2.09, abs=0.01)


def test_conf_crowd_is_conf_tf_with_a_crowd_behind_every_item():
    tf, crowd = read_yaml(RECIPE / "conf_tf.yaml"), read_yaml(RECIPE / "conf_crowd.yaml")
    babble = crowd["data"].pop("babble")
    assert crowd == tf  # nothing else differs
    assert babble == {"prob": 1.0, "talkers": [3, 12], "room_prob": 0.5}


def _run_recipe(run_sh: Path, tmp_path: Path, **variables: str) -> subprocess.CompletedProcess:
    """``run.sh`` from the repository root with ``variables`` in its environment and `voxsep` of
    this checkout first on the PATH (whatever is installed)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "voxsep").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m voxsep "$@"\n')
    (bin_dir / "voxsep").chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", OMP_NUM_THREADS="1",
               PYTHONPATH=str(ROOT), **variables)
    return subprocess.run([str(run_sh)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_debug_recipe_runs_every_stage(tiny_data, tmp_path):
    pytest.importorskip("pyroomacoustics")  # conf_debug.yaml simulates rooms ([rooms] extra, in [dev])
    data, run = tmp_path / "data", tmp_path / "run"
    proc = _run_recipe(RECIPE / "run.sh", tmp_path, CONF=str(RECIPE / "conf_debug.yaml"),
                       SPEECH=str(tiny_data / "speech"), NOISE=str(tiny_data / "noise"),
                       REAL_PAIRS=str(tiny_data / "pairs"), DATA=str(data), RUN=str(run), N_VALID="3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    # stage 1: validation pairs of held-back speakers and noise recordings only
    with open(data / "valid" / "pairs_cv.csv", newline="") as f:
        pairs = list(csv.DictReader(f))
    held_back = {u.speaker for u in read_utterances(tiny_data / "speech", "valid", fractions=[0.91, 0.09, 0.0])}
    assert len(pairs) == 3 and {p["speaker"] for p in pairs} <= held_back
    valid_noise = {p.name for p in noise_recordings(tiny_data / "noise", "valid")}
    assert all(p["noise"].removeprefix("file:") in valid_noise for p in pairs if p["noise"].startswith("file:"))
    # stage 2: trained with the configured loss; validation SI-SNRi picks best.pt
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    epochs = [h for h in history if "val/si_snri" in h]
    assert len(epochs) == 2 and all("train/loss_mrstft" in h and "train/loss_si_snr" in h for h in epochs)
    ckpt = load_checkpoint(run / "best.pt")
    assert ckpt["task"] == "enhancement" and ckpt["sample_rate"] == SR
    # stage 3: the table on both sets, the denoiser beside the baselines
    for folder, n in (("eval_valid", 3), ("eval_real", 2)):
        result = json.loads((run / folder / "results.json").read_text())
        assert result["n"] == n and result["systems"][0] == "noisy" and result["systems"][-1] == "ours"
        assert {"wiener", "stft_wiener"} <= set(result["systems"])
        assert np.isfinite(result["summary"]["all"]["ours/si_snr"])
        assert (run / folder / "results.md").is_file() and (run / folder / "plots" / "enhancement.png").is_file()
    assert "| ours |" in proc.stdout


@pytest.mark.slow
def test_debug_vocoder_recipe_trains_and_evaluates_on_held_back_speakers(tiny_data, tmp_path):
    run = tmp_path / "run"
    proc = _run_recipe(VOCODER / "run.sh", tmp_path, CONF=str(VOCODER / "conf_debug.yaml"),
                       SPEECH=str(tiny_data / "speech"), RUN=str(run), N_EVAL="2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = load_checkpoint(run / "best.pt")
    assert ckpt["task"] == "vocoder" and ckpt["sample_rate"] == SR
    result = json.loads((run / "eval" / "results.json").read_text())
    held_back = {u.path.stem for u in read_utterances(tiny_data / "speech", "valid", fractions=[0.91, 0.09, 0.0])}
    assert result["n"] == 2 and {r["name"] for r in result["rows"]} <= held_back  # the checkpoint's split
    assert all(np.isfinite(result["summary"][k]) for k in ("vocoder/log_mel_rmse_db", "griffin_lim/mcd_db", "rtf"))
    assert "Griffin-Lim" in (run / "eval" / "results.md").read_text()


def test_vocoder_conf_is_16k_and_holds_back_the_separation_speakers():
    conf = read_yaml(VOCODER / "conf.yaml")
    assert conf["task"] == "vocoder" and conf["sample_rate"] == 16000
    assert conf["data"]["fractions"] == read_yaml(RECIPE / "conf.yaml")["data"]["fractions"]
    assert conf["model"]["config"]["hop_length"] == 256 and conf["model"]["config"]["n_fft"] == 1024


def test_adult_table_keeps_adults_and_the_full_tables_speaker_split(tmp_path):
    rows = ["path,speaker,corpus,age,seconds"]
    for k in range(40):
        # ages 13..42 (LibriSpeech gives none): dropping the 5 children moves the plain split rule's cut,
        # so a table without the full table's split would put a speaker elsewhere
        corpus, age = ("so", str(13 + k)) if k < 30 else ("ls", "")
        rows.append(f"{corpus}/{k:02d}.flac,{corpus}{k:02d},{corpus},{age},1.0")
    table = tmp_path / "speech" / "manifest.csv"
    table.parent.mkdir()
    table.write_text("\n".join(rows) + "\n")
    out = tmp_path / "adult" / "manifest.csv"
    subprocess.run([sys.executable, str(RECIPE / "adult_table.py"), str(table), str(out)], check=True, cwd=ROOT,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})
    full = {u.speaker: u for u in read_utterances(table, fractions=(0.91, 0.09, 0.0))}
    kept = read_utterances(out)
    assert sorted(u.speaker for u in kept) == sorted([f"so{k:02d}" for k in range(5, 30)] +
                                                     [f"ls{k:02d}" for k in range(30, 40)])
    for u in kept:  # the same split as in the full table (filtering must not move the cut) and the same file
        assert u.split == full[u.speaker].split
        assert Path(u.path).resolve() == Path(full[u.speaker].path).resolve()
    assert {u.split for u in kept} == {"tr", "cv"}
    with open(out) as f:
        assert all(not Path(r["path"]).is_absolute() for r in csv.DictReader(f))
