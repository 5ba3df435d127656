"""Objective separation metrics: SI-SNR and bss_eval v3 SDR/SIR/SAR, with their improvements.

All values are in dB and computed in float64.

* **SI-SNR** (scale-invariant signal-to-noise ratio, Le Roux et al. 2019, arXiv 1811.02508): both
  signals are made zero-mean, the estimate is projected on the reference,
  ``target = <est, ref> / ||ref||^2 * ref``, ``noise = est - target`` and
  ``SI-SNR = 10 log10(||target||^2 / ||noise||^2)``.
* **SDR/SIR/SAR** follow bss_eval v3 exactly as ``mir_eval.separation.bss_eval_sources`` defines
  them (Vincent, Gribonval, Fevotte 2006): time-invariant distortion filters of 512 taps, the
  permutation that maximises the mean SIR. The projections are computed with fast_bss_eval's torch
  backend (Scheibler 2021, arXiv 2110.06440) in float64, which agrees with mir_eval to better than
  1e-4 dB and is many times faster (see ``bench/metrics.py``).
* **Improvements** (SI-SNRi, SDRi, SIRi, SARi) subtract the value the unprocessed mixture gets as
  the estimate of the same reference. A mixture made only of its references has no artifacts, so
  its SAR is the ``+MAX_DB`` cap and SARi is not informative (reports show SAR itself).

Edge cases (the libraries raise, return 0, or return arbitrary huge numbers; here the result is
defined):

* **Cap**: every dB value is clipped to ``[-MAX_DB, MAX_DB]`` (100 dB). A perfect estimate gives
  ``+MAX_DB``; an estimate with nothing of the reference (silent or orthogonal) gives ``-MAX_DB``.
* **Silent reference** (all samples zero, or constant for SI-SNR): its values are ``NaN``
  ("undefined"); the other references are scored normally (for bss_eval a silent reference spans
  nothing, so the interference subspace of the others is unchanged).
* **Silent estimate**: SI-SNR, SDR, SIR and SAR are ``-MAX_DB``.
* **Unequal lengths**: the functions here raise ``ValueError`` naming both shapes;
  :func:`match_length` applies the runner's rule (zero-pad or truncate the estimates to the
  reference length).
* **Too short**: bss_eval needs at least ``filter_length`` (512) samples and SI-SNR at least 2;
  shorter input raises :class:`MetricError`.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

MAX_DB = 100.0
BSS_FILTER_LENGTH = 512


class MetricError(ValueError):
    """A metric is undefined for this input (too short, empty); the message says why."""


def _as_float64(x, name: str) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    arr = arr.astype(np.float64, copy=False)
    if not np.isfinite(arr).all():
        raise MetricError(f"{name} contains NaN or Inf samples")
    return arr


def _as_2d(x, name: str) -> np.ndarray:
    arr = _as_float64(x, name)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be (T,) or (C, T), got shape {tuple(arr.shape)}")
    return arr


def _check_pair(ref: np.ndarray, est: np.ndarray, min_length: int) -> None:
    if ref.shape[-1] != est.shape[-1]:
        raise ValueError(
            f"references and estimates differ in length: ref {tuple(ref.shape)} vs est "
            f"{tuple(est.shape)} (use evaluation.match_length)")
    if ref.shape[-1] < min_length:
        raise MetricError(f"input too short: {ref.shape[-1]} samples, need at least {min_length}")


def to_db(ratio: np.ndarray) -> np.ndarray:
    """``10 log10(ratio)`` clipped to ``[-MAX_DB, MAX_DB]`` (``inf`` and ``0`` map to the caps)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        db = 10.0 * np.log10(ratio)
    return np.clip(db, -MAX_DB, MAX_DB)


def match_length(est, length: int):
    """Zero-pad or truncate estimates ``(..., T')`` to ``length`` samples (the runner's rule).

    A separator that drops samples is penalised (the missing part counts as silence); extra
    samples beyond the mixture are ignored.
    """
    cur = est.shape[-1]
    if cur == length:
        return est
    if cur > length:
        return est[..., :length]
    if isinstance(est, torch.Tensor):
        return torch.nn.functional.pad(est, (0, length - cur))
    pad = [(0, 0)] * (np.ndim(est) - 1) + [(0, length - cur)]
    return np.pad(est, pad)


# ----------------------------------------------------------------------------------- SI-SNR

def pairwise_si_snr(ref, est) -> np.ndarray:
    """SI-SNR of every estimate against every reference.

    Args:
        ref: references ``(C, T)`` or ``(T,)``.
        est: estimates ``(K, T)`` or ``(T,)``, same ``T``.

    Returns:
        ``(C, K)`` float64 array in dB (``NaN`` rows for silent references).
    """
    ref = _as_2d(ref, "ref")
    est = _as_2d(est, "est")
    _check_pair(ref, est, min_length=2)
    ref = ref - ref.mean(axis=-1, keepdims=True)
    est = est - est.mean(axis=-1, keepdims=True)
    ref_energy = np.einsum("ct,ct->c", ref, ref)[:, None]  # (C, 1)
    est_energy = np.einsum("kt,kt->k", est, est)[None, :]  # (1, K)
    dot = ref @ est.T  # (C, K)
    # ||target||^2 = dot^2 / ||ref||^2 ; ||noise||^2 = ||est||^2 - ||target||^2 (Pythagoras)
    with np.errstate(divide="ignore", invalid="ignore"):
        target = dot**2 / ref_energy
        noise = np.maximum(est_energy - target, 0.0)
        # the difference form loses precision for near-perfect estimates: recompute those exactly
        close = noise < 1e-6 * est_energy
        if close.any():
            for c, k in zip(*np.nonzero(close)):
                if ref_energy[c, 0] > 0:
                    residual = est[k] - dot[c, k] / ref_energy[c, 0] * ref[c]
                    noise[c, k] = residual @ residual
        out = to_db(target / noise)
    out[(target == 0) & (noise == 0)] = -MAX_DB  # silent estimate: nothing of the reference
    out[np.broadcast_to(ref_energy == 0, out.shape)] = np.nan  # silent reference: undefined
    return out


def si_snr(ref, est) -> np.ndarray:
    """SI-SNR (dB) of ``est[i]`` against ``ref[i]``: ``(C,)`` for ``(C, T)`` inputs, a float for ``(T,)``."""
    ref2 = _as_2d(ref, "ref")
    est2 = _as_2d(est, "est")
    if ref2.shape[0] != est2.shape[0]:
        raise ValueError(f"si_snr pairs ref {tuple(ref2.shape)} with est {tuple(est2.shape)}: "
                         "give as many estimates as references")
    values = np.array([pairwise_si_snr(r, e)[0, 0] for r, e in zip(ref2, est2)])
    return float(values[0]) if np.ndim(ref) == 1 else values


# ---------------------------------------------------------------------------------- bss_eval

def pairwise_bss_eval(ref, est, filter_length: int = BSS_FILTER_LENGTH) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """bss_eval v3 SDR, SIR, SAR for every (reference, estimate) pair.

    In bss_eval v3 the values of one estimate against one reference depend only on that
    estimate and the set of references, so the pairwise matrices hold everything a permutation
    search needs (and an estimate's column does not change when other estimates are added).

    Args:
        ref: references ``(C, T)``.
        est: estimates ``(K, T)``.
        filter_length: distortion filter taps (512, as mir_eval).

    Returns:
        ``(sdr, sir, sar)``, each ``(C, K)`` float64 in dB; ``NaN`` rows for silent references,
        ``-MAX_DB`` columns for silent estimates.
    """
    import fast_bss_eval.torch as fbe

    ref = _as_2d(ref, "ref")
    est = _as_2d(est, "est")
    _check_pair(ref, est, min_length=filter_length)
    n_ref, n_est = ref.shape[0], est.shape[0]
    sdr = np.full((n_ref, n_est), np.nan)
    sir = np.full((n_ref, n_est), np.nan)
    sar = np.full((n_ref, n_est), np.nan)
    live_ref = np.flatnonzero(np.any(ref != 0, axis=-1))
    live_est = np.flatnonzero(np.any(est != 0, axis=-1))
    sdr[live_ref[:, None], np.setdiff1d(np.arange(n_est), live_est)[None, :]] = -MAX_DB
    sir[...] = sdr
    sar[...] = sdr
    if len(live_ref) == 0 or len(live_est) == 0:
        return sdr, sir, sar
    with torch.no_grad():
        coh_sdr, coh_sar = fbe.square_cosine_metrics(
            torch.from_numpy(ref[live_ref]), torch.from_numpy(est[live_est]),
            filter_length=filter_length, pairwise=True)
    # squared cosines lie in [0, 1]; rounding can step outside for (near-)perfect estimates
    coh_sdr = np.clip(coh_sdr.numpy(), 0.0, 1.0)  # (C', K')
    coh_sar = np.clip(coh_sar.numpy(), 0.0, 1.0)
    idx = (live_ref[:, None], live_est[None, :])
    with np.errstate(divide="ignore", invalid="ignore"):
        coh_sir = np.clip(np.where(coh_sar > 0, coh_sdr / coh_sar, 0.0), 0.0, 1.0)
        sdr[idx] = to_db(coh_sdr / (1.0 - coh_sdr))
        sir[idx] = to_db(coh_sir / (1.0 - coh_sir))
        sar[idx] = to_db(coh_sar / (1.0 - coh_sar))
    return sdr, sir, sar


def assign(score: np.ndarray) -> np.ndarray:
    """Hungarian assignment that maximises the summed ``score (C, K)``.

    Returns ``perm (C,)``: the estimate index matched to each reference, ``-1`` where a reference
    is left without one (``K < C``). ``NaN`` scores (silent references) count as ``-MAX_DB``.
    """
    score = np.nan_to_num(np.asarray(score, dtype=np.float64), nan=-MAX_DB)
    perm = np.full(score.shape[0], -1, dtype=np.int64)
    if score.size:
        rows, cols = linear_sum_assignment(score, maximize=True)
        perm[rows] = cols
    return perm


def bss_eval(ref, est, mix=None, filter_length: int = BSS_FILTER_LENGTH) -> dict[str, np.ndarray]:
    """SDR, SIR, SAR with mir_eval's permutation (maximum mean SIR), and improvements over ``mix``.

    Equals ``mir_eval.separation.bss_eval_sources(ref, est)`` (values and permutation) when
    ``K == C``; with ``K != C`` the same Hungarian rule matches ``min(C, K)`` pairs.

    Args:
        ref: ``(C, T)``; est: ``(K, T)``; mix: ``(T,)`` or ``None``.

    Returns:
        dict of ``(C,)`` arrays: ``sdr``, ``sir``, ``sar`` (``NaN`` for unmatched references),
        ``perm`` (estimate index per reference, ``-1`` if none), and with ``mix`` also
        ``sdr_mix``, ``sir_mix``, ``sar_mix``, ``sdri``, ``siri``, ``sari``.
    """
    ref = _as_2d(ref, "ref")
    est = _as_2d(est, "est")
    n_est = est.shape[0]
    if mix is not None:  # one call: the reference statistics are shared by estimates and mixture
        est = np.concatenate([est, _as_2d(mix, "mix")], axis=0)
    sdr_m, sir_m, sar_m = pairwise_bss_eval(ref, est, filter_length)
    perm = assign(sir_m[:, :n_est])
    rows = np.arange(ref.shape[0])
    ok = perm >= 0
    out = {"perm": perm}
    for name, mat in (("sdr", sdr_m), ("sir", sir_m), ("sar", sar_m)):
        val = np.full(ref.shape[0], np.nan)
        val[ok] = mat[rows[ok], perm[ok]]
        out[name] = val
        if mix is not None:
            out[f"{name}_mix"] = mat[:, n_est]
            out[f"{name}i"] = val - mat[:, n_est]
    return out


def si_snr_improvement(ref, est, mix) -> np.ndarray:
    """SI-SNR of ``est[i]`` minus that of the mixture, both against ``ref[i]``: ``(C,)`` dB."""
    ref = _as_2d(ref, "ref")
    return si_snr(ref, est) - pairwise_si_snr(ref, _as_2d(mix, "mix"))[:, 0]


def is_finite_number(x) -> bool:
    """True for a real, finite number (used when averaging rows that may hold ``NaN``)."""
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False
