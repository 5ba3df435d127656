"""The one utterance reader and split rule: tables, manifests, folders, speaker rules, weights."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch

from frontend import VoxsepError, save_audio
from frontend.utterances import assign_speaker_splits, read_utterances

SR = 8000


def _tone(seconds: float, freq: float) -> torch.Tensor:
    t = torch.arange(int(seconds * SR)) / SR
    return 0.3 * torch.sin(2 * torch.pi * freq * t)


@pytest.fixture(scope="module")
def two_corpora(tmp_path_factory):
    """A table (CSV: 30 speakers of corpus A, 10 of corpus B, no split column) and a TTS-style
    jsonl manifest (12 speakers, explicit splits)."""
    root = tmp_path_factory.mktemp("corpora")
    rows = ["path,speaker,corpus,seconds"]
    for k in range(40):
        corpus = "A" if k < 30 else "B"
        rel = f"{corpus}/{k:03d}/u.flac"
        save_audio(root / "real" / rel, _tone(0.5, 100 + 10 * k), SR)
        rows.append(f"{rel},{corpus}{k:03d},{corpus},0.5")
    (root / "real" / "manifest.csv").write_text("\n".join(rows) + "\n")
    lines = []
    for k in range(12):
        rel = f"wav8k/tts{k}/0.flac"
        save_audio(root / "tts" / rel, _tone(0.5, 1000 + 20 * k), SR)
        split = "train" if k < 8 else "valid" if k < 10 else "test"
        lines.append(json.dumps({"path": rel, "speaker": f"tts{k}", "split": split, "duration": 0.5}))
    (root / "tts" / "manifest_8k.jsonl").write_text("\n".join(lines) + "\n")
    return root


def test_table_split_is_speaker_disjoint_stratified_and_stable(two_corpora):
    utts = read_utterances(two_corpora / "real" / "manifest.csv", fractions=(0.8, 0.2, 0.0))
    assert len(utts) == 40 and all(u.path.is_file() for u in utts)
    split_of = {u.speaker: u.split for u in utts}
    by = Counter((u.corpus, u.split) for u in utts)
    # stratified: 20 % of each corpus is valid, nobody is in test
    assert by[("A", "cv")] == 6 and by[("B", "cv")] == 2 and not any(s == "tt" for s in split_of.values())
    # the folder finds its table; the split does not depend on row order
    again = read_utterances(two_corpora / "real", fractions=(0.8, 0.2, 0.0))
    assert {u.speaker: u.split for u in again} == split_of
    shuffled = two_corpora / "real" / "shuffled.csv"
    lines = (two_corpora / "real" / "manifest.csv").read_text().splitlines()
    shuffled.write_text("\n".join([lines[0]] + lines[:0:-1]) + "\n")
    assert {u.speaker: u.split for u in read_utterances(shuffled, fractions=(0.8, 0.2, 0.0))} == split_of
    assert {u.speaker for u in read_utterances(shuffled, "valid", fractions=(0.8, 0.2, 0.0))} == \
        {s for s, v in split_of.items() if v == "cv"}


def test_manifest_keeps_its_splits_and_folder_scan_uses_the_rule(two_corpora, tmp_path):
    utts = read_utterances(two_corpora / "tts", sample_rate=SR)
    assert Counter(u.split for u in utts) == {"tr": 8, "cv": 2, "tt": 2}
    # a LibriSpeech-style tree and a flat folder with a speaker rule give the same speakers and split
    for k in range(10):
        save_audio(tmp_path / "tree" / f"spk{k}" / "1" / f"spk{k}-1-0.flac", _tone(0.2, 200 + k), SR)
        save_audio(tmp_path / "flat" / f"spk{k}_0.flac", _tone(0.2, 200 + k), SR)
    tree = {u.speaker: u.split for u in read_utterances(tmp_path / "tree")}
    flat = {u.speaker: u.split for u in read_utterances(tmp_path / "flat", speaker_rule=r"^(spk\d+)_")}
    assert tree == flat == assign_speaker_splits(tree)
    assert Counter(tree.values()) == {"tr": 8, "cv": 1, "tt": 1}


def test_separation_and_enhancement_get_the_same_split(two_corpora):
    from generation.data import read_utterances as enhancement_reader
    from separation.data import DynamicMixingDataset
    from voxsep.mixtures import find_speech

    source = two_corpora / "real" / "manifest.csv"
    sep, root = find_speech(source, SR)
    assert root == source.parent
    enh = enhancement_reader(source)
    assert [(u.path, u.split) for u in sep] == [(u.path, u.split) for u in enh]
    valid = DynamicMixingDataset(source, counts=[2], segment=0.25, sample_rate=SR, split="valid")
    assert set(valid.speakers) == {u.speaker for u in sep if u.split == "cv"}


def test_corpus_filter_keeps_the_whole_table_split(two_corpora, tmp_path, capsys):
    """One table, two sources by corpus with their own weights (training), one corpus alone (voxsep
    mix --corpus): the held-back speakers are those of the whole table; a missing corpus is one line."""
    from separation.data import DynamicMixingDataset
    from voxsep.cli import main
    from voxsep.mixtures import find_speech

    table = two_corpora / "real" / "manifest.csv"
    whole = {u.speaker: u.split for u in read_utterances(table)}
    only_b, _ = find_speech(table, SR, corpora=["B"])
    assert {u.speaker for u in only_b} == {s for s in whole if s.startswith("B")}
    assert all(u.split == whole[u.speaker] for u in only_b)
    sources = [{"path": str(table), "corpora": ["A"], "weight": 0.2}, {"path": str(table), "corpora": ["B"], "weight": 0.8}]
    ds = DynamicMixingDataset(sources, counts=[2], segment=0.25, sample_rate=SR, epoch_size=200, split="train")
    assert sorted(ds.speakers) == sorted(s for s, v in whole.items() if v == "tr")
    drawn = Counter(s[0] for i in range(len(ds)) for s in ds[i]["speakers"])
    assert 0.7 < drawn["B"] / sum(drawn.values()) < 0.9  # 8 training speakers of B take 80 % of the talkers
    with pytest.raises(VoxsepError, match=r"manifest.csv: no corpus 'C' \(its corpora: A, B\)"):
        DynamicMixingDataset([{"path": str(table), "corpora": ["C"]}], counts=[2], segment=0.25, sample_rate=SR)
    out = tmp_path / "b_only"
    assert main(["mix", "--speech", str(table), "--corpus", "B", "--out", str(out), "--speakers", "2",
                 "--splits", "tr", "--n-mixtures", "3", "--split-fractions", "0.8,0.1,0.1"]) == 0
    rows = [json.loads(line) for line in (out / "manifest_tr.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(s.startswith("B") and whole[s] == "tr" for r in rows for s in r["speakers"])
    capsys.readouterr()
    assert main(["mix", "--speech", str(table), "--corpus", "C", "--out", str(tmp_path / "none"),
                 "--speakers", "2", "--splits", "tr", "--n-mixtures", "3"]) == 2
    assert "no corpus 'C'" in capsys.readouterr().err and not (tmp_path / "none").exists()


def test_bad_tables_name_file_and_line(tmp_path):
    bad = tmp_path / "t.csv"
    bad.write_text("path,speaker\na.flac,x\nb.flac\n")
    with pytest.raises(VoxsepError, match=r"t.csv:3: 1 fields, the header has 2"):
        read_utterances(bad)
    bad.write_text("file,who\na.flac,x\n")
    with pytest.raises(VoxsepError, match="needs the columns 'path' and 'speaker'"):
        read_utterances(bad)
    bad = tmp_path / "m.jsonl"
    bad.write_text('{"path": "a.flac", "speaker": "x"}\n{"path": "b.flac"}\n')
    with pytest.raises(VoxsepError, match=r"m.jsonl:2: not a valid utterance record \(missing key 'speaker'\)"):
        read_utterances(bad)
    with pytest.raises(VoxsepError, match="no such file or folder"):
        read_utterances(tmp_path / "missing.csv")


def test_weighted_sources_and_held_back_noise_files(two_corpora, tmp_path):
    from separation.data import DynamicMixingDataset, noise_recordings

    sources = [{"path": str(two_corpora / "real" / "manifest.csv"), "weight": 0.7, "fractions": [1, 0, 0]},
               {"path": str(two_corpora / "tts"), "weight": 0.3}]
    ds = DynamicMixingDataset(sources, counts=[2], segment=0.25, sample_rate=SR, epoch_size=300, split="train")
    assert len(ds.speakers) == 40 + 8
    drawn = Counter(s.startswith("tts") for i in range(len(ds)) for s in ds[i]["speakers"])
    share = drawn[True] / sum(drawn.values())
    assert 0.22 < share < 0.38  # 30 % of the talkers from the TTS source
    only_real = DynamicMixingDataset([sources[0], {**sources[1], "weight": 0.0}], counts=[2], segment=0.25,
                                     sample_rate=SR, epoch_size=20)
    assert not any(s.startswith("tts") for i in range(20) for s in only_real[i]["speakers"])
    with pytest.raises(VoxsepError, match="appears in two sources"):
        DynamicMixingDataset([sources[1], sources[1]], counts=[2], segment=0.25, sample_rate=SR)

    for k in range(11):
        save_audio(tmp_path / "noise" / f"n{k}.flac", torch.from_numpy(np.random.default_rng(k).normal(0, .1, SR))
                   .float(), SR)
    train, valid = (noise_recordings(tmp_path / "noise", s) for s in ("train", "valid"))
    assert len(train) == 8 and len(valid) == 3 and not set(train) & set(valid)
    noisy = DynamicMixingDataset(sources[1]["path"], counts=[2], segment=0.5, sample_rate=SR, epoch_size=4,
                                 augment={"noise": {"prob": 1.0, "files": str(tmp_path / "noise"), "file_prob": 1.0,
                                                    "snr_db": [0.0, 0.0]}})
    item = noisy[0]
    residual = item["mix"] - item["sources"].sum(0)
    ratio = 10 * torch.log10(item["sources"].sum(0).pow(2).sum() / residual.pow(2).sum())
    assert abs(float(ratio)) < 0.5  # the recording went in at the asked SNR


@pytest.mark.slow
def test_voxsep_mix_takes_weighted_sources(two_corpora, tmp_path, capsys):
    from voxsep.cli import main

    out = tmp_path / "mixed"
    args = ["mix", "--speech", str(two_corpora / "real" / "manifest.csv"), "--speech", str(two_corpora / "tts"),
            "--speech-weights", "0.7,0.3", "--out", str(out), "--speakers", "2", "--splits", "tr",
            "--split-fractions", "1,0,0", "--n-mixtures", "150", "--check", "header"]
    assert main(args) == 0
    records = [json.loads(line) for line in (out / "manifest_tr.jsonl").read_text().splitlines()]
    talkers = [s for r in records for s in r["speakers"]]
    share = sum(s.startswith("tts") for s in talkers) / len(talkers)
    assert 0.22 < share < 0.38 and all(len(set(r["speakers"])) == 2 for r in records)
    # utterance paths are relative to the sources' common folder
    assert all((two_corpora / u).is_file() for r in records for u in r["utterances"])
    capsys.readouterr()
    assert main(args[:5] + ["--speech-weights", "1"] + args[7:] + ["--overwrite"]) == 2
    assert "one non-negative weight per speech source" in capsys.readouterr().err
