"""Datasets for the denoiser and the vocoder, read from the utterance manifest (contract 1).

Input forms: anything :func:`frontend.utterances.read_utterances` reads (a corpus manifest, an
utterance table such as ``DATA/speech/manifest.csv``, or a folder of single-speaker files), with the
project's one speaker-split rule, so that enhancement and separation hold out the same speakers.
Noise recordings are split by file with :func:`frontend.utterances.noise_recordings` (the rule of
separation's dynamic mixing), so validation uses recordings training never heard.
Items are random crops; validation items are fixed by their index.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from frontend import audio_info, load_audio
from frontend.errors import VoxsepError
from frontend.noise import loop_excerpt
from frontend.utterances import Utterance, noise_recordings, read_utterances  # noqa: F401  (the tasks' readers)
from generation.noise import NOISE_KINDS, babble, make_noise, mix_at_snr
from frontend.rooms import RoomBank, room_config


def _load_crop(utt: Utterance, n_samples: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``n_samples`` crop (zero-padded if the utterance is shorter)."""
    info = audio_info(utt.path)
    if info.sample_rate == sample_rate:
        start = int(rng.integers(0, max(1, info.frames - n_samples + 1)))
        wav, _ = load_audio(utt.path, start=start, frames=min(n_samples, info.frames))
    else:
        wav, _ = load_audio(utt.path, sample_rate=sample_rate)
        start = int(rng.integers(0, max(1, wav.shape[-1] - n_samples + 1)))
        wav = wav[start:start + n_samples]
    out = np.zeros(n_samples, dtype=np.float32)
    out[:wav.shape[-1]] = wav.numpy()[:n_samples]
    return out


class _CropDataset(Dataset):
    """Base: ``length`` items, random crops of ``n_samples`` (fixed per index when ``fixed``)."""

    def __init__(self, utterances: Sequence[Utterance], n_samples: int, sample_rate: int, length: int,
                 fixed: bool, seed: int = 0):
        if not utterances:
            raise VoxsepError("no utterances for this split (check the manifest's split names)")
        self.utterances = list(utterances)
        self.n_samples, self.sample_rate, self.length = int(n_samples), int(sample_rate), int(length)
        self.fixed, self.seed = fixed, seed

    def __len__(self) -> int:
        return self.length

    def _rng(self, index: int) -> np.random.Generator:
        if self.fixed:
            return np.random.default_rng([self.seed, index])
        return np.random.default_rng(int(torch.randint(0, 2 ** 62, ()).item()))


@dataclass(frozen=True)
class NoisyPair:
    """One noisy example: ``noisy`` and ``clean`` ``(T,)`` float32, the SNR (dB) of the speech in
    ``noisy`` over the noise, and what was added (``noise``: a kind or ``file:NAME``; ``room``:
    ``""`` or the simulated room)."""

    noisy: np.ndarray
    clean: np.ndarray
    snr_db: float
    noise: str
    room: str = ""


_BABBLE_DEFAULTS = {"prob": 0.0, "talkers": (3, 12), "room_prob": 0.0}


def _babble_config(settings: Mapping | None, have_rooms: bool) -> dict | None:
    """The ``babble`` settings of :class:`NoisySpeechDataset` checked and completed, or ``None``."""
    if settings is None:
        return None
    unknown = set(settings) - set(_BABBLE_DEFAULTS)
    if unknown:
        raise VoxsepError(f"data.babble: unknown setting(s) {sorted(unknown)} (known: {sorted(_BABBLE_DEFAULTS)})")
    out = {**_BABBLE_DEFAULTS, **settings}
    for key in ("prob", "room_prob"):
        if not 0.0 <= float(out[key]) <= 1.0:
            raise VoxsepError(f"data.babble.{key} must be in [0, 1], got {out[key]}")
        out[key] = float(out[key])
    talkers = [int(v) for v in out["talkers"]]
    if len(talkers) != 2 or not 1 <= talkers[0] <= talkers[1]:
        raise VoxsepError(f"data.babble.talkers must be a range [low, high] with 1 <= low <= high, got {list(out['talkers'])}")
    out["talkers"] = tuple(talkers)
    if out["room_prob"] > 0 and not have_rooms:
        raise VoxsepError("data.babble.room_prob needs simulated rooms: set data.rooms (its prob may be 0)")
    return out


def noise_settings(data_config: Mapping) -> dict:
    """The noise arguments of :class:`NoisySpeechDataset` from an enhancement config's ``data``
    section (its defaults where a key is missing); the noise files depend on the split and are not
    among them."""
    return dict(snr_db=data_config.get("snr_db", (-5.0, 15.0)),
                noise_kinds=data_config.get("noise_kinds", NOISE_KINDS),
                noise_file_prob=float(data_config.get("noise_file_prob", 0.5)),
                rooms=data_config.get("rooms"), babble=data_config.get("babble"))


class NoisySpeechDataset(_CropDataset):
    """Items ``{"noisy": (T,), "clean": (T,), "snr_db": float}``: speech + noise at an SNR.

    The noise of an item is an excerpt of a real recording with probability ``noise_file_prob``
    (when ``noise_files`` are given), else generated noise (:func:`generation.noise.make_noise`;
    babble is made of other speakers of the same utterances). With ``rooms``, a share of the items
    first puts the speech through a simulated room (:mod:`frontend.rooms`; the target is then the
    early-reflection speech). The SNR is drawn uniformly from ``snr_db``: the power of the speech
    in ``noisy`` (after the room) over the noise's, over the whole crop.

    Args:
        utterances: the clean speech (one split of :func:`frontend.utterances.read_utterances`).
        n_samples, sample_rate, length, fixed, seed: crops (see :class:`_CropDataset`).
        snr_db: range of signal-to-noise ratios (dB).
        noise_kinds: subset of :data:`generation.noise.NOISE_KINDS`.
        noise_files: noise recordings of this split (:func:`frontend.utterances.noise_recordings`).
        noise_file_prob: share of items whose noise is a recording (when there are recordings).
        rooms: ``None`` or room settings (:data:`frontend.rooms.ROOM_DEFAULTS`; needs the
            ``[rooms]`` extra).
        babble: ``None`` or crowd settings ``{prob, talkers: [low, high], room_prob}``: a share
            ``prob`` of the items gets, before any recording or generated noise, a babble of
            ``low``..``high`` other talkers (both included), of which a share ``room_prob`` goes
            through one of the simulated ``rooms`` whole (a distant, reverberant crowd, as in a
            cafeteria). ``None`` (the default) leaves babble to ``noise_kinds``.
    """

    def __init__(self, utterances, n_samples, sample_rate, length, fixed, seed=0,
                 snr_db: Sequence[float] = (-5.0, 15.0), noise_kinds: Sequence[str] = NOISE_KINDS,
                 noise_files: Sequence[str | os.PathLike] = (), noise_file_prob: float = 0.5,
                 rooms: Mapping | None = None, babble: Mapping | None = None):
        super().__init__(utterances, n_samples, sample_rate, length, fixed, seed)
        self.snr_db = tuple(float(v) for v in snr_db)
        if len(self.snr_db) != 2 or self.snr_db[0] > self.snr_db[1]:
            raise VoxsepError(f"snr_db must be a range [low, high] in dB, got {list(snr_db)}")
        self.noise_kinds = tuple(noise_kinds)
        self.noise_files = [Path(f) for f in noise_files]
        self.noise_file_prob = float(noise_file_prob)
        if not 0.0 <= self.noise_file_prob <= 1.0:
            raise VoxsepError(f"noise_file_prob must be in [0, 1], got {noise_file_prob}")
        room_settings = room_config(rooms)
        self.rooms = RoomBank(room_settings, self.sample_rate, seed) if room_settings else None
        self.babble = _babble_config(babble, self.rooms is not None)
        self._noise_audio: dict[Path, np.ndarray] = {}

    def __getitem__(self, index: int) -> dict:
        rng = self._rng(index)
        utt = self.utterances[int(rng.integers(len(self.utterances)))]
        pair = self.make_pair(_load_crop(utt, self.n_samples, self.sample_rate, rng), utt.speaker, rng)
        return {"noisy": torch.from_numpy(pair.noisy), "clean": torch.from_numpy(pair.clean),
                "snr_db": torch.tensor(pair.snr_db)}

    def make_pair(self, clean: np.ndarray, speaker: str, rng: np.random.Generator) -> NoisyPair:
        """``clean (T,)`` of ``speaker`` with noise (and perhaps a room) drawn from ``rng``."""
        n = clean.shape[-1]
        others = [u for u in self.utterances if u.speaker != speaker] or self.utterances

        def babble_source(n_talkers: int, r: np.random.Generator) -> list[np.ndarray]:
            picks = r.integers(0, len(others), n_talkers)
            return [_load_crop(others[int(i)], n, self.sample_rate, r) for i in picks]

        noise = None
        if self.babble is not None and self.babble["prob"] > 0 and rng.random() < self.babble["prob"]:
            noise, desc = self._crowd(n, babble_source, rng)
        elif self.noise_files and rng.random() < self.noise_file_prob:
            noise, desc = self._recording(n, rng)
        if noise is None:
            noise, desc = make_noise(n, self.sample_rate, rng, self.noise_kinds, babble_source)
        snr = float(rng.uniform(*self.snr_db))
        speech, target, room = clean, clean, ""
        if self.rooms is not None and rng.random() < float(self.rooms.config["prob"]):
            speech, target, room = self.rooms.apply(clean, rng)
        if not np.any(speech):
            noisy = (noise * 0.01).astype(np.float32)
        else:
            noisy = mix_at_snr(speech, noise, snr)
        return NoisyPair(noisy.astype(np.float32, copy=False), target.astype(np.float32, copy=False), snr, desc, room)

    def _crowd(self, n: int, babble_source, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        """A babble of a random number of other talkers (``babble`` settings), perhaps through a room."""
        low, high = self.babble["talkers"]
        talkers = int(rng.integers(low, high + 1))
        noise, desc = babble(n, self.sample_rate, rng, babble_source(talkers, rng)), f"crowd:{talkers}"
        if self.rooms is not None and rng.random() < self.babble["room_prob"]:
            noise, _, room = self.rooms.apply(noise, rng)
            desc += f"+{room}"
        return noise, desc

    def _recording(self, n_samples: int, rng: np.random.Generator) -> tuple[np.ndarray | None, str]:
        """A random stretch of a random noise recording (looped when shorter), at unit RMS; ``None``
        when the stretch is silent (the caller then generates noise)."""
        path = self.noise_files[int(rng.integers(len(self.noise_files)))]
        if path not in self._noise_audio:
            self._noise_audio[path] = load_audio(path, sample_rate=self.sample_rate)[0].numpy()
        wav = self._noise_audio[path]
        if wav.size == 0:
            return None, ""
        part = loop_excerpt(wav, n_samples, rng).astype(np.float64)
        rms = float(np.sqrt(np.mean(part ** 2)))
        if rms < 1e-6:
            return None, ""
        return (part / rms).astype(np.float32), f"file:{path.name}"


class SpeechCropDataset(_CropDataset):
    """Items ``{"wav": (T,)}``: clean speech crops (vocoder training)."""

    def __getitem__(self, index: int) -> dict:
        rng = self._rng(index)
        utt = self.utterances[int(rng.integers(len(self.utterances)))]
        return {"wav": torch.from_numpy(_load_crop(utt, self.n_samples, self.sample_rate, rng))}
