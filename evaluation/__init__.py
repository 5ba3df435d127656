"""Evaluation: metrics (SI-SNR, bss_eval SDR/SIR/SAR, PESQ/STOI, counting), runner, reports, plots.

Works on arrays/tensors and callables only; it never imports model code (``voxsep evaluate``
loads models and hands this package ``separate(mix) -> (K, T)`` callables).
"""
from evaluation.counting import CountAwareScore, confusion_matrix, count_accuracy, count_aware_si_snri
from evaluation.metrics import (
    MAX_DB, MetricError, assign, bss_eval, match_length, pairwise_bss_eval, pairwise_si_snr, si_snr,
    si_snr_improvement,
)
from evaluation.oracle import oracle_mask_separate
from evaluation.perceptual import available_perceptual, pesq_scores, stoi_scores
from evaluation.runner import EvaluationResult, MetricOptions, evaluate, evaluate_systems, score_outputs
from evaluation.systems import CallableSystem, EstimatesDirSystem, OracleMaskSystem, SystemOutput

__all__ = [
    "MAX_DB", "CallableSystem", "CountAwareScore", "EstimatesDirSystem", "EvaluationResult",
    "MetricError", "MetricOptions", "OracleMaskSystem", "SystemOutput", "assign",
    "available_perceptual", "bss_eval", "confusion_matrix", "count_accuracy", "count_aware_si_snri",
    "evaluate", "evaluate_systems", "match_length", "oracle_mask_separate", "pairwise_bss_eval",
    "pairwise_si_snr", "pesq_scores", "score_outputs", "si_snr", "si_snr_improvement", "stoi_scores",
]
