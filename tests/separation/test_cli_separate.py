"""`voxsep separate` and `voxsep count` on real files: outputs and summaries, bad files among good
ones, silence, a 0.1 s file, stereo 44.1 kHz, long files, one-line errors."""
import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from engine.checkpoint import save_checkpoint
from frontend import load_audio
from separation.model import MulCatSeparator
from voxsep.cli import main

SR = 8000
CONFIG = dict(max_speakers=3, n_filters=16, kernel_size=16, stride=8, decoder_frame_length=16, hidden_size=8,
              chunk_size=20, n_blocks=1)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A small separator checkpoint (until a bundled default model exists)."""
    torch.manual_seed(0)
    model = MulCatSeparator(CONFIG)
    path = tmp_path_factory.mktemp("ckpt") / "sep.pt"
    save_checkpoint(path, task="separation", model_name="svoice_multihead", model_config=model.get_config(),
                    sample_rate=SR, model=model)
    return path


def _speech_like(seconds, rate=SR, seed=0):
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    return (0.2 * np.sin(2 * np.pi * 150 * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2
            + 0.05 * rng.standard_normal(n)).astype(np.float32)


def _model(checkpoint):
    from voxsep.registry import load_model
    return load_model(str(checkpoint), task="separation")[0]


def test_separate_writes_sources_and_summary(tmp_path, checkpoint, capsys):
    sf.write(tmp_path / "a.wav", _speech_like(1.5), SR)
    out = tmp_path / "out"
    assert main(["separate", str(tmp_path / "a.wav"), "-o", str(out), "--model", str(checkpoint)]) == 0
    summary = json.loads((out / "a" / "summary.json").read_text())
    k = summary["count"]
    assert 1 <= k <= 3 and summary["sources"] == [f"s{i + 1}.wav" for i in range(k)]
    assert sorted(p.name for p in (out / "a").iterdir()) == sorted(summary["sources"] + ["summary.json"])
    probs = summary["count_probabilities"]
    assert len(probs) == 4 and abs(sum(probs.values()) - 1) < 1e-4 and max(probs, key=probs.get) == str(k)
    assert summary["duration"] == pytest.approx(1.5) and summary["sample_rate"] == SR
    assert summary["model"] == str(checkpoint)
    # the files hold what the model gives for the loaded audio
    model = _model(checkpoint)
    wav, _ = load_audio(tmp_path / "a.wav")
    expected = model.separate(wav)[0]
    for i in range(k):
        est, rate = load_audio(out / "a" / f"s{i + 1}.wav")
        assert rate == SR and torch.allclose(est, expected[i], atol=1e-5)
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{tmp_path / 'a.wav'}: {k} talker") and line.endswith(str(out / "a"))


def test_folder_with_one_bad_file(tmp_path, checkpoint, capsys):
    """The rule of voxsep.files (issue 12): every input is checked first; a bad file among good ones
    stops the command with one line naming it, exit 2, and nothing is written (it used to skip it)."""
    folder = tmp_path / "in"
    folder.mkdir()
    sf.write(folder / "good1.wav", _speech_like(1.0, seed=1), SR)
    sf.write(folder / "good2.flac", _speech_like(0.7, seed=2), SR)
    (folder / "bad.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    out = tmp_path / "out"
    code = main(["separate", str(folder), "-o", str(out), "--model", str(checkpoint), "--num-speakers", "2"])
    captured = capsys.readouterr()
    assert code == 2
    assert not out.exists()  # nothing (not even temp) for any file
    errors = captured.err.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("voxsep: error: ") and "bad.wav" in errors[0]
    assert captured.out.strip() == ""
    # without the bad file, both good ones are separated
    (folder / "bad.wav").unlink()
    assert main(["separate", str(folder), "-o", str(out), "--model", str(checkpoint), "--num-speakers", "2"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["good1", "good2"]
    for name in ("good1", "good2"):
        assert sorted(p.name for p in (out / name).iterdir()) == ["s1.wav", "s2.wav", "summary.json"]
    assert len(capsys.readouterr().out.strip().splitlines()) == 2


@pytest.mark.slow
def test_corrupt_file_is_one_line_error_without_output(tmp_path, checkpoint):
    bad = tmp_path / "corrupt.wav"
    bad.write_bytes(b"\x00\x01" * 100)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "voxsep", "separate", str(bad), "-o", str(out),
                           "--model", str(checkpoint), "--threads", "1"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "corrupt.wav" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists() or not any(out.iterdir())


def test_silence_counts_zero_and_writes_no_sources(tmp_path, checkpoint, capsys):
    sf.write(tmp_path / "quiet.wav", np.zeros(SR, dtype=np.float32), SR)
    out = tmp_path / "out"
    assert main(["separate", str(tmp_path / "quiet.wav"), "-o", str(out), "--model", str(checkpoint)]) == 0
    summary = json.loads((out / "quiet" / "summary.json").read_text())
    assert summary["count"] == 0 and summary["sources"] == [] and summary["count_method"] == "silence"
    assert sorted(p.name for p in (out / "quiet").iterdir()) == ["summary.json"]
    capsys.readouterr()
    assert main(["count", str(tmp_path / "quiet.wav"), "--model", str(checkpoint)]) == 0
    assert capsys.readouterr().out.split("\t")[1] == "0"


def test_tenth_of_a_second_and_stereo_44k(tmp_path, checkpoint):
    sf.write(tmp_path / "tiny.wav", _speech_like(0.1), SR)
    stereo = np.stack([_speech_like(1.2, 44100, seed=3), _speech_like(1.2, 44100, seed=4)], axis=1)
    sf.write(tmp_path / "stereo.wav", stereo, 44100)
    out = tmp_path / "out"
    assert main(["separate", str(tmp_path / "tiny.wav"), str(tmp_path / "stereo.wav"), "-o", str(out),
                 "--model", str(checkpoint), "-k", "2"]) == 0
    tiny, rate = load_audio(out / "tiny" / "s1.wav")
    assert rate == SR and tiny.shape == (800,)
    summary = json.loads((out / "stereo" / "summary.json").read_text())
    assert summary["input_sample_rate"] == 44100 and summary["input_channels"] == 2 and summary["count"] == 2
    est, rate = load_audio(out / "stereo" / "s2.wav")
    mono8k, _ = load_audio(tmp_path / "stereo.wav", sample_rate=SR)  # mono at the model's rate
    assert rate == SR and est.shape == mono8k.shape
    assert torch.allclose(est, _model(checkpoint).separate(mono8k, 2)[0][1], atol=1e-5)


def test_long_file_through_windows_and_count_command(tmp_path, checkpoint, capsys):
    sf.write(tmp_path / "long.wav", _speech_like(5.0, seed=5), SR)
    out = tmp_path / "out"
    assert main(["separate", str(tmp_path / "long.wav"), "-o", str(out), "--model", str(checkpoint),
                 "--window", "1.5", "--overlap", "0.5"]) == 0
    summary = json.loads((out / "long" / "summary.json").read_text())
    assert summary["n_windows"] == 5 and "vote" in summary["count_method"]
    for name in summary["sources"]:
        est, _ = load_audio(out / "long" / name)
        assert est.shape == (5 * SR,) and torch.isfinite(est).all()
    capsys.readouterr()
    assert main(["count", str(tmp_path / "long.wav"), "--model", str(checkpoint), "--window", "1.5",
                 "--overlap", "0.5"]) == 0
    path, count, prob = capsys.readouterr().out.strip().split("\t")
    assert path == str(tmp_path / "long.wav") and int(count) == summary["count"]
    assert float(prob) == pytest.approx(summary["count_probabilities"][count], abs=1e-3)


def test_bad_options_are_user_errors(tmp_path, checkpoint, capsys):
    sf.write(tmp_path / "a.wav", _speech_like(0.5), SR)
    assert main(["separate", str(tmp_path / "a.wav"), "-o", str(tmp_path / "o"), "--model", str(checkpoint),
                 "-k", "7"]) == 2
    assert "1..3" in capsys.readouterr().err
    assert main(["separate", str(tmp_path / "a.wav"), "--model", str(tmp_path / "missing.pt")]) == 2
    assert "missing.pt" in capsys.readouterr().err


def test_separate_then_enhance_rewrites_each_talker_with_the_denoiser(tmp_path, checkpoint):
    from engine.checkpoint import model_from_checkpoint
    from generation.enhancer import Enhancer, EnhancerConfig
    from generation.wavenet import WaveNetConfig
    from voxsep.pipelines import enhance_sources

    torch.manual_seed(1)
    enhancer = Enhancer(EnhancerConfig(wavenet=WaveNetConfig(
        layers_per_cycle=3, n_cycles=1, kernel_size=3, causal=False, residual_channels=8, gate_channels=8,
        skip_channels=8, output="regression"), target_field=128)).eval()
    enh_path = tmp_path / "enh.pt"
    save_checkpoint(enh_path, task="enhancement", model_name="wavenet_denoiser", model_config=enhancer.config,
                    sample_rate=SR, model=enhancer)
    sf.write(tmp_path / "a.wav", _speech_like(1.0), SR)
    plain, enhanced = tmp_path / "plain", tmp_path / "enhanced"
    args = [str(tmp_path / "a.wav"), "--model", str(checkpoint), "-k", "2"]
    assert main(["separate", *args, "-o", str(plain)]) == 0
    assert main(["separate", *args, "-o", str(enhanced), "--enhance", str(enh_path)]) == 0
    before = torch.stack([load_audio(plain / "a" / f"s{i}.wav")[0] for i in (1, 2)])
    after = torch.stack([load_audio(enhanced / "a" / f"s{i}.wav")[0] for i in (1, 2)])
    with torch.inference_mode():
        expected = enhance_sources(before, SR, model_from_checkpoint(enh_path))
    expected = expected * min(1.0, 0.99 / float(expected.abs().max()))
    torch.testing.assert_close(after, expected, atol=1e-5, rtol=0)
    assert not torch.allclose(after, before, atol=1e-3)
    assert json.loads((enhanced / "a" / "summary.json").read_text())["enhanced_with"] == str(enh_path)
    # a separation checkpoint is no enhancer: one line naming the file, nothing written
    assert main(["separate", *args, "-o", str(tmp_path / "bad"), "--enhance", str(checkpoint)]) == 2
    assert not (tmp_path / "bad").exists()


def test_noise_without_speech_counts_zero_with_the_voice_activity_detector(tmp_path, checkpoint, capsys):
    """Rain-like noise is not silent, yet nobody talks in it: with --vad it counts 0 and gives no
    sources ("no speech"); --no-vad leaves it to the counter. Speech still counts >= 1 with --vad."""
    from generation.noise import colored_noise
    from tests.evaluation.speech import espeak_utterance

    rng = np.random.default_rng(0)
    sf.write(tmp_path / "noise.wav", (0.1 * colored_noise(2 * SR, SR, rng)).astype(np.float32), SR)
    sf.write(tmp_path / "talk.wav", np.asarray(espeak_utterance(0, SR, 2.0, tmp_path)), SR)
    out = tmp_path / "out"
    assert main(["separate", str(tmp_path / "noise.wav"), str(tmp_path / "talk.wav"), "-o", str(out),
                 "--model", str(checkpoint), "--vad"]) == 0
    noise = json.loads((out / "noise" / "summary.json").read_text())
    assert noise["count"] == 0 and noise["sources"] == [] and noise["count_method"] == "no speech"
    assert sorted(p.name for p in (out / "noise").iterdir()) == ["summary.json"]
    talk = json.loads((out / "talk" / "summary.json").read_text())
    assert talk["count"] >= 1 and talk["count_method"] == "head"
    capsys.readouterr()
    assert main(["count", str(tmp_path / "noise.wav"), "--model", str(checkpoint), "--vad"]) == 0
    assert capsys.readouterr().out.split("\t")[1:] == ["0", "1.000\n"]
    assert main(["count", str(tmp_path / "noise.wav"), "--model", str(checkpoint), "--no-vad"]) == 0
    assert int(capsys.readouterr().out.split("\t")[1]) >= 1
    # a long file of noise: no window votes -> 0 talkers
    sf.write(tmp_path / "long_noise.wav", (0.1 * colored_noise(5 * SR, SR, rng)).astype(np.float32), SR)
    assert main(["separate", str(tmp_path / "long_noise.wav"), "-o", str(out), "--model", str(checkpoint),
                 "--window", "1.5", "--overlap", "0.5", "--vad"]) == 0
    summary = json.loads((out / "long_noise" / "summary.json").read_text())
    assert summary["count"] == 0 and summary["count_method"] == "no speech in any window"
    assert summary["n_windows"] == 5 and summary["sources"] == []
