"""Evaluation: metrics (SI-SNR, bss_eval SDR/SIR/SAR, PESQ/STOI, counting), runner, reports, plots.

Works on arrays/tensors and callables only; it never imports model code (``voxsep evaluate``
loads models and hands this package ``separate(mix) -> (K, T)`` callables, denoisers
``enhance(noisy, rate) -> clean`` and vocoders ``vocode(wav) -> wav``). Three tasks:
separation (:mod:`evaluation.runner`), enhancement on noisy/clean pairs
(:mod:`evaluation.enhancement`, with the baselines of :mod:`evaluation.baselines`) and vocoders
against Griffin-Lim (:mod:`evaluation.vocoding`).
"""
from evaluation.counting import CountAwareScore, confusion_matrix, count_accuracy, count_aware_si_snri
from evaluation.enhancement import EnhancementSystem, baseline_systems, evaluate_enhancement, read_pairs
from evaluation.metrics import (
    MAX_DB, MetricError, assign, bss_eval, match_length, pairwise_bss_eval, pairwise_si_snr, si_snr,
    si_snr_improvement,
)
from evaluation.oracle import oracle_mask_separate
from evaluation.perceptual import available_perceptual, pesq_scores, stoi_scores
from evaluation.runner import EvaluationResult, MetricOptions, evaluate, evaluate_systems, score_outputs
from evaluation.report import count_table
from evaluation.systems import CallableSystem, EstimatesDirSystem, OracleMaskSystem, SystemOutput
from evaluation.vocoding import MelSettings, evaluate_vocoder

__all__ = [
    "MAX_DB", "CallableSystem", "CountAwareScore", "EnhancementSystem", "EstimatesDirSystem", "EvaluationResult",
    "MelSettings", "MetricError", "MetricOptions", "OracleMaskSystem", "SystemOutput", "assign",
    "available_perceptual", "baseline_systems", "bss_eval", "confusion_matrix", "count_accuracy",
    "count_aware_si_snri", "count_table", "evaluate", "evaluate_enhancement", "evaluate_systems",
    "evaluate_vocoder", "match_length", "oracle_mask_separate", "pairwise_bss_eval",
    "pairwise_si_snr", "pesq_scores", "read_pairs", "score_outputs", "si_snr", "si_snr_improvement", "stoi_scores",
]
