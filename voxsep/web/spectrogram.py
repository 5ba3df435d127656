"""Spectrogram pictures of files of any length, in bounded memory (PNG, matplotlib's Agg canvas).

A file is read block by block at the model's rate (:class:`separation.inference.BlockReader`);
STFT frames (Hann window, 32 ms, hop a quarter window) are averaged in groups so that the picture
has at most ``max_columns`` columns: a one-hour file costs the same memory as a one-minute one.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from frontend import atomic_output
from separation.inference import BlockReader

DYNAMIC_RANGE_DB = 80.0
#: STFT frames read per block, in units of picture columns (bounds memory with ``max_columns``).
COLUMNS_PER_BLOCK = 64


def fft_size(sample_rate: int) -> int:
    """The power of two nearest above 32 ms at ``sample_rate`` (256 at 8 kHz)."""
    return 1 << max(4, round(0.032 * sample_rate - 1).bit_length())


def power_spectrogram(path: str | os.PathLike, sample_rate: int, max_columns: int = 1000) -> np.ndarray:
    """Power spectrogram of a file in dB, ``(n_fft // 2 + 1, columns)``, at most ``max_columns`` wide.

    Args:
        path: any file :func:`frontend.load_audio` reads (read mono at ``sample_rate``).
        sample_rate: Hz.
        max_columns: frames are averaged in groups of ``ceil(frames / max_columns)``.
    """
    reader = BlockReader(path, sample_rate)
    n_fft = fft_size(sample_rate)
    hop = n_fft // 4
    n_frames = max(1, -(-max(reader.length - n_fft, 0) // hop) + 1)
    group = max(1, -(-n_frames // max_columns))
    window = np.hanning(n_fft + 1)[:-1].astype(np.float32)
    columns = []
    frames_per_block = group * COLUMNS_PER_BLOCK
    for first in range(0, n_frames, frames_per_block):
        frames = min(frames_per_block, n_frames - first)
        start = first * hop
        x = reader.read(start, (frames - 1) * hop + n_fft).numpy()
        x = np.pad(x, (0, max(0, (frames - 1) * hop + n_fft - x.shape[0])))
        windows = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop][:frames]  # (frames, n_fft)
        power = np.abs(np.fft.rfft(windows * window, axis=-1)) ** 2                   # (frames, F)
        n_groups = -(-frames // group)
        for g in range(n_groups):
            columns.append(power[g * group:(g + 1) * group].mean(axis=0))
    spec = np.stack(columns, axis=1)  # (F, columns)
    return 10.0 * np.log10(np.maximum(spec, 1e-10))


def plot_spectrogram(spec_db: np.ndarray, duration: float, sample_rate: int, path: str | os.PathLike,
                     title: str = "", vmax: float | None = None) -> Path:
    """Write one spectrogram ``(F, columns)`` in dB as a PNG (time in s, frequency in kHz).

    The colour scale runs from ``vmax`` (default: the picture's maximum) down 80 dB.
    """
    vmax = float(spec_db.max()) if vmax is None else float(vmax)
    fig = Figure(figsize=(7.2, 1.7), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(spec_db, origin="lower", aspect="auto", extent=(0, duration, 0, sample_rate / 2000),
              vmin=vmax - DYNAMIC_RANGE_DB, vmax=vmax, cmap="magma", interpolation="nearest")
    if title:
        ax.set_title(title, fontsize=9)
    ax.set_xlabel("s", fontsize=8)
    ax.set_ylabel("kHz", fontsize=8)
    ax.tick_params(labelsize=7)
    final = Path(path)
    with atomic_output(final) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return final
