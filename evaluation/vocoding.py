"""Vocoders on held-back speech: audio -> log-mel -> vocoder -> audio, against Griffin-Lim.

:func:`evaluate_vocoder` takes the utterances, the log-mel settings of the vocoder
(:class:`MelSettings`, those of :class:`frontend.LogMelSpectrogram`) and callables from the CLI
(evaluation imports no model code): ``vocode(wav (T,)) -> (T,)`` generates audio from the wav's
log-mel, and the optional ``bits_per_sample(wav) -> float`` is the model's teacher-forced
likelihood. For every utterance it reports, for the vocoder and for Griffin-Lim from the same
log-mel (:func:`evaluation.baselines.griffin_lim`, the baseline row):

=======================  ===================================================================
``log_mel_rmse_db``      RMS difference of the log-mel spectrograms in dB (bins x frames)
``mcd_db``               mel-cepstral distortion: 13 DCT coefficients of the log-mel, c0 left out
``pesq_*``, ``stoi``     against the original ([eval] extra)
``rtf``                  the vocoder's generation time / audio duration (one process)
=======================  ===================================================================

Outputs: ``results.json`` (``summary``: the means, flat ``system/metric`` keys), ``results.md``,
and for the first ``n_examples`` utterances FLAC files (original, vocoded, Griffin-Lim) and a
spectrogram PNG.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from scipy.fft import dct
from tqdm import tqdm

from evaluation.baselines import griffin_lim
from evaluation.perceptual import available_perceptual, pesq_scores, stoi_scores
from evaluation.plots import plot_spectrograms
from evaluation.report import safe_name
from frontend import LogMelSpectrogram, VoxsepError, atomic_output, load_audio, save_audio

SYSTEMS = ("vocoder", "griffin_lim")


@dataclass(frozen=True)
class MelSettings:
    """The vocoder's log-mel front end (as :class:`frontend.LogMelSpectrogram`)."""

    sample_rate: int
    n_fft: int
    hop_length: int
    n_mels: int
    f_min: float = 0.0
    f_max: float | None = None

    def module(self) -> LogMelSpectrogram:
        return LogMelSpectrogram(self.sample_rate, self.n_fft, self.hop_length, self.n_mels, self.f_min, self.f_max)


def mel_distances(log_mel: LogMelSpectrogram, ref: torch.Tensor, est: torch.Tensor) -> dict[str, float]:
    """Log-mel RMSE (dB) and mel-cepstral distortion (dB) of ``est (T,)`` against ``ref (T,)``."""
    n = min(ref.shape[-1], est.shape[-1])
    a = log_mel(ref[:n].float()).numpy().astype(np.float64)  # natural log
    b = log_mel(est[:n].float()).numpy().astype(np.float64)
    rmse_db = float(np.sqrt(np.mean((a - b) ** 2))) * 20 / math.log(10)
    c_a = dct(a, type=2, axis=0, norm="ortho")[1:14]
    c_b = dct(b, type=2, axis=0, norm="ortho")[1:14]
    mcd = float(np.mean(10 / math.log(10) * np.sqrt(2 * np.sum((c_a - c_b) ** 2, axis=0))))
    return {"log_mel_rmse_db": rmse_db, "mcd_db": mcd}


def evaluate_vocoder(paths: Sequence, settings: MelSettings, vocode: Callable[[torch.Tensor], torch.Tensor],
                     out_dir, *, bits_per_sample: Callable[[torch.Tensor], float] | None = None,
                     max_seconds: float | None = 3.0, n_examples: int = 3, description: str = "",
                     progress: bool = True) -> dict:
    """Score ``vocode`` and Griffin-Lim on the utterance files ``paths``; write the outputs.

    Args:
        paths: audio files (read mono at ``settings.sample_rate``, cut to ``max_seconds``).
        settings: the log-mel of the vocoder.
        vocode: ``wav (T,) -> (T,)`` through the vocoder's log-mel.
        out_dir: output folder.
        bits_per_sample: the model's teacher-forced likelihood (optional column).
        n_examples: utterances whose audio and spectrograms are written.

    Returns:
        the ``results.json`` content.
    """
    if not paths:
        raise VoxsepError("no utterances to evaluate")
    sr = settings.sample_rate
    log_mel = settings.module()
    have = available_perceptual()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, path in enumerate(tqdm(list(paths), desc="vocode", unit="utt", disable=not progress)):
        wav = load_audio(path, sample_rate=sr)[0]
        if max_seconds:
            wav = wav[: int(max_seconds * sr)]
        wav = wav.clamp(-1.0, 1.0)
        row: dict = {"name": Path(path).stem}
        if bits_per_sample is not None:
            row["bits_per_sample"] = float(bits_per_sample(wav))
        start = time.perf_counter()
        est = vocode(wav).reshape(-1)[: wav.shape[-1]].float()
        row["rtf"] = (time.perf_counter() - start) / (wav.shape[-1] / sr)
        est = torch.nn.functional.pad(est, (0, wav.shape[-1] - est.shape[-1]))
        with torch.no_grad():
            gl = griffin_lim(log_mel(wav), wav.shape[-1], sr, settings.n_fft, settings.hop_length,
                             settings.f_min, settings.f_max)
        for system, signal in (("vocoder", est), ("griffin_lim", gl)):
            scores = mel_distances(log_mel, wav, signal)
            if have["pesq"]:
                scores.update(pesq_scores(wav, signal, sr))
            if have["stoi"]:
                scores.update(stoi_scores(wav, signal, sr, extended=False))
            row.update({f"{system}/{k}": v for k, v in scores.items()})
        rows.append(row)
        if i < n_examples:
            stem = safe_name(row["name"])
            for name, signal in (("original", wav), ("vocoded", est), ("griffin_lim", gl)):
                save_audio(out_dir / f"{stem}_{name}.flac", signal.clamp(-1, 1).float(), sr)
            plot_spectrograms(wav.numpy(), gl.numpy()[None], est.numpy()[None], sr, out_dir / f"{stem}.png",
                              titles={"mix": ["original"], "refs": ["Griffin-Lim (baseline)"],
                                      "ests": ["vocoder"]})
    keys = [k for k in rows[0] if k != "name"]
    summary = {k: float(np.nanmean([r[k] for r in rows])) if any(np.isfinite(r[k]) for r in rows) else float("nan")
               for k in keys}
    result = {"task": "vocoder", "data": description, "sample_rate": sr, "n": len(rows), "summary": summary,
              "rows": rows}
    with atomic_output(out_dir / "results.json") as tmp:
        Path(tmp).write_text(json.dumps(result, indent=2))
    with atomic_output(out_dir / "results.md") as tmp:
        Path(tmp).write_text(vocoder_table(summary, sr, len(rows), description))
    return result


def vocoder_table(summary: dict, sample_rate: int, n: int, description: str = "") -> str:
    """The Markdown table of :func:`evaluate_vocoder` (a row per system)."""
    pesq_key = "pesq_nb" if sample_rate == 8000 else "pesq_wb"
    columns = [("log_mel_rmse_db", "log-mel RMSE (dB)"), ("mcd_db", "MCD (dB)"),
               (pesq_key, pesq_key.upper().replace("_", "-")), ("stoi", "STOI")]
    columns = [(k, h) for k, h in columns if f"vocoder/{k}" in summary]
    lines = ([f"Data: {description}, {sample_rate} Hz.", ""] if description else [])
    lines += ["| system | " + " | ".join(h for _, h in columns) + " |", "|---|" + "---:|" * len(columns)]
    for system, label in (("vocoder", "WaveNet vocoder"), ("griffin_lim", "Griffin-Lim (64 iterations)")):
        cells = []
        for key, _ in columns:
            value = summary[f"{system}/{key}"]
            cells.append("-" if not math.isfinite(value) else f"{value:.3f}" if key == "stoi" else f"{value:.2f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    tail = f"generation RTF {summary['rtf']:.3f} ({n} utterances)"
    if "bits_per_sample" in summary:
        tail = f"teacher-forced {summary['bits_per_sample']:.3f} bits/sample; " + tail
    return "\n".join(lines) + "\n\n" + tail + "\n"
