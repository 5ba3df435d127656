"""What the runner evaluates: a *system* turns one mixture item into estimates.

A system has a ``name`` and ``run(item) -> SystemOutput``. Three kinds:

* :class:`CallableSystem` - a ``separate(mix) -> (K, T)`` callable (a model; the count is its own
  choice), with an optional ``separate_with_count(mix, k)`` for the true-count ("oracle head") path
  and an optional ``count_probs(mix) -> (C_max + 1,)`` (probability of ``k`` talkers at index
  ``k``, ``k = 0..C_max``; called right after ``separate`` on the same tensor).
* :class:`OracleMaskSystem` - ideal binary / ratio masks built from the references (the ceiling).
* :class:`EstimatesDirSystem` - estimates another program wrote to ``DIR/<mixture>/s1.wav ...``.

``item`` is a mapping with ``id`` (str), ``mix`` ``(T,)``, ``sources`` ``(C, T)``, ``n_src`` and
``sample_rate``.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from evaluation.metrics import match_length
from evaluation.oracle import oracle_mask_separate
from frontend import VoxsepError, load_audio


@dataclass
class SystemOutput:
    """One system's output for one mixture (arrays are float32 numpy, aligned to the mixture)."""

    est: np.ndarray  # (K, T): the system chose K
    est_true_count: np.ndarray | None  # (C, T) with the count given, None if unavailable
    seconds: float  # wall time of the estimated-count separation (NaN: not measured)
    count_probs: np.ndarray | None = None  # (C_max + 1,) probability of k talkers at index k


def _to_numpy(wav: Any, length: int) -> np.ndarray:
    if isinstance(wav, (list, tuple)):
        wav = torch.stack([torch.as_tensor(w) for w in wav]) if len(wav) else torch.zeros(0, length)
    arr = wav.detach().cpu().float().numpy() if isinstance(wav, torch.Tensor) else np.asarray(wav, np.float32)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2:
        raise ValueError(f"a separator must return (K, T) estimates, got shape {tuple(arr.shape)}")
    return np.ascontiguousarray(match_length(arr, length), dtype=np.float32)


def _mix_tensor(item: Mapping) -> torch.Tensor:
    return torch.as_tensor(item["mix"], dtype=torch.float32)


class CallableSystem:
    """A separator given as callables (what ``voxsep evaluate --model`` builds from a model).

    If the estimated count equals the true count, the estimated-count output is reused for the
    true-count path (a separator's output for ``K`` talkers must not depend on whether ``K`` was
    estimated or given); otherwise ``separate_with_count(mix, C)`` is called. Without it the
    true-count path is available only for mixtures whose count was estimated right.
    """

    def __init__(self, name: str, separate: Callable, separate_with_count: Callable | None = None,
                 count_probs: Callable | None = None):
        self.name = name
        self.separate = separate
        self.separate_with_count = separate_with_count
        self.count_probs = count_probs

    def run(self, item: Mapping) -> SystemOutput:
        mix = _mix_tensor(item)
        length = mix.shape[-1]
        n_src = int(item["n_src"])
        start = time.perf_counter()
        with torch.no_grad():
            est = _to_numpy(self.separate(mix), length)
        seconds = time.perf_counter() - start
        est_true = est if est.shape[0] == n_src else None
        if est_true is None and self.separate_with_count is not None:
            with torch.no_grad():
                est_true = _to_numpy(self.separate_with_count(mix, n_src), length)
        probs = None
        if self.count_probs is not None:
            with torch.no_grad():
                probs = np.asarray(torch.as_tensor(self.count_probs(mix)).detach().cpu(), dtype=np.float64).ravel()
        return SystemOutput(est, est_true, seconds, probs)


class OracleMaskSystem:
    """Ideal binary (``"ibm"``) or ratio (``"irm"``) mask on an STFT; see :mod:`evaluation.oracle`."""

    def __init__(self, kind: str = "irm", name: str | None = None):
        if kind not in ("ibm", "irm"):
            raise ValueError(f"unknown oracle mask {kind!r} (expected 'ibm' or 'irm')")
        self.kind = kind
        self.name = name or f"oracle {kind.upper()}"

    def run(self, item: Mapping) -> SystemOutput:
        mix = _mix_tensor(item)
        sources = torch.as_tensor(item["sources"], dtype=torch.float32)
        start = time.perf_counter()
        est = oracle_mask_separate(mix, sources, int(item["sample_rate"]), self.kind).numpy()
        seconds = time.perf_counter() - start
        return SystemOutput(est, est, seconds)


_SOURCE_FILE = re.compile(r"^s(\d+)\.(wav|flac)$", re.IGNORECASE)


class EstimatesDirSystem:
    """Estimates written by any program as ``root/<mixture id>/s1.wav ... sK.wav``.

    This is the layout ``voxsep separate`` writes. The folder is looked up by the item's ``id``,
    then by the stem of its ``mixture_path`` if the item has one. Files are resampled to the
    item's rate if needed and padded/truncated to the mixture's length. The count is the number
    of ``s<i>`` files; there is no true-count path unless that number is right. Time is not
    measured (``seconds`` is NaN).

    Raises:
        VoxsepError: a mixture has no folder, or its folder has no ``s<i>`` file.
    """

    def __init__(self, root: str | Path, name: str | None = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise VoxsepError(f"{self.root}: estimates folder does not exist")
        self.name = name or self.root.name

    def folder_for(self, item: Mapping) -> Path:
        candidates = [str(item["id"])]
        if item.get("mixture_path"):
            candidates.append(Path(str(item["mixture_path"])).stem)
        for name in candidates:
            if (self.root / name).is_dir():
                return self.root / name
        raise VoxsepError(f"{self.root / candidates[0]}: no estimates for mixture {item['id']!r}")

    def run(self, item: Mapping) -> SystemOutput:
        folder = self.folder_for(item)
        files = sorted((int(m.group(1)), p) for p in folder.iterdir()
                       if (m := _SOURCE_FILE.match(p.name)))
        if not files:
            raise VoxsepError(f"{folder}: no s1.wav ... sK.wav estimates")
        length = int(np.shape(item["mix"])[-1])
        sr = int(item["sample_rate"])
        wavs = [match_length(load_audio(p, sample_rate=sr)[0].numpy(), length) for _, p in files]
        est = _to_numpy(np.stack(wavs), length)
        est_true = est if est.shape[0] == int(item["n_src"]) else None
        return SystemOutput(est, est_true, float("nan"))
