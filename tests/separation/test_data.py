"""Separation datasets: the three readers give back exactly what `voxsep mix` wrote; segments;
variable-count collate; dynamic mixing (recipe, reproducibility, augmentation)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF
from torch.utils.data import DataLoader

from frontend import active_speech_level, loudness
from separation.data import (
    DynamicMixingDataset, LibriMixDataset, MixtureManifestDataset, Wsj0MixDataset, collate_mixtures,
    synthetic_rir,
)
from frontend.utterances import read_utterances as load_utterance_manifest
from tests.speech_fixture import cached_mixtures, cached_tiny_corpus

CORPUS = dict(n_speakers=16, n_utts=3, split_sizes=(10, 3, 3))  # same corpus as test_mixing
SETTINGS = dict(speakers=[1, 2, 3], n_mixtures={"tr": 2, "cv": 2, "tt": 2}, mode="min", gains="wsj0",
                noise="none", seed=11)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    return cached_tiny_corpus(tmp_path_factory, **CORPUS)


@pytest.fixture(scope="session")
def mixed(tmp_path_factory, corpus):
    return cached_mixtures(tmp_path_factory, corpus, **SETTINGS)


def written(out: Path, split: str) -> dict[str, dict]:
    """id -> {"mix", "sources"} read directly with soundfile."""
    out_items = {}
    for line in (out / f"manifest_{split}.jsonl").read_text().splitlines():
        r = json.loads(line)
        mix = sf.read(str(out / r["mixture_path"]), dtype="float32")[0]
        srcs = np.stack([sf.read(str(out / p), dtype="float32")[0] for p in r["source_paths"]])
        out_items[r["id"]] = {"mix": mix, "sources": srcs, "n_src": r["n_src"]}
    return out_items


@pytest.mark.parametrize("split", ["tr", "tt"])
def test_three_readers_read_back_what_the_mixer_wrote(mixed, split):
    truth = written(mixed, split)
    readers = {
        "wsj0": Wsj0MixDataset(mixed, n_src=[1, 2, 3], split=split, sample_rate=8000, mode="min"),
        "librimix": LibriMixDataset(sorted((mixed / "metadata").glob(f"mixture_{split}_*spk.csv"))),
        "jsonl": MixtureManifestDataset(mixed / f"manifest_{split}.jsonl"),
    }
    for name, ds in readers.items():
        assert len(ds) == len(truth) == 6, name
        seen = set()
        for item in ds:
            ref = truth[item["id"]]
            assert item["n_src"] == ref["n_src"] == item["sources"].shape[0]
            assert item["length"] == ref["mix"].shape[-1]
            assert item["mix"].dtype == torch.float32
            assert np.array_equal(item["mix"].numpy(), ref["mix"]), name
            assert np.array_equal(item["sources"].numpy(), ref["sources"]), name
            seen.add(item["id"])
        assert seen == set(truth)
    # split aliases and count filters
    assert len(Wsj0MixDataset(mixed, n_src=2, split="train" if split == "tr" else "test")) == 2
    assert MixtureManifestDataset(mixed / f"manifest_{split}.jsonl", n_src=[1, 3]).n_srcs == [1, 1, 3, 3]
    # a small validation set that keeps every count: the first record of each count, in manifest order
    small = MixtureManifestDataset(mixed / f"manifest_{split}.jsonl", max_per_count=1)
    assert sorted(small.n_srcs) == [1, 2, 3]
    first = {}
    for rec_id, n in ((json.loads(l)["id"], json.loads(l)["n_src"])
                      for l in (mixed / f"manifest_{split}.jsonl").read_text().splitlines()):
        first.setdefault(n, rec_id)
    assert {item["id"] for item in small} == set(first.values())
    with pytest.raises(ValueError, match="max_per_count"):
        MixtureManifestDataset(mixed / f"manifest_{split}.jsonl", max_per_count=0)


def test_segments_crop_same_span_pad_and_drop(mixed):
    manifest = mixed / "manifest_tr.jsonl"
    full = MixtureManifestDataset(manifest)
    seg = MixtureManifestDataset(manifest, segment=1.0, seed=0)
    for i in range(len(full)):
        whole, crop = full[i], seg[i]
        assert crop["mix"].shape == (8000,) and crop["sources"].shape == (whole["n_src"], 8000)
        assert crop["length"] == 8000
        # find the crop's offset in the whole mixture; sources must be cut at the same place
        offsets = [o for o in range(whole["length"] - 8000 + 1)
                   if torch.equal(whole["mix"][o:o + 8000], crop["mix"])]
        assert offsets, "crop not found in the mixture"
        o = offsets[0]
        assert torch.equal(whole["sources"][:, o:o + 8000], crop["sources"])
    # reproducible per (seed, epoch, index); another epoch crops elsewhere
    again = MixtureManifestDataset(manifest, segment=1.0, seed=0)
    assert all(torch.equal(again[i]["mix"], seg[i]["mix"]) for i in range(len(seg)))
    again.set_epoch(1)
    assert any(not torch.equal(again[i]["mix"], seg[i]["mix"]) for i in range(len(seg)))
    # longer than every mixture: padded with zeros, true length kept; or dropped
    lengths = [full[i]["length"] for i in range(len(full))]
    long = MixtureManifestDataset(manifest, segment=10.0)
    item = long[0]
    assert item["mix"].shape == (80000,) and item["length"] == lengths[0]
    assert torch.equal(item["mix"][: lengths[0]], full[0]["mix"]) and not item["mix"][lengths[0]:].any()
    cut = (min(lengths) + max(lengths)) / 2 / 8000
    kept = MixtureManifestDataset(manifest, segment=cut, short="drop")
    assert len(kept) == sum(n >= cut * 8000 for n in lengths) and 0 < len(kept) < len(full)
    # cached and resampled reading (no partial reads) crop identically when the rate matches
    cached = MixtureManifestDataset(manifest, segment=1.0, seed=0, cache=True)
    assert cached[3]["mix"].shape == (8000,)
    up = MixtureManifestDataset(manifest, sample_rate=16000)
    assert up[0]["length"] == 2 * lengths[0]


def test_collate_mixed_counts_shapes_and_padding():
    g = torch.Generator().manual_seed(0)
    items = [
        {"mix": torch.randn(50, generator=g), "sources": torch.randn(1, 50, generator=g), "n_src": 1, "id": "a"},
        {"mix": torch.randn(80, generator=g), "sources": torch.randn(3, 80, generator=g), "n_src": 3, "id": "b",
         "length": 70},
        {"mix": torch.randn(60, generator=g), "sources": torch.randn(2, 60, generator=g), "n_src": 2, "id": "c"},
    ]
    batch = collate_mixtures(items, max_speakers=5)
    assert batch["mix"].shape == (3, 80) and batch["sources"].shape == (3, 5, 80)
    assert batch["n_src"].tolist() == [1, 3, 2] and batch["lengths"].tolist() == [50, 70, 60]
    assert batch["ids"] == ["a", "b", "c"]
    for b, item in enumerate(items):
        t, c = item["mix"].shape[-1], item["n_src"]
        assert torch.equal(batch["mix"][b, :t], item["mix"]) and not batch["mix"][b, t:].any()
        assert torch.equal(batch["sources"][b, :c, :t], item["sources"])
        assert not batch["sources"][b, c:].any() and not batch["sources"][b, :, t:].any()
    assert collate_mixtures(items)["sources"].shape == (3, 3, 80)
    with pytest.raises(ValueError, match="max_speakers=2"):
        collate_mixtures(items, max_speakers=2)


def test_collate_in_a_dataloader_mixing_counts(mixed):
    ds = MixtureManifestDataset(mixed / "manifest_cv.jsonl", segment=0.5, seed=0)
    loader = DataLoader(ds, batch_size=6, collate_fn=lambda b: collate_mixtures(b, max_speakers=5))
    batch = next(iter(loader))
    assert batch["sources"].shape == (6, 5, 4000) and sorted(batch["n_src"].tolist()) == [1, 1, 2, 2, 3, 3]
    torch.testing.assert_close(batch["sources"].sum(1), batch["mix"], atol=1e-6, rtol=0)


def test_dynamic_mixing_recipe_and_reproducibility(corpus):
    train_speakers = {u.speaker for u in load_utterance_manifest(corpus) if u.split == "tr"}
    ds = DynamicMixingDataset(corpus, counts=(1, 2, 3, 5), segment=1.0, sample_rate=8000, gains="wsj0",
                              epoch_size=12, seed=7, split="train")
    items = [ds[i] for i in range(12)]
    counts = set()
    for item in items:
        c = item["n_src"]
        counts.add(c)
        assert item["mix"].shape == (8000,) and item["sources"].shape == (c, 8000)
        assert len(set(item["speakers"])) == c and set(item["speakers"]) <= train_speakers
        torch.testing.assert_close(item["sources"].sum(0), item["mix"], atol=1e-6, rtol=0)
        peaks = [float(item["mix"].abs().max())] + [float(s.abs().max()) for s in item["sources"]]
        assert max(peaks) == pytest.approx(0.9, abs=1e-6)
        for g, s in zip(item["gains_db"], item["sources"]):
            assert -2.5 <= g <= 2.5
            level = active_speech_level(s[: item["length"]], 8000) - 20 * math.log10(item["scale"])
            assert level == pytest.approx(g, abs=0.2)
    assert counts == {1, 2, 3, 5}
    again = DynamicMixingDataset(corpus, counts=(1, 2, 3, 5), segment=1.0, epoch_size=12, seed=7)
    for i in (0, 5, 11):
        assert torch.equal(again[i]["mix"], items[i]["mix"]) and again[i]["speakers"] == items[i]["speakers"]
    again.set_epoch(1)
    assert sum(torch.equal(again[i]["mix"][:100], items[i]["mix"][:100]) for i in range(12)) == 0
    again.set_epoch(0)
    assert torch.equal(again[4]["sources"], items[4]["sources"])


def test_dynamic_mixing_librimix_levels_and_split_filter(corpus):
    ds = DynamicMixingDataset(corpus, counts=(2,), segment=None, gains="librimix", mode="max",
                              epoch_size=4, seed=1, split="test", cache=True)
    test_speakers = {u.speaker for u in load_utterance_manifest(corpus) if u.split == "tt"}
    for i in range(4):
        item = ds[i]
        assert set(item["speakers"]) <= test_speakers
        assert item["length"] == item["mix"].shape[-1]
        for g, s in zip(item["gains_db"], item["sources"]):
            assert -33 <= g <= -25
            assert loudness(s, 8000) - 20 * math.log10(item["scale"]) == pytest.approx(g, abs=0.05)


def test_dynamic_mixing_augmentations(corpus):
    utts = [u for u in load_utterance_manifest(corpus) if u.split == "tr"]
    base = dict(counts=(1,), segment=None, sample_rate=8000, epoch_size=3, seed=2)
    dry = DynamicMixingDataset(utts, **base)
    fast = DynamicMixingDataset(utts, augment={"speed": {"prob": 1.0, "range": [1.25, 1.25]}}, **base)
    for i in range(3):
        d, f = dry[i], fast[i]
        assert d["speakers"] == f["speakers"]
        # speed 1.25 = resampling from 10 kHz to 8 kHz: 4/5 of the samples
        assert f["length"] == AF.resample(torch.zeros(d["length"]), 10000, 8000).shape[-1]
    full = {"speed": True, "gain": {"prob": 1.0}, "filter": {"prob": 1.0}, "reverb": {"prob": 1.0},
            "noise": {"prob": 1.0, "snr_db": [5.0, 5.0]}}
    aug = DynamicMixingDataset(utts, augment=full, **{**base, "counts": (2, 3), "segment": 1.0})
    again = DynamicMixingDataset(utts, augment=full, **{**base, "counts": (2, 3), "segment": 1.0})
    for i in range(3):
        item = aug[i]
        assert torch.equal(item["mix"], again[i]["mix"])
        noise = item["mix"].double() - item["sources"].double().sum(0)
        snr = 10 * math.log10(float(item["sources"].double().sum(0).pow(2).mean()) / float(noise.pow(2).mean()))
        assert snr == pytest.approx(5.0, abs=0.01)
        assert float(item["mix"].abs().max()) <= 0.9 + 1e-6
    with pytest.raises(ValueError, match="unknown augmentation"):
        DynamicMixingDataset(utts, augment={"chorus": True}, **base)


def test_synthetic_rir_decays_60_db_over_rt60():
    rng = np.random.default_rng(0)
    rt60, sr = 0.4, 8000
    rir = synthetic_rir(rt60, sr, rng).numpy()
    assert rir[0] == 1.0 and rir.shape == (int(rt60 * sr),)
    tail = rir[1:] ** 2
    win = len(tail) // 10
    early = 10 * np.log10(tail[:win].mean())
    late = 10 * np.log10(tail[-win:].mean())
    # windows are 0.9 * rt60 apart: about 54 dB of decay
    assert early - late == pytest.approx(54, abs=3)


def test_dynamic_mixing_in_dataloader_workers(corpus):
    ds = DynamicMixingDataset(corpus, counts=(1, 2, 3), segment=0.5, epoch_size=8, seed=3)
    batches = [collate_mixtures(b, max_speakers=3) for b in [[ds[i] for i in range(4)], [ds[i] for i in range(4, 8)]]]
    loader = DataLoader(ds, batch_size=4, num_workers=2, collate_fn=lambda b: collate_mixtures(b, max_speakers=3))
    for ref, got in zip(batches, loader):
        assert torch.equal(ref["mix"], got["mix"]) and torch.equal(ref["n_src"], got["n_src"])


def test_dynamic_mixing_reverb_through_simulated_rooms(tmp_path_factory):
    """augment.reverb.method rooms: the talkers go through pyroomacoustics rooms (frontend.rooms);
    the mixture is still the sum of the (reverberant) sources."""
    pytest.importorskip("pyroomacoustics")
    from separation.data import DynamicMixingDataset
    from tests.speech_fixture import cached_tiny_corpus

    corpus = cached_tiny_corpus(tmp_path_factory, n_speakers=16, n_utts=3, split_sizes=(10, 3, 3))
    common = dict(counts=[2], segment=1.0, sample_rate=8000, epoch_size=2, seed=5)
    dry = DynamicMixingDataset(corpus, **common)[0]
    wet = DynamicMixingDataset(corpus, augment={"reverb": {"prob": 1.0, "method": "rooms", "rt60": [0.4, 0.6],
                                                           "n_rooms": 2}}, **common)[0]
    assert dry["speakers"] == wet["speakers"]
    torch.testing.assert_close(wet["sources"].sum(0), wet["mix"], atol=1e-5, rtol=0)
    corr = torch.nn.functional.cosine_similarity(dry["sources"], wet["sources"], dim=-1)
    assert float(corr.max()) < 0.95  # reverberant, not the dry talkers
    with pytest.raises(ValueError, match="method must be 'synthetic' or 'rooms'"):
        DynamicMixingDataset(corpus, augment={"reverb": {"method": "hall"}}, **common)


def test_dynamic_mixing_fill_tops_up_short_utterances_with_the_same_speakers(corpus):
    utts = [u for u in load_utterance_manifest(corpus) if u.split == "tr"]
    longest = max(sf.info(u.path).frames / sf.info(u.path).samplerate for u in utts)
    segment = math.ceil(longest) + 1.0  # longer than every utterance: min mode would cut every mixture
    base = dict(counts=(2, 3), segment=segment, sample_rate=8000, epoch_size=6, seed=3)
    plain, filled = DynamicMixingDataset(utts, **base), DynamicMixingDataset(utts, fill=True, **base)
    seg = int(round(segment * 8000))
    for i in range(6):
        p, f = plain[i], filled[i]
        assert p["speakers"] == f["speakers"]  # the same draw of talkers
        assert p["length"] < seg and f["length"] == seg
        for src in f["sources"]:
            # speech over the whole crop: every second holds signal (no zero padding at the end)
            power = src.reshape(-1, 8000).pow(2).mean(-1)
            assert float(power.min()) > 1e-6
        torch.testing.assert_close(f["sources"].sum(0), f["mix"], atol=1e-6, rtol=0)
    again = DynamicMixingDataset(utts, fill=True, **base)
    assert torch.equal(again[2]["mix"], filled[2]["mix"])
