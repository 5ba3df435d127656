"""The models shipped inside the package: found by name, small, documented, and of a fixed minimum
quality on the bundled examples (real validation speakers and TTS voices of the corpus' test split:
voices the bundled model never trained on).

The floors sit below what the shipped checkpoints measure (see each model card), so a broken
checkpoint, a changed model definition or a regression in inference fails here.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from evaluation.counting import count_aware_si_snri
from voxsep.demo import EXAMPLE_SETS, build_demo_mixtures
from voxsep.registry import MODELS_DIR, list_models, load_model

# What the bundled separation models must reach on the demo's two-talker mixtures of each bundled
# example set (measured for the shipped checkpoint b10, separator r30heads step 6000 (5 BLSTM layers,
# log1p+log features, a BLSTM block per count before its head, int8 weights) + its head fused with
# counters c01-c06 and c08: real 8.66 dB, synthetic 7.25 dB, 6 of 6 counted right in both; b9
# (r15b8cos step 2000, the same counters): real 8.41 / synthetic 6.75 dB, 6 of 6 in both; b8 (r13grow5cos step 3000 + c01-c06): real 8.20 / synthetic 6.83 dB; b7 (r11deepcos step 4000, 4 layers): real 8.63 / synthetic 6.74 dB; b6 (r07crop4 step 5000 + c01-c06): real 8.14 / synthetic 6.71 dB, 6 of 6 in both; b5 (r05real
# step 23500 + c02): real 7.53 / synthetic 6.63 dB; b4 (r05real step 11000 + c02): 8.18 / 6.66 dB;
# b3 (r03 step 21500 + c02): 7.60 / 7.32 dB; the first real-speech bundle: 5.35 / 5.26 dB; the MulCat
# model before them: real -0.04 dB, synthetic 2.76 dB)
SEPARATION_FLOOR = {"real": {"si_snri_db": 8.0, "count_accuracy": 0.8},
                    "synthetic": {"si_snri_db": 5.6, "count_accuracy": 0.8}}

# What the bundled denoiser must gain on unseen synthetic voices (espeak-ng) in generated coloured
# noise at 0 and 5 dB SNR (measured for the shipped checkpoint, run d09pesq step 1200: PESQ-WB 1.03 ->
# 1.25, STOI 0.835 -> 0.849, SI-SNR 2.5 -> 8.7 dB; d07crowd step 1500 before it: 1.21, 0.850, 8.9 dB;
# d03 step 8000: 1.26, 0.845, 8.8 dB)
DENOISER_FLOOR = {"pesq_gain": 0.1, "stoi_gain": 0.0, "si_snr_gain_db": 4.0}

BUNDLED = list_models()


def test_the_default_set_is_bundled_small_and_documented():
    names = {(m.task, m.name) for m in BUNDLED}
    # the vocoder is not trained enough to ship (recipes/real_vocoder); the denoiser is tested below
    assert names == {("separation", "default"), ("enhancement", "default")}
    # the package's weights stay small enough to install in seconds (separator 23.8 MB with its
    # per-count head blocks since b10, denoiser 3.4 MB)
    assert sum(m.path.stat().st_size for m in BUNDLED) <= 30 * 2**20
    for m in BUNDLED:
        assert m.path.parent == MODELS_DIR and m.card is not None, m.path
        card = m.card.read_text(encoding="utf-8")
        for needed in ("voxsep train", "## Evaluation", "## Limits"):
            assert needed in card, f"{m.card}: no {needed!r}"


@pytest.mark.parametrize("examples", sorted(SEPARATION_FLOOR))
@pytest.mark.parametrize("name", [m.name for m in BUNDLED if m.task == "separation"])
def test_bundled_separation_model_counts_and_separates_unseen_voices(name, examples):
    from separation.inference import Separator

    net, ckpt = load_model(name, "separation")
    separator = Separator(net, int(ckpt["sample_rate"]))
    mixtures = build_demo_mixtures([2], per_count=6, sample_rate=separator.sample_rate, seed=0,
                                   manifest=EXAMPLE_SETS[examples])
    improvements, correct = [], 0
    for _, mix, sources, _ in mixtures:
        with torch.no_grad():
            est, probabilities = separator.separate(mix, num_speakers=2)  # probabilities of 0..max talkers
        count = int(torch.argmax(probabilities))
        correct += count == 2
        score = count_aware_si_snri(sources.numpy(), est.numpy(), mix.numpy())
        improvements.append(score.mean_si_snri)
    assert float(np.mean(improvements)) >= SEPARATION_FLOOR[examples]["si_snri_db"], improvements
    assert correct / len(mixtures) >= SEPARATION_FLOOR[examples]["count_accuracy"]


@pytest.mark.parametrize("name", [m.name for m in BUNDLED if m.task == "enhancement"])
def test_bundled_denoiser_raises_pesq_stoi_and_si_snr_on_unseen_noisy_speech(name, tmp_path):
    """Synthetic voices (espeak-ng, never trained on) in generated noise at 0 and 5 dB SNR."""
    from pesq import pesq
    from pystoi import stoi

    from evaluation.metrics import si_snr
    from generation.noise import colored_noise
    from tests.evaluation.speech import espeak_utterance

    net, ckpt = load_model(name, "enhancement")
    sr = int(ckpt["sample_rate"])
    rng = np.random.default_rng(0)
    before, after = [], []
    for i, snr_db in enumerate([0, 5, 0, 5]):
        clean = espeak_utterance(i, sr, 3.0, tmp_path)
        noise = colored_noise(clean.size, sr, rng)
        noise = noise * np.sqrt(np.mean(clean ** 2) / np.mean(noise ** 2)) * 10 ** (-snr_db / 20)
        noisy = (clean + noise).astype(np.float32)
        with torch.no_grad():
            est = net.enhance(torch.from_numpy(noisy)).numpy()
        for out, signal in ((before, noisy), (after, est)):
            out.append((pesq(sr, clean, signal, "wb"), stoi(clean, signal, sr), float(np.mean(si_snr(clean, signal)))))
    before, after = np.mean(before, axis=0), np.mean(after, axis=0)
    floor = DENOISER_FLOOR
    assert after[0] - before[0] >= floor["pesq_gain"], (before, after)
    assert after[1] - before[1] >= floor["stoi_gain"], (before, after)
    assert after[2] - before[2] >= floor["si_snr_gain_db"], (before, after)
