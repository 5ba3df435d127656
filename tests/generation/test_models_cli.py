"""Checkpoint round trips, the vocoder, the enhance/vocode commands, pipelines and the debug recipes."""
import json
from pathlib import Path

import pytest
import torch

from engine.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from frontend import load_audio, save_audio
from generation.enhancer import Enhancer, EnhancerConfig
from generation.task import VocoderTask
from generation.vocoder import Vocoder, VocoderConfig
from generation.wavenet import WaveNet, WaveNetConfig
from tests.generation.test_wavenet import conditioning, small_config
from tests.speech_fixture import cached_tiny_corpus
from voxsep.cli import main as cli
from voxsep.pipelines import enhance_sources, load_enhancer

ROOT = Path(__file__).resolve().parents[2]


def tiny_vocoder() -> Vocoder:
    return Vocoder(VocoderConfig(
        wavenet=WaveNetConfig(layers_per_cycle=3, n_cycles=1, residual_channels=8, gate_channels=8, skip_channels=8,
                              output="mulaw", local_channels=16, upsample_factors=(4, 4, 8)),
        sample_rate=8000, n_fft=512, hop_length=128, n_mels=16))


def tiny_enhancer() -> Enhancer:
    return Enhancer(EnhancerConfig(
        wavenet=WaveNetConfig(layers_per_cycle=3, n_cycles=1, kernel_size=3, causal=False, residual_channels=8,
                              gate_channels=8, skip_channels=8, output="regression"), target_field=128))


@pytest.mark.parametrize("cond", ["none", "local+speaker", "global_vector"])
@pytest.mark.parametrize("output", ["mulaw", "logistic_mixture", "regression"])
def test_wavenet_checkpoint_round_trip(tmp_path, cond, output):
    torch.manual_seed(0)
    model = WaveNet(small_config(3, output, cond)).eval()
    save_checkpoint(tmp_path / "m.pt", task="vocoder", model_name="wavenet", model_config=model.config,
                    sample_rate=8000, model=model)
    loaded = model_from_checkpoint(tmp_path / "m.pt")
    assert loaded.config == model.config
    x = torch.rand(2, 40) * 2 - 1
    local, glob = conditioning(model.config, 2, 40, dtype=torch.float32)
    with torch.no_grad():
        assert torch.equal(model(x, local, glob), loaded(x, local, glob))
    raw = torch.load(tmp_path / "m.pt", weights_only=True)
    assert raw["model_name"] == "wavenet" and isinstance(raw["model_config"]["upsample_factors"], list)


def test_enhancer_and_vocoder_checkpoints_round_trip(tmp_path):
    torch.manual_seed(0)
    enh, voc = tiny_enhancer().eval(), tiny_vocoder().eval()
    save_checkpoint(tmp_path / "e.pt", task="enhancement", model_name="wavenet_denoiser", model_config=enh.config,
                    sample_rate=8000, model=enh)
    save_checkpoint(tmp_path / "v.pt", task="vocoder", model_name="wavenet_vocoder", model_config=voc.config,
                    sample_rate=8000, model=voc)
    enh2, voc2 = model_from_checkpoint(tmp_path / "e.pt"), model_from_checkpoint(tmp_path / "v.pt")
    x = torch.randn(1000) * 0.1
    assert torch.equal(enh.enhance(x), enh2.enhance(x))
    mel = voc.mel_of(x)
    assert mel.shape == (16, 1000 // 128 + 1)
    with torch.no_grad():
        assert torch.equal(voc(x[None, :896], mel[None]), voc2(x[None, :896], mel[None]))
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(voc.vocode(mel, generator=g1), voc2.vocode(mel, generator=g2))
    assert "mel.mel.mel_scale.fb" not in load_checkpoint(tmp_path / "v.pt")["state_dict"]


def test_vocoder_task_and_vocode_paths():
    torch.manual_seed(0)
    voc = tiny_vocoder()
    task = VocoderTask()
    wav = torch.randn(2, 1024) * 0.1
    loss, logs = task.loss(voc, {"wav": wav})
    loss.backward()
    assert 0 < logs["loss"] < 10 and voc.wavenet.layers[0].local_proj.weight.grad.abs().sum() > 0
    mel = voc.mel_of(wav[0]).detach()
    out = voc.vocode(mel, temperature=0.0, method="reference")
    assert out.shape == ((mel.shape[-1] - 1) * 128,)
    assert torch.equal(out, voc.vocode(mel, temperature=0.0, method="fast"))
    with pytest.raises(ValueError, match="mel must be"):
        voc.vocode(torch.zeros(15, 4))
    with pytest.raises(ValueError, match="local_channels"):
        VocoderConfig(n_mels=20, wavenet=WaveNetConfig(local_channels=16, upsample_factors=(256,)))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return cached_tiny_corpus(tmp_path_factory)


def _run_cli(args, capsys=None):
    return cli([str(a) for a in args])


def test_enhance_command_and_pipeline(tmp_path, corpus, capsys):
    torch.manual_seed(0)
    enh = tiny_enhancer()
    ckpt = tmp_path / "enh.pt"
    save_checkpoint(ckpt, task="enhancement", model_name="wavenet_denoiser", model_config=enh.config,
                    sample_rate=8000, model=enh)
    wav, sr = load_audio(next((corpus.parent / "wav8k").rglob("*.flac")))
    save_audio(tmp_path / "in16k.wav", torch.nn.functional.interpolate(wav[None, None], scale_factor=2)[0, 0], 16000)
    assert _run_cli(["enhance", tmp_path / "in16k.wav", "-o", tmp_path / "out", "--model", ckpt]) == 0
    out, out_sr = load_audio(tmp_path / "out" / "in16k.wav")
    assert out_sr == 16000 and out.shape == (2 * wav.shape[-1],)
    # the pipeline: resampling to the model's rate and back, one source at a time
    model = load_enhancer(ckpt)
    sources = torch.stack([wav, 0.5 * wav])
    est = enhance_sources(sources, 8000, model)
    assert est.shape == sources.shape
    assert torch.allclose(est[1], 0.5 * est[0], atol=1e-5)  # level-normalised
    # errors: one line naming the file, exit 2, no output folder
    (tmp_path / "bad.wav").write_text("not audio")
    assert _run_cli(["enhance", tmp_path / "in16k.wav", tmp_path / "bad.wav", "-o", tmp_path / "o2",
                     "--model", ckpt]) == 2
    err = capsys.readouterr().err
    assert "bad.wav" in err and err.count("\n") == 1 and not (tmp_path / "o2").exists()
    assert _run_cli(["enhance", tmp_path / "in16k.wav", "-o", tmp_path / "o3", "--model", tmp_path / "no.pt"]) == 2
    assert "no.pt" in capsys.readouterr().err


def test_vocode_command(tmp_path, corpus):
    torch.manual_seed(0)
    voc = tiny_vocoder()
    ckpt = tmp_path / "voc.pt"
    save_checkpoint(ckpt, task="vocoder", model_name="wavenet_vocoder", model_config=voc.config,
                    sample_rate=8000, model=voc)
    wav, _ = load_audio(next((corpus.parent / "wav8k").rglob("*.flac")))
    save_audio(tmp_path / "a.wav", wav[:4000], 8000)
    args = ["vocode", tmp_path / "a.wav", "-o", tmp_path / "out", "--model", ckpt, "--temperature", "0"]
    assert _run_cli(args) == 0
    out, sr = load_audio(tmp_path / "out" / "a.wav")
    assert sr == 8000 and out.shape == (4000,)
    expected = voc.vocode(voc.mel_of(wav[:4000]), n_samples=4000, temperature=0.0)
    assert torch.allclose(out, expected, atol=1e-4)  # 16-bit file
    # an enhancement checkpoint is refused by vocode, naming the file
    enh = tiny_enhancer()
    save_checkpoint(tmp_path / "e.pt", task="enhancement", model_name="wavenet_denoiser", model_config=enh.config,
                    sample_rate=8000, model=enh)
    assert _run_cli(["vocode", tmp_path / "a.wav", "-o", tmp_path / "o2", "--model", tmp_path / "e.pt"]) == 2


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["tts_enhancement", "tts_vocoder"])
def test_debug_recipe_trains_and_evaluates(tmp_path, corpus, recipe):
    run_dir = tmp_path / "run"
    conf = ROOT / "recipes" / recipe / "conf_debug.yaml"
    assert _run_cli(["train", conf, f"data.manifest={corpus}", "--run-dir", run_dir]) == 0
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    assert any("val/loss" in h for h in history)
    ckpt = load_checkpoint(run_dir / "best.pt")
    assert ckpt["task"] == ("enhancement" if recipe == "tts_enhancement" else "vocoder")
    out = tmp_path / "eval"
    if recipe == "tts_enhancement":  # the run.sh stages: a fixed noisy test set, then voxsep evaluate
        pairs = tmp_path / "pairs"
        assert _run_cli(["mix", "--enhancement", conf, "--speech", corpus, "--out", pairs, "--splits", "tt",
                         "--n-mixtures", "1", "--max-seconds", "0.6"]) == 0
        cmd = ["evaluate", "--task", "enhancement", "--model", run_dir / "best.pt", "--data", pairs, "--out", out]
    else:
        cmd = ["evaluate", "--task", "vocoder", "--model", run_dir / "best.pt", "--data", corpus, "--split", "test",
               "--out", out, "--max-items", "1", "--max-seconds", "0.6"]
    assert _run_cli(cmd) == 0
    summary = json.loads((out / "results.json").read_text())["summary"]
    key = "all" if recipe == "tts_enhancement" else None
    values = summary[key] if key else summary
    assert all(isinstance(v, float) for v in values.values()) and (out / "results.md").is_file()
    # the example: three FLAC files (reference, input or baseline, model output) and a spectrogram PNG
    flacs = sorted(out.glob("*.flac"))
    assert len(flacs) == 3 and all(load_audio(f)[1] == 8000 for f in flacs)
    assert len(list(out.glob("*.png"))) == 1

