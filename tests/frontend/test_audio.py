"""Audio I/O: formats, down-mixing, resampling policy, validation errors, atomic writes."""
import math
import os

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF

from frontend import AudioError, audio_info, find_audio_files, load_audio, save_audio
from frontend.audio import atomic_folder, atomic_output


def _tone(sr, seconds=0.5, freq=440.0, channels=1):
    t = np.arange(int(sr * seconds)) / sr
    x = 0.5 * np.sin(2 * np.pi * freq * t)
    if channels == 1:
        return x.astype(np.float32)
    return np.stack([x * (c + 1) / channels for c in range(channels)], axis=1).astype(np.float32)


@pytest.mark.parametrize("ext,subtype,tol", [(".wav", "FLOAT", 0.0), (".wav", "PCM_16", 1 / 32768),
                                             (".flac", "PCM_24", 1 / 2**23), (".ogg", "VORBIS", 0.05)])
def test_formats_round_trip(tmp_path, ext, subtype, tol):
    x = _tone(16000)
    path = tmp_path / f"a{ext}"
    sf.write(path, x, 16000, subtype=subtype)
    wav, sr = load_audio(path)
    assert sr == 16000 and wav.dtype == torch.float32 and wav.shape == (len(x),)
    err = float((wav - torch.from_numpy(x)).abs().max())
    if ext == ".ogg":  # lossy: compare energies instead of samples
        assert abs(float(wav.pow(2).mean()) / float((x ** 2).mean()) - 1) < 0.05
    else:
        assert err <= tol + 1e-7


def test_downmix_is_channel_mean_and_multichannel_kept(tmp_path):
    x = _tone(8000, channels=3)
    path = tmp_path / "c.wav"
    sf.write(path, x, 8000, subtype="FLOAT")
    mono, _ = load_audio(path)
    multi, _ = load_audio(path, mono=False)
    assert multi.shape == (3, x.shape[0])
    torch.testing.assert_close(mono, torch.from_numpy(x.mean(axis=1)), atol=1e-7, rtol=0)


def test_resampling_matches_torchaudio(tmp_path):
    x = _tone(44100, seconds=1.0, channels=2)
    path = tmp_path / "s.wav"
    sf.write(path, x, 44100, subtype="FLOAT")
    wav, sr = load_audio(path, sample_rate=8000)
    ref = AF.resample(torch.from_numpy(x.T.copy()).mean(0), 44100, 8000)
    assert sr == 8000
    torch.testing.assert_close(wav, ref, atol=1e-6, rtol=0)
    # a 440 Hz tone stays a 440 Hz tone after resampling
    spec = torch.fft.rfft(wav[1000:5000])
    assert abs(int(spec.abs().argmax()) * 8000 / 4000 - 440) <= 2


def test_partial_reads(tmp_path):
    x = _tone(8000, seconds=1.0)
    path = tmp_path / "p.wav"
    sf.write(path, x, 8000, subtype="FLOAT")
    part, _ = load_audio(path, start=1000, frames=500)
    torch.testing.assert_close(part, torch.from_numpy(x[1000:1500]))
    assert audio_info(path).frames == 8000 and math.isclose(audio_info(path).duration, 1.0)


def test_silence_is_valid(tmp_path):
    path = tmp_path / "z.wav"
    sf.write(path, np.zeros(800, np.float32), 8000)
    wav, _ = load_audio(path)
    assert wav.abs().max() == 0 and wav.numel() == 800


@pytest.mark.parametrize("case,reason", [
    ("missing", "no such file"), ("empty", "empty file"), ("text", "not a readable audio file"),
    ("truncated", ""), ("nan", "NaN or Inf"), ("inf", "NaN or Inf"), ("zero", "no samples"),
    ("dir", "directory"),
])
def test_bad_files_raise_one_line_naming_the_file(tmp_path, case, reason):
    path = tmp_path / f"{case}.wav"
    if case == "empty":
        path.write_bytes(b"")
    elif case == "text":
        path.write_text("hello, I am not audio\n" * 10)
    elif case == "truncated":
        sf.write(path, _tone(8000), 8000)
        path.write_bytes(path.read_bytes()[:30])
    elif case in ("nan", "inf"):
        x = _tone(8000)
        x[100] = np.nan if case == "nan" else np.inf
        sf.write(path, x, 8000, subtype="FLOAT")
    elif case == "zero":
        sf.write(path, np.zeros(0, np.float32), 8000)
    elif case == "dir":
        path.mkdir()
    with pytest.raises(AudioError) as info:
        load_audio(path)
    msg = str(info.value)
    assert str(path) in msg and reason in msg and "\n" not in msg


def test_save_audio_is_atomic_and_validates(tmp_path):
    out = tmp_path / "sub" / "o.flac"
    save_audio(out, torch.from_numpy(_tone(16000)), 16000)
    wav, sr = load_audio(out)
    assert sr == 16000 and wav.numel() == 8000
    with pytest.raises(ValueError):
        save_audio(tmp_path / "bad.wav", torch.full((10,), float("nan")), 8000)
    assert not (tmp_path / "bad.wav").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["sub"]  # no temporary leftovers
    with pytest.raises(RuntimeError):
        with atomic_output(tmp_path / "x.json") as tmp:
            tmp.write_text("{")
            raise RuntimeError("interrupted")
    assert not (tmp_path / "x.json").exists() and not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_find_audio_files_skips_temporaries(tmp_path):
    for name in ["b.wav", "a/c.flac", ".a.part.wav", "notes.txt"]:
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in find_audio_files(tmp_path)] == ["a/c.flac", "b.wav"]


def test_atomic_output_has_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        save_audio(tmp_path / "p.wav", torch.zeros(10), 8000)
    finally:
        os.umask(old)
    assert (tmp_path / "p.wav").stat().st_mode & 0o777 == 0o644


def test_atomic_folder_appears_whole_or_not_at_all(tmp_path):
    out = tmp_path / "set"
    with pytest.raises(RuntimeError):
        with atomic_folder(out) as staging:
            (staging / "a.txt").write_text("half")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []  # neither the folder nor its staging copy
    with atomic_folder(out) as staging:
        (staging / "a.txt").write_text("first")
        assert not out.exists()
    assert (out / "a.txt").read_text() == "first"
    with atomic_folder(out) as staging:  # replaces the folder as a whole
        (staging / "b.txt").write_text("second")
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"] and [p.name for p in tmp_path.iterdir()] == ["set"]
