"""Simulated rooms for training data (pyroomacoustics, the optional ``[rooms]`` extra): the denoiser's
noisy speech and the reverberation augmentation of separation's dynamic mixing.

A :class:`RoomBank` holds ``n_rooms`` shoebox rooms, each drawn once from ``(seed, index)``: size,
a reverberation time (absorption and image-source order from Sabine's formula,
``pyroomacoustics.inverse_sabine``), a talker and a microphone position at least 0.5 m from the
walls and each other. Impulse responses are computed on first use and kept (an RT60 of 0.9 s
takes about 0.7 s of CPU to simulate; a bank of 64 is shared by every item of a dataset).

:meth:`RoomBank.apply` gives the reverberant speech (what goes into the noisy input) and the
training target: ``"early"`` (default) is the speech through the direct path and the first
``early_ms`` of reflections (the usual target of denoisers that should not dereverberate fully,
e.g. the DNS challenge), ``"reverberant"`` the reverberant speech itself. Both are aligned (the
same direct-path delay) and the impulse response is scaled so that its early part has unit
energy: the target keeps the dry speech's level. Noise is added after the room, as recorded
ambient noise already carries its own room.
"""
from __future__ import annotations

import importlib.util
from typing import Any, Mapping

import numpy as np
from scipy.signal import fftconvolve

from frontend.errors import VoxsepError

#: room settings a config may give (``data.rooms``), with their defaults
ROOM_DEFAULTS: dict[str, Any] = {
    "prob": 0.3,                                   # share of items with a simulated room
    "rt60": [0.2, 0.8],                            # seconds, uniform
    "size": [[3.0, 10.0], [3.0, 10.0], [2.4, 4.0]],  # metres (length, width, height), uniform each
    "n_rooms": 64,                                 # rooms in the bank (drawn once, cached)
    "target": "early",                             # early | reverberant
    "early_ms": 50.0,                              # reflections kept in the "early" target
}

MISSING_EXTRA = "simulated rooms need the rooms extra: pip install 'voxsep[rooms]'"


def room_config(config: Mapping[str, Any] | bool | None) -> dict | None:
    """The merged room settings of a config entry (``None``/``False``: no rooms; ``True``: defaults).

    Raises:
        VoxsepError: unknown settings, a bad value, or pyroomacoustics not installed (one line
            naming the extra).
    """
    if config is None or config is False:
        return None
    merged = dict(ROOM_DEFAULTS)
    if isinstance(config, Mapping):
        unknown = set(config) - set(ROOM_DEFAULTS)
        if unknown:
            raise VoxsepError(f"data.rooms: unknown setting(s) {sorted(unknown)} (known: {sorted(ROOM_DEFAULTS)})")
        merged.update(config)
    elif config is not True:
        raise VoxsepError(f"data.rooms must be a mapping of settings, true or null, got {config!r}")
    if merged["target"] not in ("early", "reverberant"):
        raise VoxsepError(f"data.rooms.target must be 'early' or 'reverberant', got {merged['target']!r}")
    lo, hi = (float(v) for v in merged["rt60"])
    if not 0 < lo <= hi:
        raise VoxsepError(f"data.rooms.rt60 must be a range of positive seconds, got {merged['rt60']}")
    if not 0.0 <= float(merged["prob"]) <= 1.0 or int(merged["n_rooms"]) < 1:
        raise VoxsepError("data.rooms: prob must be in [0, 1] and n_rooms >= 1")
    if importlib.util.find_spec("pyroomacoustics") is None:
        raise VoxsepError(MISSING_EXTRA)
    return merged


class RoomBank:
    """``n_rooms`` simulated rooms drawn from ``seed`` (see the module docstring).

    Args:
        config: merged settings (:func:`room_config`).
        sample_rate: Hz.
        seed: the bank's seed (the same seed gives the same rooms).
    """

    def __init__(self, config: Mapping[str, Any], sample_rate: int, seed: int = 0):
        self.config = dict(config)
        self.sample_rate = int(sample_rate)
        self.seed = int(seed)
        self._rirs: dict[int, tuple[np.ndarray, int, float]] = {}

    def __len__(self) -> int:
        return int(self.config["n_rooms"])

    def room(self, index: int) -> dict:
        """The room ``index``: ``{"size", "rt60", "source", "mic"}`` (metres, seconds)."""
        rng = np.random.default_rng([self.seed, 7919, int(index)])
        size = np.array([rng.uniform(float(lo), float(hi)) for lo, hi in self.config["size"]])
        rt60 = float(rng.uniform(*(float(v) for v in self.config["rt60"])))
        margin = 0.5
        for _ in range(100):
            source = rng.uniform(margin, size - margin)
            mic = rng.uniform(margin, size - margin)
            if np.linalg.norm(source - mic) >= 0.5:
                break
        return {"size": size, "rt60": rt60, "source": source, "mic": mic}

    def rir(self, index: int) -> tuple[np.ndarray, int, float]:
        """``(impulse response (L,) float64, end of the early part in samples, rt60)`` of room ``index``."""
        if index not in self._rirs:
            import pyroomacoustics as pra

            spec = self.room(index)
            try:
                absorption, max_order = pra.inverse_sabine(spec["rt60"], spec["size"])
            except ValueError:  # a room too large for this RT60: the most reverberant it can be
                absorption, max_order = 0.01, 60
            room = pra.ShoeBox(spec["size"], fs=self.sample_rate, materials=pra.Material(absorption),
                               max_order=int(max_order))
            room.add_source(spec["source"])
            room.add_microphone(spec["mic"])
            room.compute_rir()
            rir = np.asarray(room.rir[0][0], dtype=np.float64)
            direct = int(np.argmax(np.abs(rir)))
            early = max(1, int(round(float(self.config["early_ms"]) * self.sample_rate / 1000)))
            early_end = min(rir.size, direct + early)
            rir = rir / max(float(np.sqrt(np.sum(rir[:early_end] ** 2))), 1e-12)
            self._rirs[index] = (rir, early_end, spec["rt60"])
        return self._rirs[index]

    def apply(self, speech: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, str]:
        """Speech ``(T,)`` through a random room of the bank.

        Returns:
            ``(reverberant (T,), target (T,), description)``, float32, aligned with each other
            (both delayed by the direct path).
        """
        index = int(rng.integers(len(self)))
        rir, early_end, rt60 = self.rir(index)
        n = speech.shape[-1]
        x = np.asarray(speech, dtype=np.float64)
        reverberant = fftconvolve(x, rir)[:n]
        target = reverberant if self.config["target"] == "reverberant" else fftconvolve(x, rir[:early_end])[:n]
        return reverberant.astype(np.float32), target.astype(np.float32), f"room{index}:rt60={rt60:.2f}"
