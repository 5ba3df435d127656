"""Long-file inference: block reading at another rate, windows equal to offline inference for a
chunk-invariant model, talker order kept across windows, the count vote, silence."""
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from frontend import load_audio
from separation.inference import (BlockReader, Separator, crossfade_weights, stream_separate,
                                  window_starts)
from separation.model import MulCatSeparator

SR = 8000
#: n_blocks=0: encoder -> heads -> decoder, a receptive field of a few samples: chunk-invariant
POINTWISE = dict(max_speakers=3, n_filters=32, kernel_size=16, stride=8, decoder_frame_length=16, n_blocks=0)


def test_window_starts_cover_the_signal():
    for length in (10, 100, 101, 999, 1000, 12345):
        starts = window_starts(length, 100, 30)
        ends = [min(s + 100, length) for s in starts]
        assert starts[0] == 0 and ends[-1] == length
        assert all(b - a == 70 for a, b in zip(starts, starts[1:]))
        assert ends[-1] - starts[-1] > 30 or len(starts) == 1
    fade = crossfade_weights(40)
    assert fade[:10].eq(0).all() and fade[30:].eq(1).all()
    assert torch.allclose(fade[10:30] + fade[10:30].flip(0), torch.ones(20))  # symmetric ramp


def test_block_reader_matches_whole_file_resampling(tmp_path):
    rng = np.random.default_rng(0)
    stereo = 0.1 * rng.standard_normal((44100 * 3 + 17, 2)).astype(np.float32)
    sf.write(tmp_path / "s.wav", stereo, 44100, subtype="FLOAT")
    whole, _ = load_audio(tmp_path / "s.wav", sample_rate=SR)
    reader = BlockReader(tmp_path / "s.wav", SR)
    assert reader.length == whole.shape[-1]
    pieces = torch.cat([reader.read(s, 3001) for s in range(0, reader.length, 3001)])
    assert torch.allclose(pieces, whole, atol=1e-5)


def test_long_file_equals_offline_for_a_chunk_invariant_model(tmp_path):
    torch.manual_seed(0)
    model = MulCatSeparator(POINTWISE).eval()
    g = torch.Generator().manual_seed(1)
    wav = 0.1 * torch.randn(60 * SR, generator=g)
    sf.write(tmp_path / "long.wav", wav.numpy(), SR, subtype="FLOAT")
    separator = Separator(model, window=4.0, overlap=1.0)
    reads = []
    reader_read = BlockReader.read

    def spy(self, start, frames):
        reads.append(frames)
        return reader_read(self, start, frames)

    BlockReader.read = spy
    try:
        summary = separator.separate_file(tmp_path / "long.wav", tmp_path / "out", num_speakers=2)
    finally:
        BlockReader.read = reader_read
    assert max(reads) <= 4 * SR  # memory bounded by the window, not the file
    assert summary["count"] == 2 and summary["n_windows"] == 20
    offline = model.separate(wav, 2)[0]
    for k in range(2):
        out, rate = load_audio(tmp_path / "out" / f"s{k + 1}.wav")
        assert rate == SR and out.shape == offline[k].shape
        assert (out - offline[k]).abs().max() < 1e-4


def _band_sources(length, g):
    """Three talkers in disjoint bands (tone clusters around 300, 1200, 2800 Hz) that switch on
    and off, so windows see different subsets."""
    t = torch.arange(length) / SR
    sources = []
    for centre in (300.0, 1200.0, 2800.0):
        x = sum(torch.sin(2 * math.pi * (centre + d) * t + float(torch.rand(1, generator=g)) * 6.28)
                for d in (-40.0, 0.0, 40.0))
        gate = 0.6 + 0.4 * torch.sign(torch.sin(2 * math.pi * float(0.2 + 0.3 * torch.rand(1, generator=g)) * t))
        sources.append(x * gate)
    return torch.stack(sources)


def _band_separator(g):
    """Test double: an ideal band-pass separator that returns its talkers in a random order."""
    def separate(wav, k):
        spec = torch.fft.rfft(wav.double())
        freqs = torch.fft.rfftfreq(wav.shape[-1], 1 / SR)
        edges = [(0, 700), (700, 2000), (2000, 4001)]
        bands = torch.stack([torch.fft.irfft(spec * ((freqs >= lo) & (freqs < hi)), n=wav.shape[-1])
                             for lo, hi in edges[:k]])
        return bands[torch.randperm(k, generator=g)].float()
    return separate


def test_talker_order_stays_consistent_across_windows():
    g = torch.Generator().manual_seed(2)
    sources = _band_sources(20 * SR, g)
    mix = sources.sum(0)
    written = []
    result = stream_separate(
        lambda s, n: mix[s:s + n], mix.shape[-1], _band_separator(g),
        count_window=lambda w: torch.tensor([0.0, 0.0, 0.1, 0.9]), write=written.append,
        window=3 * SR, overlap=SR // 2, num_speakers=3)
    assert result.n_windows > 5
    est = torch.cat(written, dim=1)
    assert est.shape == sources.shape
    # one global permutation: every output matches one talker over the whole file
    corr = torch.corrcoef(torch.cat([est, sources]))[:3, 3:]
    assignment = corr.argmax(dim=1)
    assert sorted(assignment.tolist()) == [0, 1, 2]
    assert corr.max(dim=1).values.min() > 0.99
    # and inside every window (not only on average)
    for start in range(0, 20 * SR, 2 * SR):
        seg = slice(start, start + 2 * SR)
        local = torch.corrcoef(torch.cat([est[:, seg], sources[:, seg]]))[:3, 3:]
        assert local.argmax(dim=1).tolist() == assignment.tolist()


def test_count_vote_over_windows_skips_silence():
    length = 10 * SR
    wav = torch.zeros(length)
    wav[: 6 * SR] = 0.1 * torch.randn(6 * SR)  # the last 4 s are silent

    def count_window(w):  # loud windows say "2 talkers" with some doubt
        return torch.tensor([0.0, 0.3, 0.6, 0.1])

    calls = []
    result = stream_separate(lambda s, n: wav[s:s + n], length, lambda w, k: w.repeat(k, 1),
                             lambda w: calls.append(1) or count_window(w), write=lambda b: None,
                             window=2 * SR, overlap=SR // 2, count_vote="mean")
    assert result.count == 2
    assert result.count_probabilities == pytest.approx([0.0, 0.3, 0.6, 0.1])
    assert len(calls) < result.n_windows  # silent windows do not vote
    silent = stream_separate(lambda s, n: torch.zeros(min(n, length - s)), length, lambda w, k: w.repeat(k, 1),
                             count_window, write=lambda b: pytest.fail("nothing to write"), window=2 * SR,
                             overlap=SR // 2)
    assert silent.count == 0


def test_windows_without_speech_do_not_vote():
    """``no_speech`` (the voice activity detector) takes windows out of the vote like silence: here the
    windows that start in the first 4 s hold "speech" (3 talkers), the rest loud "noise" (would say 1)."""
    length = 10 * SR
    wav = 0.1 * torch.randn(length)
    wav[: 4 * SR] += 1.0  # marks the "speech" part (an offset the fake detector reads)
    speech = lambda w: float(w.mean()) > 0.5  # noqa: E731
    count_window = lambda w: torch.tensor([0.0, 0.0, 0.1, 0.9]) if speech(w) else torch.tensor([0.0, 1.0, 0.0, 0.0])  # noqa: E731
    common = dict(write=lambda b: None, window=2 * SR, overlap=SR // 2, count_vote="mean")
    read = lambda s, n: wav[s:s + n]  # noqa: E731
    everyone = stream_separate(read, length, lambda w, k: w.repeat(k, 1), count_window, **common)
    assert everyone.count == 1  # the noise windows outvote the speech ones
    gated = stream_separate(read, length, lambda w, k: w.repeat(k, 1), count_window,
                            no_speech=lambda w: not speech(w), **common)
    assert gated.count == 3 and gated.count_probabilities == pytest.approx([0.0, 0.0, 0.1, 0.9])
    assert gated.window_counts == [3] * len(gated.window_counts) and len(gated.window_counts) < gated.n_windows
    nobody = stream_separate(read, length, lambda w, k: w.repeat(k, 1), count_window, no_speech=lambda w: True,
                             **{**common, "write": lambda b: pytest.fail("nothing to write")})
    assert nobody.count == 0 and nobody.count_probabilities == []


def test_max_vote_takes_the_largest_window_count():
    length = 6 * SR
    wav = 0.1 * torch.randn(length)
    votes = iter([torch.tensor([0, 1.0, 0, 0]), torch.tensor([0, 0, 0, 1.0])] + [torch.tensor([0, 0, 1.0, 0])] * 10)
    result = stream_separate(lambda s, n: wav[s:s + n], length, lambda w, k: w.repeat(k, 1),
                             lambda w: next(votes), write=lambda b: None, window=2 * SR, overlap=SR // 2,
                             count_vote="max")
    assert result.count == 3


def test_separator_silence_and_short_input():
    torch.manual_seed(3)
    model = MulCatSeparator(POINTWISE)
    separator = Separator(model)
    est, probs = separator.separate(torch.zeros(SR))
    assert est.shape == (0, SR) and probs.tolist() == [1.0, 0.0, 0.0, 0.0]
    wav = 0.1 * torch.randn(800)
    est, probs = separator.separate(wav, num_speakers=2)
    assert est.shape == (2, 800)
    assert torch.allclose(est, model.separate(wav, 2)[0], atol=1e-6)
    assert torch.allclose(probs, model.count_probabilities(wav), atol=1e-6)


def test_voice_activity_detector_is_off_unless_asked(monkeypatch):
    from frontend.errors import VoxsepError
    from separation.inference import vad_default

    monkeypatch.delenv("VOXSEP_VAD", raising=False)
    assert vad_default() is False
    monkeypatch.setenv("VOXSEP_VAD", "1")
    assert vad_default() is True
    monkeypatch.setenv("VOXSEP_VAD", "maybe")
    with pytest.raises(VoxsepError, match="VOXSEP_VAD must be 0 or 1"):
        vad_default()


def test_separate_windowed_is_what_separate_file_writes(tmp_path):
    """`voxsep evaluate` scores Separator.separate_windowed: it must equal the files `voxsep
    separate` writes (count vote, talker alignment, cross-fades), and one pass up to the window."""
    torch.manual_seed(5)
    model = MulCatSeparator(dict(max_speakers=3, n_filters=32, kernel_size=16, stride=8, decoder_frame_length=16,
                                 hidden_size=16, chunk_size=20, n_blocks=1)).eval()  # context: not chunk-invariant
    g = torch.Generator().manual_seed(2)
    wav = 0.1 * torch.randn(10 * SR, generator=g)
    sf.write(tmp_path / "long.wav", wav.numpy(), SR, subtype="FLOAT")
    separator = Separator(model, window=3.0, overlap=1.0)
    with torch.no_grad():
        for given in (None, 2):
            est, probs = separator.separate_windowed(wav, given)
            summary = separator.separate_file(tmp_path / "long.wav", tmp_path / f"out{given}", num_speakers=given)
            assert summary["n_windows"] == 5 and est.shape == (summary["count"], wav.shape[-1])
            for k in range(summary["count"]):
                written, _ = load_audio(tmp_path / f"out{given}" / f"s{k + 1}.wav")
                assert (written - est[k]).abs().max() < 1e-5
            if given is None:
                assert [round(float(p), 6) for p in probs] == list(summary["count_probabilities"].values())
                assert int(probs.argmax()) == summary["count"]
        # windows differ from one pass for this model; an infinite window and short audio are one pass
        one_pass = model.separate(wav, 2)[0]
        assert (separator.separate_windowed(wav, 2)[0] - one_pass).abs().max() > 1e-3
        assert torch.allclose(Separator(model, window=math.inf).separate_windowed(wav, 2)[0], one_pass, atol=1e-6)
        short = wav[: 2 * SR]
        assert torch.allclose(separator.separate_windowed(short, 2)[0], model.separate(short, 2)[0], atol=1e-6)
