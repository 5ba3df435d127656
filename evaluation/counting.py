"""Counting-aware scoring: SI-SNRi when the separator chose how many talkers to output.

Rule (used for the "estimated count" columns; documented in the README and the report):

1. Compute the SI-SNR of every estimate against every reference, ``(C, K)``.
2. Match estimates to references by the Hungarian algorithm
   (``scipy.optimize.linear_sum_assignment``), maximising the summed SI-SNR; ``min(C, K)`` pairs.
3. A matched reference scores ``SI-SNRi = SI-SNR(est, ref) - SI-SNR(mix, ref)``.
4. A reference left without an estimate (``K < C``, "missed talker") scores as if the mixture
   were its estimate: ``SI-SNRi = 0 dB``.
5. Estimates left without a reference (``K > C``) are "false talkers": counted, not averaged.

The mixture's score is the mean over its ``C`` references (silent references, whose SI-SNR is
undefined, are left out of the mean). With ``K == C`` the rule is ordinary utterance-level PIT on
SI-SNR, so the true-count ("oracle head") columns use the same function.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from evaluation.metrics import assign, pairwise_si_snr


@dataclass
class CountAwareScore:
    """Result of :func:`count_aware_si_snri` for one mixture."""

    si_snr: np.ndarray  # (C,) SI-SNR of the estimate matched to each reference (mixture if none)
    si_snri: np.ndarray  # (C,) improvement over the mixture; 0 for missed talkers
    perm: np.ndarray  # (C,) estimate index per reference, -1 for missed talkers
    n_est: int  # K
    missed: int  # references without an estimate, max(C - K, 0)
    false_talkers: int  # estimates without a reference, max(K - C, 0)

    @property
    def mean_si_snri(self) -> float:
        """Mean SI-SNRi over the references (``NaN`` if none is defined)."""
        finite = self.si_snri[np.isfinite(self.si_snri)]
        return float(finite.mean()) if finite.size else float("nan")

    @property
    def mean_si_snr(self) -> float:
        finite = self.si_snr[np.isfinite(self.si_snr)]
        return float(finite.mean()) if finite.size else float("nan")


def count_aware_si_snri(ref, est, mix) -> CountAwareScore:
    """Score ``K`` estimates against ``C`` references by the rule in this module's docstring.

    Args:
        ref: references ``(C, T)``.
        est: estimates ``(K, T)``; ``K`` may be 0.
        mix: the mixture ``(T,)``.
    """
    ref = np.asarray(ref, dtype=np.float64)
    est = np.asarray(est, dtype=np.float64).reshape(-1, ref.shape[-1])
    n_ref, n_est = ref.shape[0], est.shape[0]
    mix_snr = pairwise_si_snr(ref, np.asarray(mix, dtype=np.float64)[None])[:, 0]  # (C,)
    if n_est:
        pair = pairwise_si_snr(ref, est)  # (C, K)
        perm = assign(pair)
    else:
        pair = np.zeros((n_ref, 0))
        perm = np.full(n_ref, -1, dtype=np.int64)
    matched = perm >= 0
    snr = mix_snr.copy()
    snr[matched] = pair[np.flatnonzero(matched), perm[matched]]
    return CountAwareScore(si_snr=snr, si_snri=snr - mix_snr, perm=perm, n_est=n_est,
                           missed=max(n_ref - n_est, 0), false_talkers=max(n_est - n_ref, 0))


def confusion_matrix(true_counts, est_counts, labels=None) -> tuple[np.ndarray, list[int]]:
    """Count confusion matrix: rows are true counts, columns estimated counts.

    Args:
        true_counts, est_counts: sequences of ints of equal length.
        labels: the counts to show (default: every count seen in either sequence, sorted).

    Returns:
        ``(matrix (L, L) int64, labels)``; pairs with a count outside ``labels`` are ignored.
    """
    true_counts = [int(c) for c in true_counts]
    est_counts = [int(c) for c in est_counts]
    if len(true_counts) != len(est_counts):
        raise ValueError(f"{len(true_counts)} true counts but {len(est_counts)} estimated counts")
    if labels is None:
        labels = sorted(set(true_counts) | set(est_counts))
    index = {c: i for i, c in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for t, e in zip(true_counts, est_counts):
        if t in index and e in index:
            matrix[index[t], index[e]] += 1
    return matrix, list(labels)


def count_accuracy(true_counts, est_counts) -> float:
    """Fraction of mixtures whose count was estimated exactly (``NaN`` for none)."""
    true_counts = np.asarray(list(true_counts), dtype=np.int64)
    est_counts = np.asarray(list(est_counts), dtype=np.int64)
    if true_counts.size == 0:
        return float("nan")
    return float((true_counts == est_counts).mean())
