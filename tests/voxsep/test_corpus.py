"""The TTS corpus: identities, sentences, splits, post-processing, a real 3-engine build,
determinism, resuming after damage or kill -9, and one-line user errors."""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from frontend import audio_info, load_audio
from frontend.errors import VoxsepError
from voxsep.cli import main as cli_main
from voxsep.corpus import (
    ENGINES, PlannedUtterance, SynthesisError, Synthesizer, assign_splits, build_corpus, catalogue,
    generate_sentences, load_sentences, plan_corpus, render, select_identities,
)
from voxsep.corpus.builder import audio_relpath, warped_rate
from voxsep.corpus.postprocess import peak_normalise, trim_silence
from voxsep.corpus.voices import Identity

MANIFEST_KEYS = {"id", "path", "speaker", "split", "sample_rate", "duration", "engine", "voice", "text"}


def read_manifest(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# ------------------------------------------------------------------ identities and sentences

def test_identities_are_distinct_varied_and_deterministic():
    ids = select_identities(200, seed=0)
    assert len({i.id for i in ids}) == 200
    assert len({(i.engine, i.settings) for i in ids}) == 200
    counts = Counter(i.engine for i in ids)
    assert set(counts) == set(ENGINES) and min(counts.values()) >= 20
    # variety inside espeak: many accents and variants, several pitches and rates
    voices = [i.voice for i in ids if i.engine == "espeak"]
    assert len({v["voice"].split("+")[0] for v in voices}) == 8
    assert len({v["voice"].split("+")[1] for v in voices}) >= 30
    assert len({v["pitch"] for v in voices}) >= 5 and len({v["rate"] for v in voices}) >= 4
    assert len({i.voice["voice"] for i in ids if i.engine == "flite"}) == 5
    assert len({i.voice["voice"] for i in ids if i.engine == "festival"}) == 3
    # ids spell out the settings
    e = next(i for i in ids if i.engine == "espeak")
    assert e.id == f"espeak-{e.voice['voice']}-p{e.voice['pitch']}-s{e.voice['rate']}"
    assert [i.id for i in select_identities(200, seed=0)] == [i.id for i in ids]
    assert [i.id for i in select_identities(200, seed=1)] != [i.id for i in ids]
    assert sum(len(catalogue(e)) for e in ENGINES) >= 150
    with pytest.raises(ValueError, match="at least 3"):
        select_identities(2)


def test_grammar_gives_3000_unique_varied_sentences():
    sentences = generate_sentences(3500, seed=0)
    assert len(set(sentences)) == 3500
    words = [len(s.split()) for s in sentences]
    assert min(words) >= 4 and max(words) <= 15
    assert sum(s.endswith("?") for s in sentences) > 200          # questions
    assert sum(any(c.isdigit() for c in s) for s in sentences) > 300  # numbers and times
    assert len({s.split()[0] for s in sentences}) > 40
    assert generate_sentences(3500, seed=0) == sentences
    assert generate_sentences(3500, seed=1) != sentences


def test_sentences_file(tmp_path):
    good = tmp_path / "good.txt"
    good.write_text("\ufeffHello there.\n\n  Hello   there. \nA second line?\n", encoding="utf-8")
    assert load_sentences(good) == ["Hello there.", "A second line?"]
    with pytest.raises(VoxsepError, match=f"^{good}: only 2 distinct sentences, fewer than"):
        build_corpus(tmp_path / "out", identities=3, utterances_per_identity=3, sentences_file=good)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content, reason", [
    (b"", "contains no sentences"),
    (b"\n  \n", "contains no sentences"),
    (b"RIFF\x00\x00\x00\x00WAVEfmt ", "binary file"),
    ("caf\u00e9 ol\u00e9\n".encode("latin-1"), "not UTF-8"),
])
def test_bad_sentences_file_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, content, reason):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(content)
    out = tmp_path / "out"
    assert cli_main(["corpus", "--out", str(out), "--sentences", str(bad), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"voxsep: error: {bad}: ") and reason in err
    assert not out.exists()


def test_splits_are_speaker_disjoint_80_10_10_with_every_engine():
    ids = select_identities(200, seed=3)
    split = assign_splits(ids)
    assert set(split) == {i.id for i in ids}
    counts = Counter(split.values())
    assert 150 <= counts["train"] <= 170 and 15 <= counts["valid"] <= 25 and 15 <= counts["test"] <= 25
    for s in ("train", "valid", "test"):
        assert {i.engine for i in ids if split[i.id] == s} == set(ENGINES)
    # texts are dealt evenly and an identity never repeats one
    plan = plan_corpus(ids, generate_sentences(4000, 3), 50, seed=3)
    assert len(plan) == 10000 and len({u.id for u in plan}) == 10000
    by_speaker = Counter((u.identity.id, u.text) for u in plan)
    assert max(by_speaker.values()) == 1
    assert max(Counter(u.text for u in plan).values()) <= 3
    with pytest.raises(VoxsepError, match="only 4 sentences"):
        plan_corpus(ids, ["a b c d."] * 4, 5)


# ------------------------------------------------------------------ post-processing

def test_trim_silence_and_peak_normalise():
    sr = 16000
    tone = 0.3 * np.sin(2 * np.pi * 200 * np.arange(sr) / sr).astype(np.float32)
    wav = np.concatenate([np.zeros(8000, np.float32), 1e-4 * np.ones(800, np.float32), tone,
                          np.zeros(12000, np.float32)])
    out = trim_silence(wav, sr, threshold_db=-45, pad_s=0.03)
    # the -70 dB hum is silence; the tone plus 30 ms on each side (10 ms frame grid) is kept
    assert abs(len(out) - (sr + 2 * 480)) <= 160
    assert np.allclose(out[np.argmax(np.abs(out) > 0.1):][:100], tone[np.argmax(np.abs(tone) > 0.1):][:100])
    assert len(trim_silence(np.zeros(sr, np.float32), sr)) == 0
    normed = peak_normalise(out)
    assert np.isclose(np.abs(normed).max(), 0.9, atol=1e-6)
    assert np.allclose(normed / 0.9 * np.abs(out).max(), out, atol=1e-6)


class ToneSynth(Synthesizer):
    """Returns a 200 Hz tone between silences (or silence), standing in for an engine."""

    def __init__(self, silent: bool = False):
        self.silent = silent

    def synthesize(self, identity, text):
        sr = 22050
        tone = 0.5 * np.sin(2 * np.pi * 200 * np.arange(2 * sr) / sr)
        wav = np.concatenate([np.zeros(sr // 2), 0 * tone if self.silent else tone, np.zeros(sr // 2)])
        return wav.astype(np.float32), sr


def test_render_warps_resamples_and_normalises():
    ident = Identity("fake-w1.10", "flite", (("voice", "kal"), ("duration_stretch", 1.0), ("warp", 1.1)))
    out = render(ToneSynth(), PlannedUtterance("u", ident, "train", "hi"), (8000, 16000))
    assert set(out) == {8000, 16000}
    for rate, wav in out.items():
        assert wav.dtype == np.float32 and np.isclose(np.abs(wav).max(), 0.9, atol=1e-4)
        # warp 1.1: the 2 s tone lasts 2/1.1 s (+ padding) and sounds at 220 Hz
        assert abs(len(wav) / rate - (2 + 0.06) / 1.1) < 0.03
        spectrum = np.abs(np.fft.rfft(wav * np.hanning(len(wav))))
        assert abs(np.argmax(spectrum) * rate / len(wav) - 220) < 2
    # same as torchaudio resampling the trimmed tone from the declared (warped) rate
    assert warped_rate(22050, 1.1) == 24250
    ref = ToneSynth().synthesize(ident, "hi")[0]
    ref = torch.from_numpy(trim_silence(ref, 22050))
    import torchaudio.functional as AF
    expected = AF.resample(ref, 24250, 16000).numpy()
    assert np.allclose(out[16000], expected * 0.9 / np.abs(expected).max(), atol=1e-6)


def test_unusable_audio_names_engine_voice_and_text():
    ident = select_identities(6)[0]
    with pytest.raises(SynthesisError) as err:
        render(ToneSynth(silent=True), PlannedUtterance("u", ident, "train", "Say something."), (8000,))
    assert f"espeak-ng voice {ident.id} on 'Say something.'" in str(err.value)
    assert "no usable speech" in str(err.value)


def test_festival_bad_voice_and_missing_engine_are_one_line_errors(tmp_path, monkeypatch):
    synth = Synthesizer(tmp_path / "work")
    bogus = Identity("festival-nosuch-f100-d1.00-w1.00", "festival",
                     (("voice", "nosuch_diphone"), ("f0_mean", 100), ("duration_stretch", 1.0), ("warp", 1.0)))
    try:
        with pytest.raises(SynthesisError, match=r"festival voice festival-nosuch.* on 'Hello\.': voice not available"):
            synth.synthesize(bogus, "Hello.")
        # the session survives and still speaks with a real voice (quotes are escaped)
        wav, sr = synth.synthesize(select_identities(6)[5], 'He said "hello" \\ twice.')
        assert sr == 16000 and len(wav) > sr and np.abs(wav).max() > 0.05
    finally:
        synth.close()
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SynthesisError, match=r"^espeak-ng: not installed, needed for voice espeak-"):
        build_corpus(tmp_path / "out", identities=6, utterances_per_identity=1, progress=False)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ a real build

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "tts_corpus"


def recipe_args(debug: bool, out: Path) -> list[str]:
    """The `voxsep corpus` arguments that recipes/tts_corpus/run.sh derives from its config."""
    cmd = [str(RECIPE / "run.sh"), "--dry-run", "--out", str(out)] + (["--debug"] if debug else [])
    line = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()
    assert line[:2] == ["voxsep", "corpus"]
    return line[1:]


def test_recipe_configs_map_to_cli_flags(tmp_path):
    assert recipe_args(False, tmp_path) == [
        "corpus", "--out", str(tmp_path), "--identities", "200", "--utterances-per-identity", "50",
        "--seed", "0", "--workers", "2", "--rates", "8000,16000"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The recipe's debug corpus (conf_debug.yaml: 6 identities x 3 sentences), built via the CLI."""
    out = tmp_path_factory.mktemp("corpus") / "c"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = cli_main(recipe_args(True, out) + ["--no-progress"])
    assert code == 0
    return out, stdout.getvalue()


def test_build_writes_contract_manifests_and_audio(built):
    out, stdout = built
    assert stdout.count("\n") == 1 and stdout.startswith("corpus: 6 identities (espeak 4, flite 1, festival 1), 18 utterances")
    plan = plan_corpus(select_identities(6, 0), generate_sentences(4000, 0), 3, 0)
    for rate, tag in ((8000, "8k"), (16000, "16k")):
        rows = read_manifest(out / f"manifest_{tag}.jsonl")
        assert [r["id"] for r in rows] == [u.id for u in plan]
        assert [r["text"] for r in rows] == [u.text for u in plan]
        for row, utt in zip(rows, plan):
            assert set(row) == MANIFEST_KEYS
            assert row["path"] == f"wav{tag}/{row['speaker']}/{row['id']}.flac"
            assert row["speaker"] == utt.identity.id and row["engine"] == utt.identity.engine
            assert row["voice"] == utt.identity.voice and row["sample_rate"] == rate
            wav, sr = load_audio(out / row["path"])
            assert sr == rate and audio_info(out / row["path"]).channels == 1
            assert row["duration"] == pytest.approx(len(wav) / rate, abs=1e-4)
            assert 1.0 < row["duration"] < 8.0
            assert np.abs(wav.numpy()).max() == pytest.approx(0.9, abs=0.01)
        assert {r["engine"] for r in rows} == set(ENGINES)
        splits = {}
        for r in rows:
            splits.setdefault(r["speaker"], set()).add(r["split"])
        assert all(len(s) == 1 for s in splits.values())  # speaker-disjoint
        assert {next(iter(s)) for s in splits.values()} == {"train", "valid", "test"}
    rows8, rows16 = read_manifest(out / "manifest_8k.jsonl"), read_manifest(out / "manifest_16k.jsonl")
    for a, b in zip(rows8, rows16):
        assert a["duration"] == pytest.approx(b["duration"], abs=2e-3)
    summary = json.loads((out / "corpus.json").read_text())
    assert summary["identities"] == 6 and summary["utterances"] == 18 and summary["seed"] == 0
    assert summary["engines"]["espeak"]["identities"] == 4
    assert summary["hours"] == pytest.approx(sum(r["duration"] for r in rows16) / 3600, rel=1e-3)
    assert sum(s["utterances"] for s in summary["splits"].values()) == 18
    assert summary["build"]["made"] == 18
    assert not list(out.rglob(".*.part*"))


@pytest.mark.slow
def test_same_seed_same_corpus_and_resume_repairs_damage(built, tmp_path):
    out, _ = built
    # determinism: an in-process (workers=1) rebuild gives the same manifests and samples
    again = tmp_path / "again"
    build_corpus(again, identities=6, utterances_per_identity=3, seed=0, workers=1, progress=False)
    for name in ("manifest_8k.jsonl", "manifest_16k.jsonl"):
        assert (again / name).read_bytes() == (out / name).read_bytes()
    rows = read_manifest(out / "manifest_16k.jsonl")
    for row in rows[::4]:
        assert torch.equal(load_audio(out / row["path"])[0], load_audio(again / row["path"])[0])

    # damage the copy: delete files, corrupt and empty others, leave temp files, drop a manifest
    paths = [again / r["path"] for r in rows]
    paths[0].unlink()
    (again / rows[5]["path"].replace("wav16k", "wav8k")).unlink()
    paths[7].write_bytes(b"fLaC garbage")
    paths[11].write_bytes(b"")
    stray = paths[2].parent / f".{paths[2].stem}.abc123.part.flac"
    stray.write_bytes(b"partial")
    (again / ".manifest_8k.xyz.part.jsonl").write_text('{"id": "half')
    (again / "manifest_8k.jsonl").unlink()
    summary = build_corpus(again, identities=6, utterances_per_identity=3, seed=0, workers=2, progress=False)
    assert summary["build"]["made"] == 4 and summary["build"]["reused"] == 14
    assert not list(again.rglob(".*.part*"))
    for name in ("manifest_8k.jsonl", "manifest_16k.jsonl"):
        assert (again / name).read_bytes() == (out / name).read_bytes()
    for row in rows:
        load_audio(again / row["path"])

    # the same folder with other settings is refused, nothing changes
    with pytest.raises(VoxsepError, match="already holds a corpus built with other settings \\(seed\\)"):
        build_corpus(again, identities=6, utterances_per_identity=3, seed=1, progress=False)


@pytest.mark.slow
def test_kill_9_then_rerun_completes(tmp_path):
    out = tmp_path / "k"
    cmd = [sys.executable, "-m", "voxsep", "corpus", "--out", str(out), "--identities", "3",
           "--utterances-per-identity", "4", "--workers", "2", "--no-progress"]

    def finished() -> int:
        return sum(not p.name.startswith(".") for p in out.glob("wav16k/*/*.flac"))

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline and finished() < 2:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = finished()
    assert 2 <= done_before < 12 and not (out / "manifest_16k.jsonl").exists()
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    made, reused = map(int, re.search(r"made (\d+), reused (\d+)", rerun.stdout).groups())
    assert reused >= done_before and made + reused == 12
    rows = read_manifest(out / "manifest_16k.jsonl")
    assert len(rows) == 12 and len({r["id"] for r in rows}) == 12
    assert not list(out.rglob(".*.part*"))
    for r in rows:
        load_audio(out / r["path"])
