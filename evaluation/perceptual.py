"""PESQ and STOI/ESTOI through the optional ``[eval]`` extra (``pesq``, ``pystoi``).

Both packages are imported lazily: :func:`available_perceptual` says which are installed, and the
runner omits the columns of a missing one instead of failing.

* **PESQ** (ITU-T P.862): narrow band (``pesq_nb``, P.862.1 MOS-LQO) for 8 kHz audio and wide band
  (``pesq_wb``, P.862.2) for 16 kHz audio. Other rates are resampled to 16 kHz (wide band) with
  :func:`frontend.resample`.
* **STOI** (Taal et al. 2011) and **ESTOI** (Jensen and Taal 2016) via ``pystoi``, which resamples
  to 10 kHz internally.

Defined results where the libraries misbehave: a silent reference or estimate, input shorter
than :data:`MIN_SECONDS` (PESQ raises), PESQ finding no utterance, or STOI finding fewer than 30
frames of speech (pystoi warns and returns 1e-5) all give ``NaN`` ("undefined"), never an
exception. Unequal lengths raise ``ValueError`` (use :func:`evaluation.match_length`).
"""
from __future__ import annotations

import importlib.util
import warnings

import numpy as np
import torch

MIN_SECONDS = 0.25  # PESQ refuses shorter input


def available_perceptual() -> dict[str, bool]:
    """``{"pesq": bool, "stoi": bool}``: which optional packages can be imported."""
    return {"pesq": importlib.util.find_spec("pesq") is not None,
            "stoi": importlib.util.find_spec("pystoi") is not None}


def _np(x) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return arr.astype(np.float64, copy=False)


def _usable(ref: np.ndarray, est: np.ndarray, sample_rate: int) -> bool:
    if ref.shape != est.shape or ref.ndim != 1:
        raise ValueError(f"perceptual metrics need two (T,) signals of equal length, got "
                         f"{tuple(ref.shape)} and {tuple(est.shape)}")
    return (ref.shape[-1] >= MIN_SECONDS * sample_rate and np.any(ref != 0) and np.any(est != 0)
            and np.isfinite(ref).all() and np.isfinite(est).all())


def pesq_scores(ref, est, sample_rate: int) -> dict[str, float]:
    """PESQ of one estimate ``(T,)`` against its reference ``(T,)``.

    Returns ``{"pesq_nb": x}`` at 8 kHz and ``{"pesq_wb": y}`` at 16 kHz and other rates
    (resampled to 16 kHz); ``NaN`` where undefined.
    """
    from pesq import pesq
    from pesq import PesqError

    ref, est = _np(ref), _np(est)
    if sample_rate == 8000:
        modes = {"pesq_nb": (8000, "nb")}
    else:
        modes = {"pesq_wb": (16000, "wb")}
    usable = _usable(ref, est, sample_rate)
    if usable and sample_rate not in (8000, 16000):
        from frontend import resample
        ref = resample(torch.from_numpy(ref), sample_rate, 16000).numpy()
        est = resample(torch.from_numpy(est), sample_rate, 16000).numpy()
    out = {}
    for key, (rate, mode) in modes.items():
        value = float("nan")
        if usable:
            try:
                value = float(pesq(rate, ref, est, mode))
            except PesqError:  # no utterance found, buffer too short: undefined
                pass
        out[key] = value
    return out


def stoi_scores(ref, est, sample_rate: int, extended: bool = True) -> dict[str, float]:
    """STOI (and ESTOI when ``extended``) of one estimate ``(T,)`` against its reference ``(T,)``."""
    from pystoi import stoi

    ref, est = _np(ref), _np(est)
    keys = ("stoi", "estoi") if extended else ("stoi",)
    if not _usable(ref, est, sample_rate):
        return {k: float("nan") for k in keys}
    out = {}
    for key in keys:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            value = float(stoi(ref, est, sample_rate, extended=(key == "estoi")))
        if any("Not enough STFT frames" in str(w.message) for w in caught):
            value = float("nan")
        out[key] = value
    return out
