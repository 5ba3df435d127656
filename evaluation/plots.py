"""Plots for evaluation reports (PNG, matplotlib's Agg canvas; no pyplot global state).

Every function writes one PNG atomically (:func:`frontend.atomic_output`) and returns its path:

* :func:`plot_spectrograms` - mixture, references and estimates side by side.
* :func:`plot_confusion` - a count confusion matrix.
* :func:`plot_distribution` - SI-SNRi (or any value) per talker count, one box per system.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from frontend import STFT, atomic_output

DYNAMIC_RANGE_DB = 80.0


def save_figure(fig: Figure, path: str | os.PathLike) -> Path:
    """Write ``fig`` as a PNG at ``path`` atomically (Agg canvas); returns the path."""
    FigureCanvasAgg(fig)
    final = Path(path)
    with atomic_output(final) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return final


def _log_spec(wav, sample_rate: int) -> np.ndarray:
    x = torch.as_tensor(np.asarray(wav, dtype=np.float32))
    n_fft = 1 << max(4, round(0.032 * sample_rate - 1).bit_length())
    spec = STFT(n_fft=n_fft, hop_length=n_fft // 4)(x).abs() ** 2
    return (10.0 * torch.log10(spec.clamp_min(1e-10))).numpy()


def plot_spectrograms(mix, refs, ests, sample_rate: int, path: str | os.PathLike,
                      titles: Mapping[str, Sequence[str]] | None = None) -> Path:
    """Spectrograms of a mixture, its references and the estimates, side by side.

    Column 1 shows the mixture, column 2 the references, column 3 the estimates (row ``i`` of the
    estimates should be the one matched to reference ``i``; unmatched rows are left blank). One
    colour scale: the mixture's maximum down to ``-80 dB``.

    Args:
        mix: ``(T,)``; refs: ``(C, T)``; ests: ``(K, T)`` (array or tensor).
        sample_rate: Hz (sets the axes).
        path: output PNG.
        titles: optional ``{"mix": [str], "refs": [...], "ests": [...]}`` panel titles.
    """
    refs = np.atleast_2d(np.asarray(refs))
    ests = np.atleast_2d(np.asarray(ests)) if np.size(ests) else np.zeros((0, np.shape(mix)[-1]))
    titles = dict(titles or {})
    rows = max(refs.shape[0], ests.shape[0], 1)
    fig = Figure(figsize=(11, 2.0 * rows + 0.4), layout="constrained")
    spec_mix = _log_spec(mix, sample_rate)
    vmax = float(spec_mix.max())
    extent = (0, np.shape(mix)[-1] / sample_rate, 0, sample_rate / 2000)
    columns = (("mix", [np.asarray(mix)]), ("refs", list(refs)), ("ests", list(ests)))
    default = {"mix": ["mixture"], "refs": [f"reference {i + 1}" for i in range(refs.shape[0])],
               "ests": [f"estimate {i + 1}" for i in range(ests.shape[0])]}
    image = None
    for col, (key, signals) in enumerate(columns):
        names = list(titles.get(key, default[key]))
        for row in range(rows):
            ax = fig.add_subplot(rows, 3, row * 3 + col + 1)
            if row >= len(signals):
                ax.axis("off")
                continue
            image = ax.imshow(_log_spec(signals[row], sample_rate), origin="lower", aspect="auto",
                              extent=extent, vmin=vmax - DYNAMIC_RANGE_DB, vmax=vmax, cmap="magma")
            ax.set_title(names[row] if row < len(names) else "", fontsize=9)
            ax.tick_params(labelsize=7)
            if col == 0:
                ax.set_ylabel("kHz", fontsize=8)
            if row == rows - 1 or row == len(signals) - 1:
                ax.set_xlabel("s", fontsize=8)
    if image is not None:
        fig.colorbar(image, ax=fig.axes, shrink=0.8, aspect=30, label="dB")
    return save_figure(fig, path)


def plot_confusion(matrix, labels: Sequence, path: str | os.PathLike, title: str | None = None) -> Path:
    """A count confusion matrix (rows: true count, columns: estimated count), counts and row %.

    Args:
        matrix: ``(L, L)`` integer counts; labels: the ``L`` count values.
    """
    matrix = np.asarray(matrix)
    fig = Figure(figsize=(1.0 + 0.75 * len(labels), 0.8 + 0.7 * len(labels)))
    ax = fig.add_subplot(1, 1, 1)
    totals = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, totals, out=np.zeros(matrix.shape, dtype=float), where=totals > 0)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            if matrix[i, j]:
                ax.text(j, i, f"{matrix[i, j]}\n{100 * share[i, j]:.0f}%", ha="center", va="center",
                        fontsize=8, color="white" if share[i, j] > 0.6 else "black")
    ax.set_xticks(range(len(labels)), [str(x) for x in labels])
    ax.set_yticks(range(len(labels)), [str(x) for x in labels])
    ax.set_xlabel("estimated count")
    ax.set_ylabel("true count")
    ax.set_title(title or "count confusion", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_distribution(values: Mapping[str, Mapping[int, Sequence[float]]], path: str | os.PathLike,
                      ylabel: str = "SI-SNRi (dB)", title: str | None = None) -> Path:
    """Box plots of a per-mixture value for each talker count, one box per system.

    Args:
        values: ``{system: {count: [value per mixture]}}``; non-finite values are dropped.
    """
    systems = list(values)
    counts = sorted({c for per in values.values() for c in per})
    fig = Figure(figsize=(max(5.0, 1.2 + 0.45 * len(counts) * max(len(systems), 1)), 4.0))
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / max(len(systems), 1)
    colors = [f"C{i}" for i in range(len(systems))]
    for s, name in enumerate(systems):
        data, pos = [], []
        for i, c in enumerate(counts):
            v = np.asarray(values[name].get(c, []), dtype=float)
            v = v[np.isfinite(v)]
            if v.size:
                data.append(v)
                pos.append(i + (s - (len(systems) - 1) / 2) * width)
        if data:
            box = ax.boxplot(data, positions=pos, widths=width * 0.9, patch_artist=True,
                             showfliers=True, flierprops={"markersize": 2})
            for patch in box["boxes"]:
                patch.set_facecolor(colors[s])
                patch.set_alpha(0.6)
        ax.plot([], [], color=colors[s], lw=6, alpha=0.6, label=name)
    ax.set_xticks(range(len(counts)), [str(c) for c in counts])
    ax.set_xlabel("talkers in the mixture")
    ax.set_ylabel(ylabel)
    ax.axhline(0, color="grey", lw=0.6)
    ax.grid(axis="y", alpha=0.3)
    if systems:
        ax.legend(fontsize=8, loc="best")
    ax.set_title(title or f"{ylabel} per talker count", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)
