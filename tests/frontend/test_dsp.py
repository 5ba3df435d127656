"""STFT, mel, mu-law and level helpers against torch/torchaudio and known values."""
import math
import shutil
import subprocess

import numpy as np
import pytest
import torch
import torchaudio
import torchaudio.functional as AF

from frontend import (STFT, LogMelSpectrogram, active_speech_level, gain_to_level, limit_peak, load_audio,
                      loudness, mulaw_decode, mulaw_encode, rms_db)


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """A few seconds of espeak-ng speech at 16 kHz (the project's test voice source)."""
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng is required for the tests (apt-get install espeak-ng)")
    path = tmp_path_factory.mktemp("speech") / "s.wav"
    subprocess.run(["espeak-ng", "-w", str(path), "The quick brown fox jumps over the lazy dog, "
                    "while seven wizards quietly judge the boxing match."], check=True)
    wav, sr = load_audio(path, sample_rate=16000)
    return wav, sr


@pytest.mark.parametrize("n_fft,hop", [(512, 128), (256, 64), (1024, 256)])
def test_stft_round_trip(speech, n_fft, hop):
    wav, _ = speech
    stft = STFT(n_fft, hop)
    batch = torch.stack([wav, 0.5 * wav.flip(0)])  # (B, T)
    spec = stft(batch)
    assert spec.shape == (2, n_fft // 2 + 1, wav.numel() // hop + 1) and spec.is_complex()
    rec = stft.inverse(spec, wav.numel())
    assert float((rec - batch).abs().max()) < 1e-5
    # float64 too, and equal to torch.stft directly
    ref = torch.stft(wav.double(), n_fft, hop, window=torch.hann_window(n_fft, dtype=torch.float64),
                     return_complex=True)
    torch.testing.assert_close(stft(wav.double()), ref)


def test_log_mel_matches_torchaudio(speech):
    wav, sr = speech
    mel = LogMelSpectrogram(sr, n_fft=1024, hop_length=256, n_mels=80)(wav)
    ref = torchaudio.transforms.MelSpectrogram(sr, n_fft=1024, hop_length=256, n_mels=80, power=1.0,
                                               norm="slaney", mel_scale="slaney")(wav)
    assert mel.shape == (80, wav.numel() // 256 + 1)
    torch.testing.assert_close(mel, torch.log(ref.clamp(min=1e-5)))


@pytest.mark.parametrize("channels", [256, 16, 1024])
def test_every_mulaw_code_round_trips(channels):
    codes = torch.arange(channels)
    values = mulaw_decode(codes, channels)
    assert values.min() >= -1 and values.max() <= 1
    assert torch.equal(mulaw_encode(values, channels), codes)
    # and the encoding matches torchaudio's
    x = torch.linspace(-1, 1, 10001)
    assert torch.equal(mulaw_encode(x, channels), AF.mu_law_encoding(x, channels))


def test_mulaw_keeps_speech_snr(speech):
    wav, _ = speech
    for level_db in (-20.0, -26.0, -36.0):  # speech levels from near-clipping to quiet (-26 dBFS is typical)
        x = wav * gain_to_level(active_speech_level(wav, 16000), level_db)
        y = mulaw_decode(mulaw_encode(x, 256), 256)
        snr = 10 * math.log10(float(x.pow(2).sum()) / float((x - y).pow(2).sum()))
        assert x.abs().max() < 1 and snr >= 35.0, (level_db, snr)
    with pytest.raises(ValueError):
        mulaw_encode(torch.tensor([1, 2]), 256)


def test_active_speech_level(speech):
    wav, sr = speech
    # a steady tone is active everywhere: active level == RMS level (within the envelope's ramp)
    t = torch.arange(2 * sr) / sr
    tone = 0.25 * torch.sin(2 * math.pi * 300 * t)
    assert abs(active_speech_level(tone, sr) - rms_db(tone)) < 0.1
    # adding silence lowers the long-term RMS but not the active level (by much)
    padded = torch.cat([torch.zeros(3 * sr), wav, torch.zeros(3 * sr)])
    asl, asl_padded = active_speech_level(wav, sr), active_speech_level(padded, sr)
    assert abs(asl - asl_padded) < 0.5
    assert rms_db(padded) < asl_padded - 3
    # scaling by g dB shifts the level by g dB
    assert abs(active_speech_level(wav * 0.1, sr) - (asl - 20)) < 0.2
    assert active_speech_level(torch.zeros(1000), sr) == -math.inf


def test_loudness_matches_torchaudio(speech):
    wav, sr = speech
    ref = float(AF.loudness(wav[None], sr))
    assert abs(loudness(wav, sr) - ref) < 1e-4
    assert abs(loudness(wav * 0.5, sr) - (ref - 6.0206)) < 0.01
    assert loudness(torch.zeros(sr), sr) == -math.inf
    assert math.isfinite(loudness(wav[:1000], sr))  # shorter than one gating block


def test_active_speech_level_is_scale_equivariant(speech):
    wav, sr = speech
    crop = wav[: sr]  # 1 s: few active samples at the top thresholds (a top-down scan failed here)
    ref = active_speech_level(crop, sr)
    for scale in (0.01, 0.3, 3.0, 30.0):
        assert abs(active_speech_level(crop * scale, sr) - (ref + 20 * math.log10(scale))) < 0.05


def test_limit_peak_scales_down_only_what_would_clip():
    loud = torch.tensor([[0.5, -2.0, 1.0], [0.1, 0.2, -0.3]])
    limited = limit_peak(loud, 0.9)
    assert float(limited.abs().max()) == pytest.approx(0.9)
    torch.testing.assert_close(limited, loud * 0.45)  # one gain for all channels: ratios kept
    quiet = torch.tensor([0.2, -0.5])
    assert limit_peak(quiet, 0.9) is quiet
    assert limit_peak(torch.zeros(0), 0.9).numel() == 0
