"""frontend.vad: Silero VAD finds the speech of espeak-ng voices at 8, 16 and 44.1 kHz, and none in
non-silent noise (white, coloured, hum) or silence."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from frontend.vad import has_speech, speech_seconds
from generation.noise import colored_noise, hum
from tests.evaluation.speech import espeak_utterance


@pytest.mark.parametrize("rate", [8000, 16000, 44100])
def test_speech_is_found_at_any_rate(rate, tmp_path):
    for index in range(2):
        wav = torch.from_numpy(np.asarray(espeak_utterance(index, rate, 3.0, tmp_path)))
        seconds = speech_seconds(wav, rate)
        assert 2.0 <= seconds <= 3.0, seconds  # the utterances fill most of their 3 s
        assert has_speech(wav, rate) and has_speech(0.01 * wav, rate)  # any level


def test_noise_and_silence_hold_no_speech():
    rng = np.random.default_rng(0)
    rate = 16000
    signals = {"white": 0.1 * rng.standard_normal(3 * rate), "coloured": 0.1 * colored_noise(3 * rate, rate, rng),
               "hum": 0.1 * hum(3 * rate, rate, rng), "silence": np.zeros(3 * rate)}
    for name, x in signals.items():
        wav = torch.from_numpy(x.astype(np.float32))
        assert speech_seconds(wav, rate) == 0.0, name
        assert not has_speech(wav, rate), name


def test_speech_in_the_middle_of_noise_is_timed(tmp_path):
    rate = 8000
    rng = np.random.default_rng(1)
    speech = np.asarray(espeak_utterance(3, rate, 2.0, tmp_path))
    x = 0.005 * rng.standard_normal(6 * rate).astype(np.float32)
    x[2 * rate:4 * rate] += speech
    assert 1.5 <= speech_seconds(torch.from_numpy(x), rate) <= 2.5
    with pytest.raises(ValueError, match=r"wav must be \(T,\)"):
        speech_seconds(torch.zeros(2, rate), rate)
