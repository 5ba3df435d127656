"""Post-processing of synthesized speech: silence trimming and peak normalisation.

Hand-written because neither is in our dependencies (librosa.effects.trim does the trimming).
"""
from __future__ import annotations

import numpy as np

FRAME_S = 0.01


def trim_silence(wav: np.ndarray, sample_rate: int, threshold_db: float = -45.0,
                 pad_s: float = 0.03) -> np.ndarray:
    """Cut leading and trailing frames quieter than ``threshold_db`` below the loudest frame.

    Args:
        wav: ``(T,)`` samples.
        sample_rate: Hz.
        threshold_db: frame RMS, relative to the loudest 10 ms frame, below which a frame is silence.
        pad_s: seconds of the original signal kept on each side of the speech (soft onsets).

    Returns:
        The trimmed ``(T',)`` view; empty if every frame is silent.
    """
    frame = max(1, int(round(FRAME_S * sample_rate)))
    n = len(wav) // frame
    if n == 0:
        return wav[:0]
    rms = np.sqrt(np.mean(wav[: n * frame].reshape(n, frame).astype(np.float64) ** 2, axis=1))
    top = rms.max()
    if top <= 0:
        return wav[:0]
    active = np.flatnonzero(rms >= top * 10 ** (threshold_db / 20))
    pad = int(round(pad_s * sample_rate))
    start = max(0, active[0] * frame - pad)
    stop = min(len(wav), (active[-1] + 1) * frame + pad)
    return wav[start:stop]


def peak_normalise(wav: np.ndarray, peak: float = 0.9) -> np.ndarray:
    """Scale so that the largest absolute sample is ``peak`` (silence is returned unchanged)."""
    top = float(np.max(np.abs(wav))) if len(wav) else 0.0
    return wav if top == 0 else (wav * (peak / top)).astype(np.float32)
