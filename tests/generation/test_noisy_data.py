"""The denoiser's training data (real noise recordings split by file, generated noise, SNR, rooms,
the speaker split shared with separation) and its configurable loss (SI-SNR, multi-resolution STFT
against auraloss, the default L1 unchanged)."""
from __future__ import annotations

import dataclasses
import importlib.util
import math

import numpy as np
import pytest
import torch

from frontend import VoxsepError, save_audio
from frontend.utterances import noise_recordings, read_utterances
from generation.data import NoisySpeechDataset, _load_crop
from generation.enhancer import Enhancer, EnhancerConfig
from generation.losses import (
    STFT_RESOLUTIONS, denoising_l1, multi_resolution_stft_loss, neg_si_snr, pesq_loss, si_snr,
)
from generation.task import EnhancementTask
from generation.wavenet import WaveNetConfig

SR = 8000
FRACTIONS = [0.91, 0.09, 0.0]


def _tone(seconds: float, freq: float, seed: int) -> torch.Tensor:
    t = torch.arange(int(seconds * SR)) / SR
    env = 0.5 + 0.5 * torch.sin(2 * torch.pi * 3 * t + seed)
    return 0.3 * env * torch.sin(2 * torch.pi * freq * t)


@pytest.fixture(scope="module")
def speech_and_noise(tmp_path_factory):
    """A table of 44 speakers in two corpora (no split column, like DATA/speech/manifest.csv)
    and a folder of 11 noise recordings with a manifest.csv (like DATA/noise)."""
    root = tmp_path_factory.mktemp("noisy_data")
    rows = ["path,speaker,corpus,seconds"]
    for k in range(44):
        corpus = "so" if k < 33 else "ls"
        for j in range(2):
            rel = f"{corpus}/{k:03d}/{j}.flac"
            save_audio(root / "speech" / rel, _tone(0.6, 120 + 7 * k + 50 * j, k), SR)
            rows.append(f"{rel},{corpus}{k:03d},{corpus},0.6")
    (root / "speech" / "manifest.csv").write_text("\n".join(rows) + "\n")
    noise_rows = ["path,seconds,credit"]
    for k in range(11):
        wav = torch.from_numpy(np.random.default_rng(k).normal(0, 0.05 * (k + 1), int(0.3 * SR))).float()
        save_audio(root / "noise" / f"n{k:02d}.flac", wav, SR)
        noise_rows.append(f"n{k:02d}.flac,0.3,test")
    (root / "noise" / "manifest.csv").write_text("\n".join(noise_rows) + "\n")
    return root


def _snr_back(noisy: np.ndarray, speech: np.ndarray) -> float:
    noise = noisy.astype(np.float64) - speech.astype(np.float64)
    return 10 * math.log10(np.sum(speech.astype(np.float64) ** 2) / np.sum(noise ** 2))


def test_snr_is_as_asked_with_recordings_and_generated_noise(speech_and_noise):
    utts = read_utterances(speech_and_noise / "speech" / "manifest.csv", "train", fractions=FRACTIONS)
    files = noise_recordings(speech_and_noise / "noise", "train")
    ds = NoisySpeechDataset(utts, n_samples=3000, sample_rate=SR, length=40, fixed=True,
                            snr_db=(-5.0, 20.0), noise_files=files, noise_file_prob=0.5,
                            noise_kinds=["colored", "hum", "babble"])
    kinds, snrs = [], []
    for i in range(40):
        rng = np.random.default_rng([0, i])
        clean = utts[i % len(utts)]
        pair = ds.make_pair(_load_crop(clean, 3000, SR, rng), clean.speaker, rng)
        assert pair.noisy.dtype == np.float32 and pair.noisy.shape == pair.clean.shape == (3000,)
        assert _snr_back(pair.noisy, pair.clean) == pytest.approx(pair.snr_db, abs=0.02)
        assert -5.0 <= pair.snr_db <= 20.0 and pair.room == ""
        kinds.append(pair.noise)
        snrs.append(pair.snr_db)
    recorded = [k for k in kinds if k.startswith("file:")]
    assert 8 <= len(recorded) <= 32  # about half the items carry a recording, the others generated noise
    assert {k.removeprefix("file:") for k in recorded} <= {f.name for f in files}
    assert max(snrs) - min(snrs) > 10  # spread over the range
    # dataset items: the same SNR, as tensors; fixed items repeat
    item = ds[3]
    assert set(item) == {"noisy", "clean", "snr_db"}
    assert _snr_back(item["noisy"].numpy(), item["clean"].numpy()) == pytest.approx(float(item["snr_db"]), abs=0.02)
    assert torch.equal(ds[3]["noisy"], item["noisy"])


def test_speaker_and_noise_splits_are_disjoint_and_those_of_separation(speech_and_noise):
    from separation.data import DynamicMixingDataset
    from separation.data import noise_recordings as separation_noise_recordings

    table = speech_and_noise / "speech" / "manifest.csv"
    task = EnhancementTask()
    data = {"manifest": str(table), "fractions": FRACTIONS, "segment": 2000, "train_examples": 4,
            "valid_examples": 2, "noise_files": str(speech_and_noise / "noise")}
    train, valid = task.build_datasets(data, SR)
    train_speakers = {u.speaker for u in train.utterances}
    valid_speakers = {u.speaker for u in valid.utterances}
    assert train_speakers and valid_speakers and not train_speakers & valid_speakers
    assert len(train_speakers) + len(valid_speakers) == 44
    assert {s[:2] for s in valid_speakers} == {"so", "ls"}  # every corpus held back in part
    assert len(train.noise_files) == 8 and len(valid.noise_files) == 3
    assert not set(train.noise_files) & set(valid.noise_files)
    # separation's dynamic mixing on the same table and fractions: the same speakers and noise files
    sep_train = DynamicMixingDataset([{"path": str(table), "fractions": FRACTIONS}], counts=[2], segment=0.25,
                                     sample_rate=SR, split="train")
    sep_valid = DynamicMixingDataset([{"path": str(table), "fractions": FRACTIONS}], counts=[2], segment=0.25,
                                     sample_rate=SR, split="valid")
    assert set(sep_train.speakers) == train_speakers and set(sep_valid.speakers) == valid_speakers
    assert separation_noise_recordings is noise_recordings
    assert separation_noise_recordings(speech_and_noise / "noise", "valid") == valid.noise_files


def test_task_rejects_bad_noise_settings(speech_and_noise):
    task = EnhancementTask()
    base = {"manifest": str(speech_and_noise / "speech" / "manifest.csv"), "fractions": FRACTIONS, "segment": 2000}
    with pytest.raises(VoxsepError, match="unknown data keys"):
        task.build_datasets({**base, "noise_dir": "x"}, SR)
    with pytest.raises(VoxsepError, match="snr_db must be a range"):
        task.build_datasets({**base, "snr_db": [20, -5]}, SR)
    with pytest.raises(VoxsepError, match="no such file or folder|cannot read noise list"):
        task.build_datasets({**base, "noise_files": str(speech_and_noise / "missing")}, SR)


def test_rooms_need_the_extra_in_one_line(speech_and_noise, monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "pyroomacoustics" else real_find_spec(name, *a))
    utts = read_utterances(speech_and_noise / "speech" / "manifest.csv", "train", fractions=FRACTIONS)
    with pytest.raises(VoxsepError) as err:
        NoisySpeechDataset(utts, n_samples=2000, sample_rate=SR, length=2, fixed=True, rooms={"prob": 0.5})
    assert str(err.value) == "simulated rooms need the rooms extra: pip install 'voxsep[rooms]'"
    with pytest.raises(VoxsepError, match="unknown setting"):
        NoisySpeechDataset(utts, n_samples=2000, sample_rate=SR, length=2, fixed=True, rooms={"rt": 0.5})


def test_simulated_rooms_reverberate_and_keep_the_snr(speech_and_noise):
    pytest.importorskip("pyroomacoustics")
    from frontend.rooms import RoomBank, room_config

    bank = RoomBank(room_config({"rt60": [0.3, 0.3], "n_rooms": 2, "size": [[4, 4], [5, 5], [3, 3]]}), SR, seed=1)
    rir, early_end, rt60 = bank.rir(0)
    assert rt60 == pytest.approx(0.3) and 0 < early_end < rir.size
    assert np.sum(rir[:early_end] ** 2) == pytest.approx(1.0)  # unit early energy: the target keeps the level
    assert np.sum(rir[early_end:] ** 2) > 0.05  # a reverberant tail
    assert bank.rir(0)[0] is rir  # simulated once
    burst = np.zeros(4000, dtype=np.float32)
    burst[100:140] = 1.0
    reverberant, target, desc = bank.apply(burst, np.random.default_rng(0))
    assert desc.startswith("room") and reverberant.shape == target.shape == (4000,)
    tail = slice(140 + early_end + 400, 4000)
    assert np.sum(reverberant[tail] ** 2) > 1e-3 > np.sum(target[tail] ** 2)  # the target has no late tail
    # in the dataset: every item through a room, the SNR measured against the reverberant speech
    utts = read_utterances(speech_and_noise / "speech" / "manifest.csv", "train", fractions=FRACTIONS)
    ds = NoisySpeechDataset(utts, n_samples=3000, sample_rate=SR, length=4, fixed=True, snr_db=(0.0, 10.0),
                            noise_kinds=["colored"],
                            rooms={"prob": 1.0, "rt60": [0.2, 0.4], "n_rooms": 2, "target": "reverberant"})
    for i in range(4):
        item = ds[i]
        assert _snr_back(item["noisy"].numpy(), item["clean"].numpy()) == pytest.approx(float(item["snr_db"]), abs=0.02)


# ------------------------------------------------------------------------------------------ loss
def test_multi_resolution_stft_loss_equals_auraloss():
    auraloss = pytest.importorskip("auraloss")
    torch.manual_seed(0)
    ref = torch.randn(3, 6000)
    est = ref + 0.5 * torch.randn(3, 6000)
    expected = auraloss.freq.MultiResolutionSTFTLoss()(est[:, None], ref[:, None])
    assert multi_resolution_stft_loss(est, ref) == pytest.approx(float(expected), rel=1e-6)
    small = [(256, 64, 256), (128, 32, 96)]
    expected = auraloss.freq.MultiResolutionSTFTLoss(fft_sizes=[256, 128], hop_sizes=[64, 32],
                                                     win_lengths=[256, 96])(est[:, None], ref[:, None])
    assert multi_resolution_stft_loss(est, ref, small) == pytest.approx(float(expected), rel=1e-6)


def test_multi_resolution_stft_loss_known_values_and_gradient():
    torch.manual_seed(1)
    ref = torch.randn(2, 4096, dtype=torch.float64)
    assert float(multi_resolution_stft_loss(ref, ref)) == 0.0
    # est = 2 ref: spectral convergence 1 and log-magnitude distance ln 2 at every resolution
    assert float(multi_resolution_stft_loss(2 * ref, ref)) == pytest.approx(1 + math.log(2), rel=1e-9)
    est = (ref + torch.randn_like(ref)).requires_grad_()
    multi_resolution_stft_loss(est, ref).backward()
    assert torch.isfinite(est.grad).all() and est.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="half the largest FFT size"):
        multi_resolution_stft_loss(ref[:, :1000], ref[:, :1000])
    assert STFT_RESOLUTIONS == ((1024, 120, 600), (2048, 240, 1200), (512, 50, 240))


def _real_utterance() -> tuple[torch.Tensor, int]:
    """One of the package's bundled real utterances (a LibriSpeech speaker, 8 kHz, 4 s)."""
    import soundfile as sf
    from importlib.resources import files
    audio, sr = sf.read(str(files("voxsep") / "examples" / "real" / "ls1081_0.flac"), dtype="float32")
    return torch.from_numpy(audio)[None], sr


def test_pesq_loss_ranks_as_the_reference_pesq_and_ignores_level():
    torch_pesq = pytest.importorskip("torch_pesq")
    pesq = pytest.importorskip("pesq")
    clean, sr = _real_utterance()
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    losses, scores = [], []
    for snr in (0, 10, 20, 30):
        noisy = clean + noise * clean.norm() / noise.norm() * 10 ** (-snr / 20)
        losses.append(float(pesq_loss(noisy, clean, sr)))
        scores.append(pesq.pesq(sr, clean[0].numpy(), noisy[0].numpy(), "nb"))
    # the reference's PESQ rises with the SNR, the loss falls: the same ranking
    assert scores == sorted(scores) and losses == sorted(losses, reverse=True)
    assert losses[0] > 4.0 and losses[-1] < 2.0
    # exactly torch-pesq's disturbance (factor 1), and like PESQ blind to the level
    expected = torch_pesq.PesqLoss(1.0, sample_rate=sr)(clean, clean + 0.1 * noise)
    assert float(pesq_loss(clean + 0.1 * noise, clean, sr)) == pytest.approx(float(expected.mean()), rel=1e-6)
    assert float(pesq_loss(clean, clean, sr)) < 1e-6
    assert float(pesq_loss(0.3 * clean, clean, sr)) < 1e-3 and float(pesq_loss(3 * clean, clean, sr)) < 1e-3
    # a gradient for the denoiser; silent references are left out
    est = (clean + 0.1 * noise).requires_grad_()
    pesq_loss(est, clean, sr).backward()
    assert torch.isfinite(est.grad).all() and est.grad.abs().sum() > 0
    both = pesq_loss(torch.cat([clean + 0.1 * noise, noise]), torch.cat([clean, torch.zeros_like(clean)]), sr)
    assert float(both) == pytest.approx(float(expected.mean()), rel=1e-6)
    assert float(pesq_loss(noise, torch.zeros_like(clean), sr)) == 0.0


def _enhancer(target_field: int) -> Enhancer:
    return Enhancer(EnhancerConfig(
        wavenet=WaveNetConfig(layers_per_cycle=3, n_cycles=1, kernel_size=3, causal=False, residual_channels=8,
                              gate_channels=8, skip_channels=8, output="regression"), target_field=target_field))


def _config(model: Enhancer, target_field: int) -> dict:
    return {"wavenet": dataclasses.asdict(model.config.wavenet), "target_field": target_field}


def test_task_loss_default_is_the_l1_and_weights_combine_terms():
    torch.manual_seed(0)
    model = _enhancer(1100)
    n = model.training_length
    clean = torch.randn(2, n) * 0.1
    batch = {"noisy": clean + 0.05 * torch.randn(2, n), "clean": clean}
    default = EnhancementTask()
    loss, logs = default.loss(model, batch)
    noisy, ref = EnhancementTask._normalise(model, batch)
    valid = model.valid_slice(n)
    est = model(noisy)[:, valid]
    assert torch.equal(loss, denoising_l1(est, ref[:, valid], noisy[:, valid]))  # unchanged for existing configs
    assert set(logs) == {"loss"}
    task = EnhancementTask(loss={"si_snr": 1.0, "l1": 0.0, "mrstft": 2.0})
    model2 = task.build_model("wavenet_denoiser", _config(model, 1100))
    model2.load_state_dict(model.state_dict())
    loss, logs = task.loss(model2, batch)
    expected = -si_snr(est, ref[:, valid]).mean() + 2 * multi_resolution_stft_loss(est, ref[:, valid])
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    assert set(logs) == {"loss", "loss_si_snr", "loss_mrstft"}
    metrics = task.validation_metrics(model2, batch)
    assert metrics["loss"] == pytest.approx(float(expected.detach()), rel=1e-5) and "si_snri" in metrics
    # silent references are left out of the SI-SNR term
    silent = torch.zeros(2, 500)
    assert float(neg_si_snr(torch.randn(2, 500), silent)) == 0.0


def test_task_loss_pesq_term_at_the_data_sample_rate(tmp_path):
    pytest.importorskip("torch_pesq")
    clean, sr = _real_utterance()
    task = EnhancementTask(loss={"si_snr": 1.0, "pesq": 2.0})
    model = task.build_model("wavenet_denoiser", _config(_enhancer(4000), 4000))
    n = model.training_length
    ref = clean[:, :n].repeat(2, 1)
    batch = {"noisy": ref + 0.01 * torch.randn(2, n, generator=torch.Generator().manual_seed(1)), "clean": ref}
    table = tmp_path / "table.csv"
    table.write_text("path,speaker\n" + "".join(f"{k}.flac,s{k}\n" for k in range(12)))
    for k in range(12):
        save_audio(tmp_path / f"{k}.flac", clean[0, k * 2000:(k + 1) * 2000 + 4000], sr)
    task.build_datasets({"manifest": str(table), "fractions": FRACTIONS, "train_examples": 2, "valid_examples": 1}, sr)
    assert task.sample_rate == sr
    loss, logs = task.loss(model, batch)
    noisy, target = EnhancementTask._normalise(model, batch)
    valid = model.valid_slice(n)
    est = model(noisy)[:, valid]
    expected = -si_snr(est, target[:, valid]).mean() + 2 * pesq_loss(est, target[:, valid], sr)
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    assert set(logs) == {"loss", "loss_si_snr", "loss_pesq"} and logs["loss_pesq"] > 0


def test_task_loss_pesq_without_the_package_is_one_clear_error(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "torch_pesq", None)  # import torch_pesq -> ImportError
    with pytest.raises(VoxsepError, match=r"torch-pesq package: pip install \"voxsep\[train\]\""):
        EnhancementTask(loss={"si_snr": 1.0, "pesq": 1.0})
    EnhancementTask(loss={"si_snr": 1.0, "pesq": 0.0})  # a zero weight needs nothing


def test_task_loss_options_are_checked():
    with pytest.raises(VoxsepError, match="unknown term"):
        EnhancementTask(loss={"sisnr": 1.0})
    with pytest.raises(VoxsepError, match="not all zero"):
        EnhancementTask(loss={"l1": 0.0})
    with pytest.raises(VoxsepError, match="stft_resolutions"):
        EnhancementTask(stft_resolutions=[[256, 64, 512]])
    task = EnhancementTask(loss={"mrstft": 1.0})
    with pytest.raises(VoxsepError, match="target field"):
        task.build_model("wavenet_denoiser", _config(_enhancer(256), 256))
    small = EnhancementTask(loss={"mrstft": 1.0}, stft_resolutions=[[256, 64, 256], [128, 32, 128]])
    small.build_model("wavenet_denoiser", _config(_enhancer(256), 256))


@pytest.fixture(scope="module")
def tone_speakers(tmp_path_factory):
    """30 speakers, each one second of a steady tone of its own (200, 300, ... Hz): a crop looped
    over one second stays one clean spectral line, so a babble's talkers can be counted."""
    root = tmp_path_factory.mktemp("tone_speakers")
    rows = ["path,speaker,corpus,seconds"]
    t = torch.arange(SR) / SR
    for k in range(30):
        save_audio(root / f"{k:02d}.flac", 0.2 * torch.sin(2 * torch.pi * (200 + 100 * k) * t), SR)
        rows.append(f"{k:02d}.flac,s{k:02d},so,1.0")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return read_utterances(root / "manifest.csv", "train", fractions=[1.0, 0.0, 0.0])


def _talkers_heard(noise: np.ndarray) -> set[int]:
    """Which of the 30 speakers' lines stand out in ``noise`` (1 Hz bins over one second)."""
    power = np.abs(np.fft.rfft(noise.astype(np.float64))) ** 2
    lines = np.array([power[200 + 100 * k] for k in range(30)])
    return {k for k in range(30) if lines[k] > 0.01 * lines.max()}


@pytest.mark.parametrize("talkers", [(1, 1), (6, 6), (2, 4)])
def test_babble_crowd_has_the_asked_number_of_other_talkers(tone_speakers, talkers):
    ds = NoisySpeechDataset(tone_speakers, n_samples=SR, sample_rate=SR, length=12, fixed=True,
                            snr_db=(0.0, 10.0), noise_kinds=["colored"],
                            babble={"prob": 1.0, "talkers": list(talkers)})
    for i in range(12):
        rng = np.random.default_rng([1, i])
        own = tone_speakers[i % 30]
        pair = ds.make_pair(_load_crop(own, SR, SR, rng), own.speaker, rng)
        assert pair.noise.startswith("crowd:")
        k = int(pair.noise.removeprefix("crowd:"))
        assert talkers[0] <= k <= talkers[1]
        heard = _talkers_heard(pair.noisy - pair.clean)
        assert int(own.speaker[1:]) not in heard  # other talkers only
        # talkers are drawn with replacement: k lines, fewer only when a talker is drawn twice
        assert 1 <= len(heard) <= k and (k < 6 or len(heard) >= 3)
        assert _snr_back(pair.noisy, pair.clean) == pytest.approx(pair.snr_db, abs=0.02)


def test_babble_share_and_old_configs_unchanged(tone_speakers):
    common = dict(n_samples=SR, sample_rate=SR, length=40, fixed=True, snr_db=(0.0, 10.0),
                  noise_kinds=["colored", "hum"])
    plain = NoisySpeechDataset(tone_speakers, **common)
    off = NoisySpeechDataset(tone_speakers, **common, babble={"prob": 0.0})
    half = NoisySpeechDataset(tone_speakers, **common, babble={"prob": 0.5, "talkers": [3, 3]})
    kinds = []
    for i in range(40):
        rng_a, rng_b, rng_c = (np.random.default_rng([2, i]) for _ in range(3))
        own = tone_speakers[i % 30]
        a = plain.make_pair(_load_crop(own, SR, SR, rng_a), own.speaker, rng_a)
        b = off.make_pair(_load_crop(own, SR, SR, rng_b), own.speaker, rng_b)
        assert not a.noise.startswith("crowd")
        assert a.noise == b.noise and np.array_equal(a.noisy, b.noisy)  # prob 0 draws nothing more
        kinds.append(half.make_pair(_load_crop(own, SR, SR, rng_c), own.speaker, rng_c).noise)
    crowds = sum(k == "crowd:3" for k in kinds)
    assert 10 <= crowds <= 30 and all(k == "crowd:3" or not k.startswith("crowd") for k in kinds)


def test_babble_settings_are_checked(tone_speakers):
    def make(babble, rooms=None):
        return NoisySpeechDataset(tone_speakers, n_samples=SR, sample_rate=SR, length=2, fixed=True,
                                  babble=babble, rooms=rooms)
    with pytest.raises(VoxsepError, match="babble: unknown setting"):
        make({"p": 0.5})
    with pytest.raises(VoxsepError, match=r"babble.prob must be in \[0, 1\]"):
        make({"prob": 1.5})
    with pytest.raises(VoxsepError, match="babble.talkers must be a range"):
        make({"prob": 0.5, "talkers": [4, 2]})
    with pytest.raises(VoxsepError, match="babble.room_prob needs simulated rooms"):
        make({"prob": 0.5, "room_prob": 0.5})
    task = EnhancementTask()
    with pytest.raises(VoxsepError, match="babble.talkers"):
        task.build_datasets({"manifest": str(tone_speakers[0].path.parent / "manifest.csv"),
                             "fractions": [0.5, 0.5, 0.0], "segment": 2000, "babble": {"talkers": [0, 3]}}, SR)


def test_babble_crowd_through_a_room_is_reverberant(tone_speakers):
    pytest.importorskip("pyroomacoustics")
    ds = NoisySpeechDataset(tone_speakers, n_samples=SR, sample_rate=SR, length=4, fixed=True,
                            snr_db=(5.0, 5.0), noise_kinds=["colored"],
                            rooms={"prob": 0.0, "rt60": [0.5, 0.5], "n_rooms": 2},
                            babble={"prob": 1.0, "talkers": [1, 1], "room_prob": 1.0})
    rng = np.random.default_rng(3)
    own = tone_speakers[0]
    pair = ds.make_pair(_load_crop(own, SR, SR, rng), own.speaker, rng)
    assert pair.noise.startswith("crowd:1+room") and pair.room == ""  # the crowd is in the room, the talker is not
    assert np.array_equal(pair.clean, _load_crop(own, SR, SR, np.random.default_rng(3)))
    noise = (pair.noisy - pair.clean).astype(np.float64)
    # a steady tone through a room: it builds up over the first few hundredths of a second
    assert np.sqrt(np.mean(noise[:40] ** 2)) < 0.5 * np.sqrt(np.mean(noise[SR // 2:] ** 2))
    assert _snr_back(pair.noisy, pair.clean) == pytest.approx(5.0, abs=0.02)
