"""Datasets for the denoiser and the vocoder, read from the utterance manifest (contract 1).

Input forms: anything :func:`frontend.utterances.read_utterances` reads (a corpus manifest, an
utterance table such as ``DATA/speech/manifest.csv``, or a folder of single-speaker files), with the
project's one speaker-split rule, so that enhancement and separation hold out the same speakers.
Items are random crops; validation items are fixed by their index.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from frontend import audio_info, load_audio
from frontend.errors import VoxsepError
from frontend.utterances import Utterance, read_utterances  # noqa: F401  (read_utterances: the tasks' reader)
from generation.noise import NOISE_KINDS, make_noise, mix_at_snr


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


class NoisySpeechDataset(_CropDataset):
    """Items ``{"noisy": (T,), "clean": (T,), "snr_db": float}``: speech + synthetic noise.

    Args:
        snr_db: range of signal-to-noise ratios (dB, RMS over the crop).
        noise_kinds: subset of :data:`generation.noise.NOISE_KINDS`; babble uses other speakers.
    """

    def __init__(self, utterances, n_samples, sample_rate, length, fixed, seed=0,
                 snr_db: Sequence[float] = (-5.0, 15.0), noise_kinds: Sequence[str] = NOISE_KINDS):
        super().__init__(utterances, n_samples, sample_rate, length, fixed, seed)
        self.snr_db = tuple(float(v) for v in snr_db)
        self.noise_kinds = tuple(noise_kinds)

    def __getitem__(self, index: int) -> dict:
        rng = self._rng(index)
        utt = self.utterances[int(rng.integers(len(self.utterances)))]
        clean = _load_crop(utt, self.n_samples, self.sample_rate, rng)
        others = [u for u in self.utterances if u.speaker != utt.speaker] or self.utterances

        def babble_source(n_talkers: int, r: np.random.Generator) -> list[np.ndarray]:
            picks = r.integers(0, len(others), n_talkers)
            return [_load_crop(others[int(i)], self.n_samples, self.sample_rate, r) for i in picks]

        noise, _ = make_noise(self.n_samples, self.sample_rate, rng, self.noise_kinds, babble_source)
        snr = float(rng.uniform(*self.snr_db))
        if not np.any(clean):
            noisy = (noise * 0.01).astype(np.float32)
        else:
            noisy = mix_at_snr(clean, noise, snr)
        return {"noisy": torch.from_numpy(noisy), "clean": torch.from_numpy(clean),
                "snr_db": torch.tensor(snr)}


class SpeechCropDataset(_CropDataset):
    """Items ``{"wav": (T,)}``: clean speech crops (vocoder training)."""

    def __getitem__(self, index: int) -> dict:
        rng = self._rng(index)
        utt = self.utterances[int(rng.integers(len(self.utterances)))]
        return {"wav": torch.from_numpy(_load_crop(utt, self.n_samples, self.sample_rate, rng))}
