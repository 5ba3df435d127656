"""Denoiser: short training improves SI-SNR by >= 3 dB; noise generators; datasets and task;
losses against independent references."""
import math

import numpy as np
import pytest
import torch
from scipy import signal

from generation.enhancer import Enhancer, EnhancerConfig, FrameEnhancer, FrameEnhancerConfig
from generation.losses import denoising_l1, discretized_logistic_mixture_nll, mulaw_cross_entropy, si_snr
from generation.noise import NOISE_KINDS, bandpass_noise, colored_noise, hum, make_noise, mix_at_snr
from generation.task import EnhancementTask
from generation.wavenet import WaveNetConfig
from tests.speech_fixture import cached_tiny_corpus

SR = 8000


def speech_like(n: int, g: torch.Generator) -> torch.Tensor:
    """Harmonic 'voiced' signal with vibrato and a syllable-rate envelope."""
    t = torch.arange(n) / SR
    f0 = 100 + 80 * torch.rand(1, generator=g)
    vibrato = 1 + 0.05 * torch.sin(2 * math.pi * (3 + 2 * torch.rand(1, generator=g)) * t)
    phase = 2 * math.pi * torch.cumsum(f0 * vibrato, 0) / SR
    x = sum(torch.rand(1, generator=g) / h * torch.sin(h * phase + 6.28 * torch.rand(1, generator=g))
            for h in range(1, 8))
    env = torch.relu(torch.sin(2 * math.pi * (2 + 3 * torch.rand(1, generator=g)) * t
                               + 6.28 * torch.rand(1, generator=g)))
    return x * env


def noisy_batch(batch: int, n: int, g: torch.Generator) -> dict:
    clean = torch.stack([speech_like(n, g) for _ in range(batch)])
    noise = torch.randn(batch, n, generator=g)
    noise = noise * clean.pow(2).mean(-1, keepdim=True).sqrt() / noise.pow(2).mean(-1, keepdim=True).sqrt()
    return {"noisy": clean + noise, "clean": clean}  # 0 dB SNR


def tiny_enhancer() -> Enhancer:
    return Enhancer(EnhancerConfig(
        wavenet=WaveNetConfig(layers_per_cycle=6, n_cycles=1, kernel_size=3, causal=False, residual_channels=16,
                              gate_channels=16, skip_channels=16, output="regression"), target_field=256))


def train_briefly(model: Enhancer, task: EnhancementTask, steps: int) -> tuple[dict, torch.Tensor, float, float]:
    """``steps`` of Adam on 0 dB noisy batches, then the model (eval mode) on a fixed unseen batch:
    ``(test batch, estimates, SI-SNR before, SI-SNR after)``."""
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        loss, _ = task.loss(model, noisy_batch(8, model.training_length, g))
        opt.zero_grad()
        loss.backward()
        opt.step()
    test = noisy_batch(8, 8000, torch.Generator().manual_seed(123))  # fixed, unseen
    model.eval()
    est = model.enhance(test["noisy"])
    before = si_snr(test["noisy"], test["clean"]).mean().item()
    return test, est, before, si_snr(est, test["clean"]).mean().item()


@pytest.mark.slow
def test_denoiser_improves_si_snr_by_3db_after_short_training():
    torch.manual_seed(0)
    model = tiny_enhancer()
    task = EnhancementTask()
    test, est, before, after = train_briefly(model, task, 200)
    assert after - before >= 3.0, f"SI-SNR {before:.2f} -> {after:.2f} dB"
    # level invariance: enhance() normalises the input level and restores it
    est_loud = model.enhance(4 * test["noisy"][0])
    assert torch.allclose(est_loud, 4 * est[0], atol=1e-4)
    # validation metrics of the task report the improvement too
    metrics = task.validation_metrics(model, noisy_batch(4, model.training_length, torch.Generator().manual_seed(9)))
    assert metrics["si_snri"] > 2.0 and set(metrics) == {"loss", "si_snr", "si_snri"}


def test_enhance_chunking_equals_one_pass():
    torch.manual_seed(0)
    model = tiny_enhancer().eval()
    x = torch.randn(2, 3000) * 0.1
    whole = model.enhance(x, target_field=3000)
    chunked = model.enhance(x, target_field=100)
    assert torch.allclose(whole, chunked, atol=1e-5)
    assert model.enhance(x[0]).shape == (3000,)
    # one pass on a zero-padded input equals forward on the same padded input (valid region)
    scale = model.config.input_rms / x[:1].pow(2).mean().sqrt()
    padded = torch.nn.functional.pad(x[:1] * scale, (model.wavenet.lookback, model.wavenet.lookahead))
    ref = model(padded)[:, model.valid_slice(padded.shape[-1])] / scale
    assert torch.allclose(whole[:1], ref, atol=1e-5)


def tiny_frame_enhancer() -> FrameEnhancer:
    return FrameEnhancer(FrameEnhancerConfig(
        wavenet=WaveNetConfig(layers_per_cycle=3, n_cycles=1, kernel_size=3, causal=False, residual_channels=16,
                              gate_channels=16, skip_channels=16, output="regression", regression_channels=33),
        n_fft=64, hop_length=16, target_field=512))


def test_frame_denoiser_masks_the_mixture_stft_and_chunks_exactly():
    torch.manual_seed(0)
    model = tiny_frame_enhancer().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # away from the init, so every frame's context matters
    # receptive field: frames 1 + 2 * (1 + 2 + 4) = 15, i.e. 14 hops plus a window on each side
    assert model.wavenet.receptive_field == 15 and model.receptive_field == 14 * 16 + 2 * 64 + 1
    x = torch.randn(2, 3000) * 0.1
    whole = model.enhance(x, target_field=3000)
    for chunk in (100, 512, 1000):  # 100 is rounded up to whole hops (112)
        assert torch.allclose(model.enhance(x, target_field=chunk), whole, atol=1e-6), chunk
    # the output is the mixture's STFT times the head's sigmoid mask: a constant mask scales the input
    constant = tiny_frame_enhancer().eval()
    with torch.no_grad():
        constant.wavenet.head2.weight.zero_()
        constant.wavenet.head2.bias.fill_(math.log(0.25 / 0.75))  # sigmoid -> 0.25
    assert torch.allclose(constant(x), 0.25 * x, atol=1e-5)
    # a context shorter than the receptive field changes the output: the margin is needed
    short = FrameEnhancer.lookback.fget, FrameEnhancer.lookahead.fget
    try:
        FrameEnhancer.lookback = property(lambda self: 64)
        FrameEnhancer.lookahead = property(lambda self: 64)
        assert not torch.allclose(model.enhance(x, target_field=112), whole, atol=1e-4)
    finally:
        FrameEnhancer.lookback, FrameEnhancer.lookahead = property(short[0]), property(short[1])
    with pytest.raises(ValueError, match="regression_channels=257"):
        FrameEnhancerConfig(wavenet=WaveNetConfig(causal=False, output="regression"))


def test_init_from_deepens_a_frame_denoiser_with_the_same_function(tmp_path):
    # model.config.wavenet.n_cycles=2 init_from=CKPT (1 cycle): the new layers add nothing at the start
    from engine.checkpoint import config_to_dict, save_checkpoint
    from engine.train import init_weights

    torch.manual_seed(0)
    small = tiny_frame_enhancer().eval()
    with torch.no_grad():
        for p in small.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    ckpt = save_checkpoint(tmp_path / "small.pt", task="enhancement", model_name="wavenet_tf_denoiser",
                           model_config=config_to_dict(small.config), sample_rate=16000, model=small)
    deep_config = config_to_dict(small.config)
    deep_config["wavenet"]["n_cycles"] = 2
    deep = FrameEnhancer.from_config(deep_config).eval()
    assert len(deep.wavenet.layers) == 6
    report = init_weights(deep, [str(ckpt)])
    assert report["wavenet_layers_grown"] == [3, 4, 5]
    x = torch.randn(2, 3000) * 0.1
    with torch.no_grad():
        assert torch.allclose(deep(x), small(x), atol=1e-6)
        fresh = FrameEnhancer.from_config(deep_config).eval()
        fresh.load_state_dict({**fresh.state_dict(), **{k: v for k, v in small.state_dict().items()}})
        assert not torch.allclose(fresh(x), small(x), atol=1e-3)  # without init_missing the layers speak
    # the silent layers learn: their skip convolutions get gradients at once, and after one step the
    # residual ones feeding later layers do too (the last layer's residual output is never read)
    deep.train()
    opt = torch.optim.SGD(deep.parameters(), lr=0.1)
    deep(x).pow(2).mean().backward()
    assert all(deep.wavenet.layers[i].skip.weight.grad.abs().sum() > 0 for i in (3, 4, 5))
    opt.step()
    opt.zero_grad()
    deep(x).pow(2).mean().backward()
    assert all(deep.wavenet.layers[i].residual.weight.grad.abs().sum() > 0 for i in (3, 4))
    assert all(deep.wavenet.layers[i].dilated.weight.grad.abs().sum() > 0 for i in (3, 4, 5))
    # a checkpoint of the same depth grows nothing
    assert "wavenet_layers_grown" not in init_weights(tiny_frame_enhancer(), [str(ckpt)])


@pytest.mark.slow
def test_frame_denoiser_improves_si_snr_after_short_training():
    torch.manual_seed(0)
    _, _, before, after = train_briefly(tiny_frame_enhancer(), EnhancementTask(), 150)
    assert after - before >= 3.0, f"SI-SNR {before:.2f} -> {after:.2f} dB"


def test_si_snr_matches_asteroid():
    from asteroid.losses import pairwise_neg_sisdr

    g = torch.Generator().manual_seed(0)
    ref = torch.randn(3, 1000, generator=g)
    est = ref + 0.5 * torch.randn(3, 1000, generator=g)
    theirs = -pairwise_neg_sisdr(est[:, None], ref[:, None])[:, 0, 0]
    assert torch.allclose(si_snr(est, ref), theirs, atol=1e-3)


def test_noise_generators():
    rng = np.random.default_rng(0)
    for kind in NOISE_KINDS:
        noise, desc = make_noise(8000, SR, np.random.default_rng(5), kinds=[kind],
                                 babble_source=lambda n, r: [r.standard_normal(3000) for _ in range(n)])
        again, _ = make_noise(8000, SR, np.random.default_rng(5), kinds=[kind],
                              babble_source=lambda n, r: [r.standard_normal(3000) for _ in range(n)])
        assert desc.startswith(kind) or kind in desc
        assert np.array_equal(noise, again) and noise.dtype == np.float32
        assert abs(np.sqrt(np.mean(noise.astype(np.float64) ** 2)) - 1.0) < 1e-3
    # spectral slopes: pink noise falls ~3 dB/octave, brown ~6 dB/octave
    for slope in (1.0, 2.0):
        f, psd = signal.welch(colored_noise(2 ** 16, SR, rng, slope=slope), SR, nperseg=1024)
        sel = (f > 50) & (f < 3000)
        fitted = np.polyfit(np.log10(f[sel]), np.log10(psd[sel]), 1)[0]
        assert abs(fitted + slope) < 0.15
    # hum: the strongest component is at a fundamental multiple within 45..130 Hz
    h = hum(SR * 2, SR, np.random.default_rng(3))
    f, psd = signal.welch(h, SR, nperseg=4096)
    assert 40 < f[np.argmax(psd)] < 1500
    # band-pass noise keeps little energy far outside its band
    b = bandpass_noise(SR * 2, SR, np.random.default_rng(4))
    assert np.isfinite(b).all()
    # mix_at_snr reaches the requested SNR exactly
    clean = rng.standard_normal(4000).astype(np.float32)
    noise = rng.standard_normal(4000).astype(np.float32)
    noisy = mix_at_snr(clean, noise, 7.5)
    got = 10 * np.log10(np.sum(clean.astype(np.float64) ** 2) / np.sum((noisy - clean).astype(np.float64) ** 2))
    assert abs(got - 7.5) < 1e-3
    with pytest.raises(ValueError, match="unknown noise kinds"):
        make_noise(100, SR, rng, kinds=["rain"])


def test_mixture_nll_is_a_normalised_distribution():
    torch.manual_seed(0)
    n_bins = 16
    params = torch.randn(1, 3 * 3, 1).repeat(1, 1, n_bins)
    params[:, 6:] = params[:, 6:].clamp(-3, 0)
    centres = torch.linspace(-1, 1, n_bins)[None]
    nll = torch.stack([discretized_logistic_mixture_nll(params[..., i:i + 1], centres[:, i:i + 1], n_bins)
                       for i in range(n_bins)])
    assert abs(torch.exp(-nll).sum().item() - 1.0) < 1e-4
    # independent reference for an interior bin: mixture of logistic CDF differences
    m = params[0, :3, 0].softmax(0)
    mu, s = params[0, 3:6, 0], params[0, 6:, 0].exp()
    x, h = centres[0, 5], 1.0 / (n_bins - 1)
    mass = (m * (torch.sigmoid((x + h - mu) / s) - torch.sigmoid((x - h - mu) / s))).sum()
    assert abs(nll[5].item() + math.log(mass.item())) < 1e-4


def test_mulaw_cross_entropy_and_l1():
    logits = torch.full((1, 4, 3), -10.0)
    target = torch.tensor([[-1.0, 0.0, 1.0]])
    from frontend import mulaw_encode

    codes = mulaw_encode(target, 4)
    for t in range(3):
        logits[0, codes[0, t], t] = 10.0
    assert mulaw_cross_entropy(logits, target).item() < 1e-6
    clean, noisy = torch.ones(1, 4), torch.full((1, 4), 3.0)
    assert denoising_l1(clean, clean, noisy).item() == 0.0
    assert denoising_l1(torch.zeros(1, 4), clean, noisy).item() == pytest.approx(2.0)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return cached_tiny_corpus(tmp_path_factory)


def test_enhancement_task_datasets_from_manifest(corpus):
    task = EnhancementTask()
    model = task.build_model("wavenet_denoiser", {"wavenet": tiny_enhancer().config.wavenet.to_dict(),
                                                  "target_field": 256})
    train, valid = task.build_datasets({"manifest": str(corpus), "train_examples": 6, "valid_examples": 3,
                                        "snr_db": [0, 0]}, SR)
    assert len(train) == 6 and len(valid) == 3
    item = valid[1]
    assert item["noisy"].shape == item["clean"].shape == (model.training_length,)
    again = valid[1]
    assert torch.equal(item["noisy"], again["noisy"])  # validation items are fixed
    for i in range(3):
        it = valid[i]
        if it["clean"].abs().sum() > 0:
            noise = it["noisy"] - it["clean"]
            snr = 10 * torch.log10(it["clean"].pow(2).sum() / noise.pow(2).sum())
            assert abs(snr.item()) < 0.05
    batch = task.collate([train[0], train[1]])
    loss, logs = task.loss(model, batch)
    assert loss.ndim == 0 and math.isfinite(logs["loss"])
    with pytest.raises(Exception, match="unknown data keys"):
        task.build_datasets({"manifest": str(corpus), "snr": 3}, SR)


def test_read_utterances_from_folder_and_bad_manifest(tmp_path):
    from frontend import save_audio
    from generation.data import read_utterances

    for spk in ("101", "202", "303"):
        save_audio(tmp_path / "lib" / spk / "1" / f"{spk}-1-0001.flac", torch.zeros(800) + 0.1, SR)
    utts = read_utterances(tmp_path / "lib")
    assert sorted(u.speaker for u in utts) == ["101", "202", "303"]
    assert all(u.split in ("tr", "cv", "tt") for u in utts)
    key = lambda us: [(u.path, u.speaker, u.split) for u in us]  # noqa: E731
    assert key(read_utterances(tmp_path / "lib")) == key(utts)  # the split is a stable function of the speaker
    bad = tmp_path / "m.jsonl"
    bad.write_text('{"path": "a.flac", "speaker": "x", "split": "train"}\n{"path": "b.flac"}\n')
    with pytest.raises(Exception, match=r"m.jsonl:2: not a valid utterance record"):
        read_utterances(bad)
    with pytest.raises(Exception, match="no such file"):
        read_utterances(tmp_path / "missing.jsonl")
