"""Enhancement and vocoder evaluation (`voxsep evaluate --task enhancement|vocoder`), the noisy/clean
pairs of `voxsep mix --enhancement`, and the per-count table of `voxsep evaluate --table`: values
checked against direct calls of pesq, pystoi and an independent SI-SNR."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.checkpoint import save_checkpoint
from evaluation import (EnhancementSystem, MelSettings, baseline_systems, count_table, evaluate_enhancement,
                        evaluate_vocoder, read_pairs)
from evaluation.baselines import spectral_gating, stft_wiener, wiener_filter
from frontend import VoxsepError, load_audio, save_audio
from generation.enhancer import Enhancer, EnhancerConfig
from generation.wavenet import WaveNetConfig
from tests.evaluation.speech import espeak_utterance
from voxsep.cli import main as cli_main

SR = 16000


def si_snr_reference(ref: np.ndarray, est: np.ndarray) -> float:
    """SI-SNR written out (float64): zero-mean, project, ratio."""
    ref = ref - ref.mean()
    est = est - est.mean()
    target = (est @ ref) / (ref @ ref) * ref
    return float(10 * np.log10(np.sum(target ** 2) / np.sum((est - target) ** 2)))


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory):
    """VoiceBank-DEMAND layout: noisy/ and clean/ (FLAC 16-bit and WAV float mixed), 3 pairs at
    input SNRs -3, 5 and 12 dB."""
    root = tmp_path_factory.mktemp("pairs")
    cache = tmp_path_factory.mktemp("espeak16")
    rng = np.random.default_rng(0)
    for i, snr in enumerate((-3.0, 5.0, 12.0)):
        clean = espeak_utterance(i, SR, 1.6, cache).astype(np.float64) * 0.6
        noise = rng.standard_normal(clean.size)
        noise *= math.sqrt(np.sum(clean ** 2) / np.sum(noise ** 2) / 10 ** (snr / 10))
        save_audio(root / "clean" / "spk" / f"u{i}.wav", torch.from_numpy(clean).float(), SR, subtype="FLOAT")
        save_audio(root / "noisy" / "spk" / f"u{i}.wav", torch.from_numpy(clean + noise).float(), SR,
                   subtype="FLOAT")
    return root


def test_read_pairs_folders_and_tables(pairs_dir, tmp_path):
    pairs = read_pairs(pairs_dir)
    assert [p.id for p in pairs] == ["spk/u0", "spk/u1", "spk/u2"]
    assert all(p.noisy.parent.parent.name == "noisy" and p.clean.parent.parent.name == "clean" for p in pairs)
    table = tmp_path / "pairs_cv.csv"
    table.write_text("noisy,clean,noise\n" + "".join(
        f"{p.noisy},{p.clean},{'file:x.flac' if k else 'hum'}\n" for k, p in enumerate(pairs)))
    assert [p.noisy for p in read_pairs(table)] == [p.noisy for p in pairs]
    assert read_pairs(tmp_path)[0].info["noise"] == "hum"  # the folder's only pairs_<split>.csv
    assert len(read_pairs(tmp_path, "valid")) == 3
    (tmp_path / "pairs_tt.csv").write_text(table.read_text())
    with pytest.raises(VoxsepError, match="give --split"):
        read_pairs(tmp_path)
    lonely = tmp_path / "lonely"
    save_audio(lonely / "noisy" / "a.wav", torch.zeros(100), SR)
    (lonely / "clean").mkdir()
    save_audio(lonely / "clean" / "b.wav", torch.zeros(100), SR)
    with pytest.raises(VoxsepError, match="no clean file of the same name"):
        read_pairs(lonely)
    bad = tmp_path / "bad.csv"
    bad.write_text("path,speaker\na,b\n")
    with pytest.raises(VoxsepError, match="needs the columns 'noisy' and 'clean'"):
        read_pairs(bad)


def test_enhancement_table_values_are_the_metrics(pairs_dir, tmp_path):
    pesq = pytest.importorskip("pesq")
    pystoi = pytest.importorskip("pystoi")
    pairs = read_pairs(pairs_dir)

    references = iter(pairs)  # the pairs are run in order

    def half_way(noisy, sample_rate):  # a "denoiser" that removes half of the noise (it knows the clean)
        clean = load_audio(next(references).clean, sample_rate=sample_rate)[0].numpy()
        return 0.5 * (noisy + clean)

    systems = baseline_systems(["wiener"]) + [EnhancementSystem("half", half_way)]
    result = evaluate_enhancement(pairs, systems, tmp_path / "out", n_examples=1, progress=False,
                                  data_description="three pairs")
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["systems"] == ["noisy", "wiener", "half"] and saved["sample_rate"] == SR
    for pair, row in zip(pairs, saved["rows"]):
        clean = load_audio(pair.clean)[0].numpy().astype(np.float64)
        noisy = load_audio(pair.noisy)[0].numpy().astype(np.float64)
        outputs = {"noisy": noisy, "wiener": wiener_filter(noisy, SR), "half": 0.5 * (noisy + clean)}
        for name, est in outputs.items():
            assert row[f"{name}/pesq_wb"] == pytest.approx(pesq.pesq(SR, clean, est, "wb"), abs=1e-6)
            assert row[f"{name}/stoi"] == pytest.approx(pystoi.stoi(clean, est, SR), abs=1e-9)
            assert row[f"{name}/si_snr"] == pytest.approx(si_snr_reference(clean, est), abs=1e-6)
            assert row[f"{name}/si_snri"] == pytest.approx(row[f"{name}/si_snr"] - row["noisy/si_snr"], abs=1e-9)
        assert row["half/si_snri"] == pytest.approx(20 * math.log10(2), abs=0.05)  # half the noise: +6 dB
        assert row["input_snr_db"] == pytest.approx(si_snr_reference(clean, noisy), abs=0.1)
        assert row["half/rtf"] >= 0 and "noisy/rtf" not in row
    # groups: all pairs and the input-SNR bands, each a mean over its pairs
    assert saved["counts"] == {"all": 3, "snr<0": 1, "0<=snr<10": 1, "snr>=10": 1}
    for key in ("half/pesq_wb", "wiener/stoi", "noisy/si_snr"):
        assert saved["summary"]["all"][key] == pytest.approx(np.mean([r[key] for r in saved["rows"]]))
        assert saved["summary"]["snr<0"][key] == pytest.approx(saved["rows"][0][key])
    # the table: a row per system with its means, in the printed format
    md = (tmp_path / "out" / "results.md").read_text()
    assert md == result.table and "| system | PESQ-WB | STOI | SI-SNR (dB) | SI-SNRi (dB) | RTF |" in md
    s = saved["summary"]["all"]
    assert (f"| half | {s['half/pesq_wb']:.2f} | {s['half/stoi']:.3f} | {s['half/si_snr']:.2f} | "
            f"{s['half/si_snri']:.2f} |") in md
    assert f"| noisy input | {s['noisy/pesq_wb']:.2f} | {s['noisy/stoi']:.3f} | {s['noisy/si_snr']:.2f} | - | - |" in md
    # the plot, and one example: clean, noisy, the denoiser (baselines apart) and a spectrogram
    out = tmp_path / "out"
    assert (out / "plots" / "enhancement.png").stat().st_size > 1000
    assert sorted(p.name for p in out.glob("*.flac")) == ["spk_u0_clean.flac", "spk_u0_half.flac", "spk_u0_noisy.flac"]
    assert [p.name for p in (out / "baselines").glob("*.flac")] == ["spk_u0_wiener.flac"]
    assert len(list(out.glob("*.png"))) == 1


def test_baselines_are_signals_of_the_input_length(pairs_dir):
    noisy = load_audio(read_pairs(pairs_dir)[1].noisy)[0].numpy()
    clean = load_audio(read_pairs(pairs_dir)[1].clean)[0].numpy()
    for fn in (wiener_filter, stft_wiener):
        est = fn(noisy, SR)
        assert est.shape == noisy.shape and np.isfinite(est).all()
    assert si_snr_reference(clean, stft_wiener(noisy, SR)) > si_snr_reference(clean, noisy) + 2  # white noise, 5 dB
    pytest.importorskip("noisereduce")
    assert spectral_gating(noisy, SR).shape == noisy.shape
    assert [s.name for s in baseline_systems()] == ["wiener", "stft_wiener", "spectral_gating"]
    with pytest.raises(VoxsepError, match="unknown baseline"):
        baseline_systems(["median"])


def _tiny_enhancer_checkpoint(path: Path, sample_rate: int) -> Enhancer:
    torch.manual_seed(0)
    model = Enhancer(EnhancerConfig(
        wavenet=WaveNetConfig(layers_per_cycle=2, n_cycles=1, kernel_size=3, causal=False, residual_channels=4,
                              gate_channels=4, skip_channels=4, output="regression"), target_field=64)).eval()
    save_checkpoint(path, task="enhancement", model_name="wavenet_denoiser", model_config=model.config,
                    sample_rate=sample_rate, model=model)
    return model


def test_voxsep_evaluate_enhancement_runs_checkpoints_as_voxsep_enhance(pairs_dir, tmp_path, capsys):
    pytest.importorskip("pesq")
    from voxsep.pipelines import denoise

    model = _tiny_enhancer_checkpoint(tmp_path / "enh.pt", 8000)  # runs at 8 kHz: resampled in and out
    out = tmp_path / "eval"
    rc = cli_main(["evaluate", "--task", "enhancement", "--model", f"tiny={tmp_path / 'enh.pt'}", "--data",
                   str(pairs_dir), "--out", str(out), "--baselines", "none", "--examples", "0", "--max-items", "2"])
    assert rc == 0
    printed = capsys.readouterr().out
    saved = json.loads((out / "results.json").read_text())
    assert saved["systems"] == ["noisy", "tiny"] and saved["n"] == 2 and "| tiny |" in printed
    model.sample_rate = 8000
    for pair, row in zip(read_pairs(pairs_dir), saved["rows"]):
        noisy, _ = load_audio(pair.noisy)
        clean = load_audio(pair.clean)[0].numpy().astype(np.float64)
        est = denoise(noisy[None], SR, model)[0].double().numpy()
        assert row["tiny/si_snr"] == pytest.approx(si_snr_reference(clean, est), abs=1e-4)
    assert not list(out.glob("*.flac"))
    # mistakes: one line, exit 2
    assert cli_main(["evaluate", "--task", "enhancement", "--data", str(tmp_path / "none"), "--out", str(out)]) == 2
    assert cli_main(["evaluate", "--task", "enhancement", "--estimates", "x", "--data", str(pairs_dir)]) == 2
    assert cli_main(["evaluate", "--out", str(out)]) == 2  # no --data
    assert "--data is required" in capsys.readouterr().err


def test_vocoder_evaluation_identity_has_zero_distance(tmp_path, espeak_cache):
    wav = espeak_utterance(3, SR, 1.2, espeak_cache)
    save_audio(tmp_path / "u.flac", torch.from_numpy(wav), SR)
    settings = MelSettings(SR, n_fft=1024, hop_length=256, n_mels=40)
    result = evaluate_vocoder([tmp_path / "u.flac"], settings, lambda w: w.clone(), tmp_path / "out",
                              bits_per_sample=lambda w: 7.5, max_seconds=1.0, n_examples=1, progress=False)
    s = result["summary"]
    assert s["vocoder/log_mel_rmse_db"] == 0.0 and s["vocoder/mcd_db"] == 0.0 and s["bits_per_sample"] == 7.5
    assert 0 < s["griffin_lim/log_mel_rmse_db"] < 20 and s["griffin_lim/mcd_db"] > 0
    if "vocoder/stoi" in s:
        assert s["vocoder/stoi"] == pytest.approx(1.0, abs=1e-6)
    assert result["rows"][0]["name"] == "u" and len(list((tmp_path / "out").glob("*.flac"))) == 3
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| WaveNet vocoder | 0.00 | 0.00 |" in table and "teacher-forced 7.500 bits/sample" in table


def _summary(name: str, ok: float) -> dict:
    return {"results": {name: {
        "all": {"n": 6, "si_snri": 5.5, "si_snri_est": 4.25, "count_acc": ok},
        "by_count": {"1": {"n": 2, "si_snri": None, "si_snr": 30.0, "si_snri_est": None, "count_acc": 1.0},
                     "2": {"n": 4, "si_snri": 5.5, "si_snri_est": 4.25, "count_acc": 0.5}}}}}


def test_count_table_and_voxsep_evaluate_table(tmp_path, capsys):
    expected = (
        "| talkers | mixtures | ours: SI-SNRi true count | ours: SI-SNRi est. count | ours: count acc. |\n"
        "|---:|---:|---:|---:|---:|\n"
        "| 1 | 2 | (SI-SNR 30.00) | - | 100.0 % |\n"
        "| 2 | 4 | 5.50 | 4.25 | 50.0 % |\n"
        "| all | 6 | 5.50 | 4.25 | 66.7 % |\n")
    assert count_table([_summary("ours", 4 / 6)]) == expected
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(_summary("ours", 4 / 6)))
    b.write_text(json.dumps(_summary("theirs", 0.5)))
    assert cli_main(["evaluate", "--table", str(a), str(b), "--system", "ours"]) == 0
    assert capsys.readouterr().out == expected
    assert cli_main(["evaluate", "--table", str(a), str(b)]) == 0
    assert "theirs: count acc." in capsys.readouterr().out
    assert cli_main(["evaluate", "--table", str(a), "--system", "nobody"]) == 2
    (tmp_path / "c.json").write_text("{")
    assert cli_main(["evaluate", "--table", str(tmp_path / "c.json")]) == 2


# ------------------------------------------------------------------------------- noisy/clean pairs
@pytest.fixture(scope="module")
def speech_table(tmp_path_factory, espeak_cache_module):
    root = tmp_path_factory.mktemp("speech_table")
    rows = ["path,speaker,corpus"]
    for k in range(24):
        wav = espeak_utterance(k % 12, 8000, 0.8, espeak_cache_module)
        save_audio(root / "speech" / f"s{k:02d}" / "a.flac", torch.from_numpy(np.roll(wav, 97 * k)), 8000)
        rows.append(f"s{k:02d}/a.flac,s{k:02d},c{k % 2}")
    (root / "speech" / "manifest.csv").write_text("\n".join(rows) + "\n")
    for k in range(8):
        noise = np.random.default_rng(k).normal(0, 0.1, 4000).astype(np.float32)
        save_audio(root / "noise" / f"n{k}.flac", torch.from_numpy(noise), 8000)
    (root / "conf.yaml").write_text(
        "task: enhancement\nsample_rate: 8000\nrun_dir: runs/x\nmodel: {name: wavenet_denoiser, config: {}}\n"
        "data:\n  manifest: DATA/speech\n  fractions: [0.7, 0.3, 0.0]\n  snr_db: [-5, 20]\n"
        "  noise_files: DATA/noise\n  noise_file_prob: 0.5\n  noise_kinds: [colored, hum]\n")
    return root


@pytest.fixture(scope="module")
def espeak_cache_module(tmp_path_factory):
    return tmp_path_factory.mktemp("espeak8")


@pytest.mark.slow
def test_voxsep_mix_enhancement_writes_held_back_pairs(speech_table, tmp_path, capsys):
    from frontend.utterances import noise_recordings, read_utterances

    pytest.importorskip("yaml")
    out = tmp_path / "valid"
    base = ["mix", "--enhancement", str(speech_table / "conf.yaml"), "--speech", str(speech_table / "speech"),
            "--noise", str(speech_table / "noise"), "--max-seconds", "0.5"]
    args = base + ["--out", str(out), "--n-mixtures", "10"]
    assert cli_main(args) == 0
    assert "wrote 10 noisy/clean pairs (cv 10) at 8000 Hz" in capsys.readouterr().out
    with open(out / "pairs_cv.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    valid_speakers = {u.speaker for u in read_utterances(speech_table / "speech", "valid", fractions=[0.7, 0.3, 0])}
    valid_noise = {p.name for p in noise_recordings(speech_table / "noise", "valid")}
    assert len(rows) == 10 and {r["speaker"] for r in rows} <= valid_speakers
    assert len({r["speaker"] for r in rows}) == min(10, len(valid_speakers))  # every held-back speaker first
    recorded = {r["noise"].removeprefix("file:") for r in rows if r["noise"].startswith("file:")}
    assert recorded and recorded <= valid_noise
    for r in rows:
        noisy, sr = load_audio(out / r["noisy"])
        clean, _ = load_audio(out / r["clean"])
        assert sr == 8000 and noisy.shape == clean.shape and noisy.shape[-1] <= 4000
        measured = 10 * math.log10(clean.double().pow(2).sum() / (noisy - clean).double().pow(2).sum())
        assert measured == pytest.approx(float(r["snr_db"]), abs=0.02)  # the SNR asked, measured back
        assert -5 <= float(r["snr_db"]) <= 20
    assert json.loads((out / "settings.json").read_text())["data"]["noise_files"] == str(speech_table / "noise")
    # the same command gives the same pairs; an existing folder is kept unless --overwrite
    assert cli_main(args) == 2
    again = tmp_path / "again"
    assert cli_main(base + ["--out", str(again), "--n-mixtures", "10"]) == 0
    first = load_audio(out / rows[3]["noisy"])[0]
    assert torch.equal(first, load_audio(again / rows[3]["noisy"])[0])
    # a fixed SNR and test speakers on request; evaluation reads the folder
    assert cli_main(base + ["--out", str(tmp_path / "snr"), "--snr", "5", "--n-mixtures", "cv=3", "--overwrite"]) == 0
    with open(tmp_path / "snr" / "pairs_cv.csv", newline="") as f:
        assert {float(r["snr_db"]) for r in csv.DictReader(f)} == {5.0}
    assert len(read_pairs(tmp_path / "snr")) == 3
    # the config's babble settings make the pairs too (a crowd for every pair here)
    import yaml

    from voxsep.noisy_pairs import write_noisy_pairs

    data = yaml.safe_load((speech_table / "conf.yaml").read_text())["data"]
    data.update(manifest=str(speech_table / "speech"), noise_files=str(speech_table / "noise"),
                babble={"prob": 1.0, "talkers": [2, 3]})
    write_noisy_pairs(data, 8000, tmp_path / "crowd", {"cv": 4}, max_seconds=0.5, progress=False)
    with open(tmp_path / "crowd" / "pairs_cv.csv", newline="") as f:
        noises = [r["noise"] for r in csv.DictReader(f)]
    assert len(noises) == 4 and set(noises) <= {"crowd:2", "crowd:3"}
    bad = tmp_path / "sep.yaml"
    bad.write_text("task: separation\n")
    assert cli_main(["mix", "--enhancement", str(bad), "--out", str(tmp_path / "x")]) == 2
