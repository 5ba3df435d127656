"""voxsep mix: sums, peaks, gain rules measured back, splits, counts up to 10, lengths, formats,
determinism, and user errors (one line, exit 2, no partial output)."""
from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from frontend import active_speech_level, load_audio, loudness
from frontend.utterances import SPLITS, assign_speaker_splits
from frontend.utterances import read_utterances as load_utterance_manifest
from separation.mixing import colored_noise, fit_lengths, scale_to_snr
from tests.speech_fixture import cached_mixtures, cached_tiny_corpus
from voxsep.cli import main
from voxsep.mixtures import MixConfig, make_mixtures

# 16 voices: 10 train, 3 valid, 3 test (10-talker mixtures need 10 speakers in one split)
CORPUS = dict(n_speakers=16, n_utts=3, split_sizes=(10, 3, 3))
SETTINGS_A = dict(speakers=[1, 2, 3], n_mixtures={"tr": 3, "cv": 2, "tt": 2}, mode="min", gains="wsj0",
                  noise="colored", snr=(10.0, 20.0), seed=3)
SETTINGS_B = dict(speakers=[2, 10], n_mixtures={"tr": 2}, splits=["tr"], mode="max", gains="librimix",
                  format="pcm16", seed=5)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    return cached_tiny_corpus(tmp_path_factory, **CORPUS)


@pytest.fixture(scope="session")
def mixed_a(tmp_path_factory, corpus):
    return cached_mixtures(tmp_path_factory, corpus, **SETTINGS_A)


@pytest.fixture(scope="session")
def mixed_b(tmp_path_factory, corpus):
    return cached_mixtures(tmp_path_factory, corpus, **SETTINGS_B)


def records(out: Path, splits=SPLITS) -> list[dict]:
    recs = []
    for s in splits:
        p = out / f"manifest_{s}.jsonl"
        if p.exists():
            recs += [json.loads(line) for line in p.read_text().splitlines()]
    return recs


def read(out: Path, rel: str) -> np.ndarray:
    data, _ = sf.read(str(out / rel), dtype="float64")
    return data


def utterance_at_8k(corpus: Path, rel: str) -> torch.Tensor:
    return load_audio(corpus.parent / rel, sample_rate=8000)[0]


def test_float_sources_plus_noise_sum_to_mixture_and_peak(mixed_a):
    recs = records(mixed_a)
    assert len(recs) == 3 * (3 + 2 + 2)
    for r in recs:
        mix = read(mixed_a, r["mixture_path"])
        srcs = np.stack([read(mixed_a, p) for p in r["source_paths"]])
        noise = read(mixed_a, r["noise_path"])
        assert sf.info(str(mixed_a / r["mixture_path"])).subtype == "FLOAT"
        assert srcs.shape == (r["n_src"], r["length"]) and mix.shape == (r["length"],)
        np.testing.assert_allclose(srcs.sum(0) + noise, mix, atol=1e-6, rtol=0)
        for x in (mix, *srcs, noise):
            assert np.abs(x).max() <= 0.9 + 1e-6
        # the shared scale is 0.9 / max(1, peak): the loudest signal sits exactly at 0.9
        assert max(np.abs(x).max() for x in (mix, *srcs, noise)) == pytest.approx(0.9, abs=1e-6)


def test_wsj0_gains_measured_back(mixed_a, corpus):
    for r in records(mixed_a):
        assert len(r["gains_db"]) == r["n_src"]
        for g, src_path, utt in zip(r["gains_db"], r["source_paths"], r["utterances"]):
            assert -2.5 <= g <= 2.5
            written = read(mixed_a, src_path)
            # measured on the written source (P.56 is scale-equivariant to ~0.1 dB)
            level = active_speech_level(written, 8000) - 20 * math.log10(r["scale"])
            assert level == pytest.approx(g, abs=0.2)
            # and from the original utterance: written = utt[:T] * gain, gain from its own level
            ref = utterance_at_8k(corpus, utt)[: r["length"]].double().numpy()
            ratio = float(np.dot(written, ref) / np.dot(ref, ref))
            np.testing.assert_allclose(written, ratio * ref, atol=2e-6)
            implied = 20 * math.log10(ratio / r["scale"]) + active_speech_level(ref, 8000)
            assert implied == pytest.approx(g, abs=1e-3)


def test_noise_at_requested_snr(mixed_a):
    colors = set()
    for r in records(mixed_a):
        srcs = np.stack([read(mixed_a, p) for p in r["source_paths"]])
        noise = read(mixed_a, r["noise_path"])
        snr = 10 * np.log10(np.mean(srcs.sum(0) ** 2) / np.mean(noise ** 2))
        assert 10 <= r["snr_db"] <= 20
        assert snr == pytest.approx(r["snr_db"], abs=1e-3)
        colors.add(r["noise"])
    assert colors <= {"white", "pink", "brown"} and len(colors) >= 2


def test_colored_noise_spectral_slopes():
    rng = np.random.default_rng(0)
    for color, slope in (("white", 0.0), ("pink", -1.0), ("brown", -2.0)):
        x = colored_noise(2**16, color, rng).numpy()
        assert np.sqrt(np.mean(x ** 2)) == pytest.approx(1.0, rel=1e-9)
        psd = np.abs(np.fft.rfft(x)) ** 2
        f = np.arange(psd.size)
        band = (f > 10) & (f < psd.size // 2)
        fit = np.polyfit(np.log10(f[band]), np.log10(psd[band]), 1)[0]
        assert fit == pytest.approx(slope, abs=0.1)
    noise = scale_to_snr(torch.ones(100), torch.full((100,), 2.0), 6.0)
    assert 10 * math.log10(4 / float(noise.pow(2).mean())) == pytest.approx(6.0)


def test_distinct_speakers_min_lengths_and_split_membership(mixed_a, corpus):
    split_of = {u.speaker: u.split for u in load_utterance_manifest(corpus)}
    by_uid = {u.uid: u for u in load_utterance_manifest(corpus)}
    for r in records(mixed_a):
        assert len(set(r["speakers"])) == r["n_src"]
        assert {split_of[s] for s in r["speakers"]} == {r["split"]}
        lengths = [utterance_at_8k(corpus, u).shape[-1] for u in r["utterances"]]
        assert r["length"] == min(lengths)
        for u, s in zip(r["utterances"], r["speakers"]):
            assert by_uid[str(Path(u).with_suffix(""))].speaker == s


def test_librimix_csv_and_wsj0_tree_layout(mixed_a):
    for split in SPLITS:
        for c in (1, 2, 3):
            with open(mixed_a / "metadata" / f"mixture_{split}_{c}spk.csv", newline="") as f:
                rows = list(csv.reader(f))
            header = ["mixture_ID", "mixture_path"] + [f"source_{i}_path" for i in range(1, c + 1)]
            assert rows[0] == header + ["noise_path", "length"]
            for row in rows[1:]:
                assert row[1] == f"{c}speakers/wav8k/min/{split}/mix/{row[0]}.wav"
                for i in range(c):
                    assert row[2 + i] == f"{c}speakers/wav8k/min/{split}/s{i + 1}/{row[0]}.wav"
                assert int(row[-1]) == sf.info(str(mixed_a / row[1])).frames
    assert (mixed_a / "mix_config.json").exists()
    assert not any(p.name.startswith(".") for p in mixed_a.rglob("*"))


def test_pcm16_librimix_max_mode_and_ten_speakers(mixed_b, corpus):
    recs = records(mixed_b)
    assert sorted(r["n_src"] for r in recs) == [2, 2, 10, 10]
    for r in recs:
        assert sf.info(str(mixed_b / r["mixture_path"])).subtype == "PCM_16"
        mix = read(mixed_b, r["mixture_path"])
        srcs = np.stack([read(mixed_b, p) for p in r["source_paths"]])
        lsb = 1 / 32768
        assert np.abs(srcs.sum(0) - mix).max() <= 2 * lsb * r["n_src"]
        assert np.abs(np.concatenate([mix, srcs.ravel()])).max() <= 0.9 + lsb
        assert len(set(r["speakers"])) == r["n_src"]
        lengths = [utterance_at_8k(corpus, u).shape[-1] for u in r["utterances"]]
        assert r["length"] == max(lengths)
        for src, n in zip(srcs, lengths):
            assert not src[n:].any()  # max mode pads with zeros after the utterance
        for g, src in zip(r["gains_db"], srcs):
            assert -33 <= g <= -25
            measured = loudness(torch.from_numpy(src), 8000) - 20 * math.log10(r["scale"])
            assert measured == pytest.approx(g, abs=0.05)
    assert (mixed_b / "10speakers/wav8k/max/tr/s10").is_dir()
    header = next(csv.reader(open(mixed_b / "metadata/mixture_tr_10spk.csv")))
    assert header[-2:] == ["source_10_path", "length"]


@pytest.mark.slow
def test_deterministic_and_workers_give_identical_output(mixed_a, corpus, tmp_path):
    # each (seed, count, split) has its own random stream: the 2-talker mixtures come out the same
    # when made alone, and with two worker processes
    again = tmp_path / "again"
    make_mixtures(MixConfig(speech=str(corpus), out=str(again), workers=2, progress=False,
                            **{**SETTINGS_A, "speakers": [2]}))
    expected = [r for r in records(mixed_a) if r["n_src"] == 2]
    assert records(again) == expected
    for r in expected:
        # samples, not bytes: libsndfile stamps float wavs' PEAK chunk with the time
        for rel in [r["mixture_path"], r["noise_path"], *r["source_paths"]]:
            assert np.array_equal(read(again, rel), read(mixed_a, rel))
    other = tmp_path / "other"
    make_mixtures(MixConfig(speech=str(corpus), out=str(other), progress=False,
                            **{**SETTINGS_A, "seed": 4, "speakers": [2]}))
    assert [r["speakers"] for r in records(other)] != [r["speakers"] for r in expected]


def test_assign_speaker_splits_is_disjoint_and_order_free():
    speakers = [f"spk{i}" for i in range(20)]
    a = assign_speaker_splits(speakers, SPLITS, (0.8, 0.1, 0.1))
    b = assign_speaker_splits(reversed(speakers), SPLITS, (0.8, 0.1, 0.1))
    assert a == b and set(a) == set(speakers)
    assert sorted(list(a.values()).count(s) for s in SPLITS) == [2, 2, 16]
    few = assign_speaker_splits(["x", "y", "z"], SPLITS, (0.8, 0.1, 0.1))
    assert sorted(few.values()) == ["cv", "tr", "tt"]


def _librispeech_tree(corpus: Path, root: Path) -> None:
    for u in load_utterance_manifest(corpus):
        dest = root / u.speaker / "ch1" / u.path.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(u.path, dest)


def test_folder_inputs_speaker_disjoint_and_resampled(corpus, tmp_path):
    tree = tmp_path / "libri"
    _librispeech_tree(corpus, tree)
    out = tmp_path / "out"
    rc = main(["mix", "--speech", str(tree), "--out", str(out), "--speakers", "2", "--n-mixtures", "4",
               "--split-fractions", "0.5,0.25,0.25", "--sample-rate", "16000", "--seed", "1"])
    assert rc == 0
    recs = records(out)
    speakers = {s: {spk for r in recs if r["split"] == s for spk in r["speakers"]} for s in SPLITS}
    assert all(speakers[s] for s in SPLITS)
    assert not (speakers["tr"] & speakers["cv"] or speakers["tr"] & speakers["tt"] or speakers["cv"] & speakers["tt"])
    for r in recs:
        assert r["mixture_path"].startswith(f"2speakers/wav16k/min/{r['split']}/mix/")
        assert sf.info(str(out / r["mixture_path"])).samplerate == 16000
        lengths = [sf.info(str(tree / u)).frames * 2 for u in r["utterances"]]  # 8 kHz files -> 16 kHz
        assert r["length"] == min(lengths)
    # a flat folder with --speaker-rule gives the same speakers and the same split
    flat = tmp_path / "flat"
    flat.mkdir()
    for f in tree.rglob("*.flac"):
        shutil.copy(f, flat / f.name)
    out2 = tmp_path / "out2"
    rc = main(["mix", "--speech", str(flat), "--out", str(out2), "--speakers", "2", "--n-mixtures", "4",
               "--split-fractions", "0.5,0.25,0.25", "--sample-rate", "16000", "--seed", "1",
               "--speaker-rule", r"^(.+)_\d+\.flac$"])
    assert rc == 0
    assert [r["speakers"] for r in records(out2)] == [r["speakers"] for r in records(out)]


def _bad_file(kind: str, folder: Path, good: Path) -> Path:
    folder.mkdir(parents=True)
    if kind == "corrupt":
        data = good.read_bytes()
        bad = folder / "bad.flac"
        bad.write_bytes(data[:200] + bytes(np.random.default_rng(0).integers(0, 256, len(data) - 200, dtype=np.uint8)))
    elif kind == "empty":
        bad = folder / "bad.wav"
        bad.write_bytes(b"")
    elif kind == "non-audio":
        bad = folder / "bad.wav"
        bad.write_text("this is a text file, not audio\n")
    else:  # NaN samples in a well-formed float wav
        bad = folder / "bad.wav"
        x = np.full(4000, np.nan, dtype=np.float32)
        sf.write(str(bad), x, 8000, subtype="FLOAT")
    return bad


@pytest.mark.parametrize("kind", ["corrupt", "empty", "non-audio", "nan"])
@pytest.mark.parametrize("check", ["auto", "header"])
def test_bad_input_file_fails_cleanly(kind, check, corpus, tmp_path, capsys):
    utts = load_utterance_manifest(corpus)
    tree = tmp_path / "speech"
    if check == "auto":
        # small inputs are decoded in full first: the bad file is found even if no mixture uses it
        for u in utts[:9]:
            (tree / u.speaker / "ch").mkdir(parents=True, exist_ok=True)
            shutil.copy(u.path, tree / u.speaker / "ch" / u.path.name)
        args = ["--speakers", "1", "--n-mixtures", "1"]
    else:
        # header checks only: a file that passes them fails when its mixture is made
        (tree / "goodspk" / "ch").mkdir(parents=True)
        shutil.copy(utts[0].path, tree / "goodspk" / "ch" / utts[0].path.name)
        args = ["--speakers", "2", "--n-mixtures", "1", "--splits", "tr", "--split-fractions", "1,0,0"]
    bad = _bad_file(kind, tree / "badspk" / "ch", utts[0].path)
    out = tmp_path / "out"
    capsys.readouterr()
    rc = main(["mix", "--speech", str(tree), "--out", str(out), "--check", check, *args])
    err = capsys.readouterr().err
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("voxsep: error: ") and str(bad) in lines[0]
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["speech"]  # no staging folder left behind


def test_noise_from_a_folder_is_an_excerpt_at_the_snr(corpus, tmp_path):
    noise_dir = tmp_path / "noises"
    noise_dir.mkdir()
    rng = np.random.default_rng(0)
    # 16 kHz files (resampled on load): one shorter than any utterance (looped), one longer
    sf.write(str(noise_dir / "short.wav"), 0.1 * rng.standard_normal(8000), 16000, subtype="FLOAT")
    sf.write(str(noise_dir / "long.wav"), 0.1 * rng.standard_normal(160000), 16000, subtype="FLOAT")
    out = tmp_path / "out"
    make_mixtures(MixConfig(speech=str(corpus), out=str(out), speakers=[2], n_mixtures={"tr": 6},
                            splits=["tr"], noise=str(noise_dir), snr=(0.0, 5.0), seed=2, progress=False))
    used = set()
    for r in records(out, ["tr"]):
        noise = read(out, r["noise_path"])
        srcs = np.stack([read(out, p) for p in r["source_paths"]])
        np.testing.assert_allclose(srcs.sum(0) + noise, read(out, r["mixture_path"]), atol=1e-6, rtol=0)
        snr = 10 * np.log10(np.mean(srcs.sum(0) ** 2) / np.mean(noise ** 2))
        assert 0 <= r["snr_db"] <= 5 and snr == pytest.approx(r["snr_db"], abs=1e-3)
        ref = load_audio(r["noise"], sample_rate=8000)[0].double().numpy()
        n = r["length"]
        if ref.size < n:
            assert r["noise_start"] == 0
            ref = np.tile(ref, -(-n // ref.size))
        ref = ref[r["noise_start"]: r["noise_start"] + n]
        ratio = float(np.dot(noise, ref) / np.dot(ref, ref))
        np.testing.assert_allclose(noise, ratio * ref, atol=1e-6)
        used.add(Path(r["noise"]).name)
    assert used == {"short.wav", "long.wav"}


def test_too_few_speakers_and_existing_output(corpus, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["mix", "--speech", str(corpus), "--out", str(out), "--speakers", "4", "--splits", "cv"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "split cv has 3 speaker(s)" in err[0]
    assert not out.exists()
    out.mkdir()
    (out / "keep.txt").write_text("x")
    args = ["mix", "--speech", str(corpus), "--out", str(out), "--speakers", "1", "--splits", "tt",
            "--n-mixtures", "1"]
    assert main(args) == 2
    assert "not empty" in capsys.readouterr().err
    assert (out / "keep.txt").exists()
    assert main(args + ["--overwrite"]) == 0
    assert not (out / "keep.txt").exists() and len(records(out)) == 1


def test_fit_lengths_modes():
    a, b = torch.arange(5.0), torch.arange(3.0)
    assert torch.equal(fit_lengths([a, b], "min"), torch.tensor([[0.0, 1, 2], [0, 1, 2]]))
    assert torch.equal(fit_lengths([a, b], "max"), torch.tensor([[0.0, 1, 2, 3, 4], [0, 1, 2, 0, 0]]))
