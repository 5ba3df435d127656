"""Speech enhancement on noisy/clean pairs: one table of PESQ, STOI and SI-SNR per system.

Pairs (:func:`read_pairs`) come from

* a pairs table (CSV with the columns ``noisy`` and ``clean``, paths relative to the table;
  optional ``id`` and any other columns, e.g. ``snr_db`` and ``noise``), as written by
  ``voxsep mix --enhancement`` (``OUT/pairs_<split>.csv``);
* a folder holding such tables (``pairs_<split>.csv``, else ``pairs.csv``);
* a folder with ``noisy/`` and ``clean/`` sub-folders whose files match by relative path and name
  (the VoiceBank-DEMAND layout ``{noisy,clean}/p287/p287_001.flac``; extensions may differ).

:func:`evaluate_enhancement` runs every system on every noisy file (systems are callables
``(noisy (T,) float64, sample_rate) -> estimate (T,)``: the CLI wraps the denoiser checkpoints;
:data:`BASELINES` are the signal-processing rows) and scores the estimate against the clean file:

============  ==========================================================================
``pesq_wb``   PESQ wide band (P.862.2) at 16 kHz and other rates (``pesq_nb`` at 8 kHz)
``stoi``      STOI (Taal et al. 2011)
``si_snr``    SI-SNR (dB) and ``si_snri``, its improvement over the noisy input
``rtf``       processing time / audio duration (the system's call, one process)
============  ==========================================================================

Rows of the table: the noisy input itself, the baselines, then each denoiser. Groups: all pairs,
the input SNR bands (< 0, 0-10, >= 10 dB: the SNR of the noisy file against its clean reference,
measured) and, for pairs of ``voxsep mix --enhancement`` (a ``noise`` column), recorded vs
generated noise (and with vs without a simulated room). Outputs under ``out_dir``:
``results.json`` (summary per group, every pair's scores), ``results.md`` (the tables), a plot
``plots/enhancement.png``, and for the first ``n_examples`` pairs FLAC files (clean, noisy, each
denoiser; the baselines' under ``baselines/``) with a spectrogram PNG. Undefined values (PESQ on
silence, ...) are NaN and left out of the means.
"""
from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from tqdm import tqdm

from evaluation.baselines import spectral_gating, stft_wiener, wiener_filter
from evaluation.metrics import si_snr
from evaluation.perceptual import available_perceptual, pesq_scores, stoi_scores
from evaluation.plots import plot_spectrograms, save_figure
from evaluation.report import safe_name
from frontend import VoxsepError, atomic_output, audio_info, find_audio_files, load_audio, save_audio
from frontend.utterances import normalize_split

Enhance = Callable[[np.ndarray, int], np.ndarray]

#: name -> (label in the table, callable); ``spectral_gating`` needs noisereduce ([eval] extra)
BASELINES: dict[str, tuple[str, Enhance]] = {
    "wiener": ("Wiener filter (time domain, scipy)", wiener_filter),
    "stft_wiener": ("Wiener filter (STFT, decision-directed)", stft_wiener),
    "spectral_gating": ("spectral gating (noisereduce)", spectral_gating),
}
NOISY = "noisy"
SNR_BANDS = (("snr<0", -math.inf, 0.0), ("0<=snr<10", 0.0, 10.0), ("snr>=10", 10.0, math.inf))
NOISY_COLUMNS = ("noisy", "noisy_path")
CLEAN_COLUMNS = ("clean", "clean_path")


@dataclass(frozen=True)
class PairRecord:
    """One noisy file and its clean reference; ``info`` holds the table's other columns."""

    id: str
    noisy: Path
    clean: Path
    info: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class EnhancementSystem:
    """A row of the table: ``enhance(noisy (T,), sample_rate) -> (T,)``; ``baseline`` rows write
    their examples under ``baselines/``."""

    name: str
    enhance: Enhance
    label: str = ""
    baseline: bool = False


def baseline_systems(names: Sequence[str] = tuple(BASELINES)) -> list[EnhancementSystem]:
    """The baseline rows ``names`` (spectral gating left out when noisereduce is not installed)."""
    import importlib.util

    out = []
    for name in names:
        if name not in BASELINES:
            raise VoxsepError(f"unknown baseline {name!r} (known: {', '.join(BASELINES)})")
        if name == "spectral_gating" and importlib.util.find_spec("noisereduce") is None:
            continue
        label, fn = BASELINES[name]
        out.append(EnhancementSystem(name, fn, label, baseline=True))
    return out


# ------------------------------------------------------------------------------------------ pairs
def _read_table(path: Path) -> list[PairRecord]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise VoxsepError(f"{path}: cannot read pairs table ({err.__class__.__name__})") from None
    if not rows:
        raise VoxsepError(f"{path}: lists no pairs")
    noisy_col = next((c for c in NOISY_COLUMNS if c in rows[0]), None)
    clean_col = next((c for c in CLEAN_COLUMNS if c in rows[0]), None)
    if noisy_col is None or clean_col is None:
        raise VoxsepError(f"{path}: a pairs table needs the columns 'noisy' and 'clean' (header: {', '.join(rows[0])})")
    out = []
    for n, row in enumerate(rows, 2):
        noisy, clean = (row.get(noisy_col) or "").strip(), (row.get(clean_col) or "").strip()
        if not noisy or not clean:
            raise VoxsepError(f"{path}:{n}: empty noisy or clean path")
        noisy_p = Path(noisy) if Path(noisy).is_absolute() else path.parent / noisy
        clean_p = Path(clean) if Path(clean).is_absolute() else path.parent / clean
        info = {k: v for k, v in row.items() if k not in (noisy_col, clean_col, "id") and k is not None}
        out.append(PairRecord(row.get("id") or Path(noisy).with_suffix("").as_posix(), noisy_p, clean_p, info))
    return out


def _match_folders(root: Path) -> list[PairRecord]:
    noisy_root, clean_root = root / "noisy", root / "clean"
    clean = {f.relative_to(clean_root).with_suffix("").as_posix(): f for f in find_audio_files(clean_root)}
    out, unmatched = [], []
    for f in find_audio_files(noisy_root):
        key = f.relative_to(noisy_root).with_suffix("").as_posix()
        if key in clean:
            out.append(PairRecord(key, f, clean[key]))
        else:
            unmatched.append(key)
    if unmatched:
        raise VoxsepError(f"{noisy_root / unmatched[0]}: no clean file of the same name under {clean_root}")
    if not out:
        raise VoxsepError(f"{root}: no noisy/clean pairs found")
    return out


def read_pairs(source, split: str | None = None) -> list[PairRecord]:
    """Noisy/clean pairs of a table or folder (see the module docstring), sorted by id.

    Args:
        source: a pairs CSV, a folder with ``pairs_<split>.csv`` / ``pairs.csv``, or a folder with
            ``noisy/`` and ``clean/``.
        split: which ``pairs_<split>.csv`` of a folder (``cv``/``valid``, ...; without it a folder's
            only ``pairs_<split>.csv``); ignored for tables and ``noisy/``+``clean/`` folders.

    Raises:
        VoxsepError: a missing source, an unreadable table, a noisy file without its clean one.
    """
    root = Path(source)
    if not root.exists():
        raise VoxsepError(f"{root}: no such file or folder")
    if root.is_file():
        pairs = _read_table(root)
    else:
        table = root / f"pairs_{normalize_split(split)}.csv" if split else None
        if table is not None and table.is_file():
            pairs = _read_table(table)
        elif (root / "pairs.csv").is_file():
            pairs = _read_table(root / "pairs.csv")
        elif (root / "noisy").is_dir() and (root / "clean").is_dir():
            pairs = _match_folders(root)
        elif split is None and len(tables := sorted(root.glob("pairs_*.csv"))) == 1:
            pairs = _read_table(tables[0])
        else:
            tables = sorted(p.name for p in root.glob("pairs_*.csv"))
            hint = f" (it has {', '.join(tables)}: give --split)" if tables else ""
            raise VoxsepError(f"{root}: not a set of noisy/clean pairs: expected pairs_<split>.csv, pairs.csv or "
                              f"noisy/ and clean/ folders{hint}")
    return sorted(pairs, key=lambda p: p.id)


def pairs_rate(pairs: Sequence[PairRecord]) -> int:
    """The sample rate of the first clean file (the default evaluation rate)."""
    return audio_info(pairs[0].clean).sample_rate


# -------------------------------------------------------------------------------------- scoring
def input_snr_db(noisy: np.ndarray, clean: np.ndarray) -> float:
    """SNR (dB) of a noisy signal against its clean reference: ``|clean|^2 / |noisy - clean|^2``."""
    noise = float(np.sum((noisy - clean) ** 2))
    power = float(np.sum(clean ** 2))
    if power == 0:
        return float("nan")
    return float("inf") if noise == 0 else 10 * math.log10(power / noise)


def score_estimate(clean: np.ndarray, est: np.ndarray, sample_rate: int, pesq: bool = True,
                   stoi: bool = True) -> dict[str, float]:
    """SI-SNR, PESQ (wide band except at 8 kHz) and STOI of one estimate ``(T,)`` against ``clean (T,)``."""
    out = {"si_snr": float(si_snr(clean, est)) if np.any(clean) else float("nan")}
    if pesq:
        out.update(pesq_scores(clean, est, sample_rate))
    if stoi:
        out.update(stoi_scores(clean, est, sample_rate, extended=False))
    return out


def _fit(est, n: int) -> np.ndarray:
    arr = est.detach().cpu().numpy() if isinstance(est, torch.Tensor) else np.asarray(est)
    arr = np.nan_to_num(arr.astype(np.float64).reshape(-1))
    return np.pad(arr, (0, max(0, n - arr.size)))[:n]


def _mean(values) -> float:
    arr = np.asarray([v for v in values if v is not None], dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if arr.size else float("nan")


def _groups(rows: Sequence[Mapping]) -> dict[str, list[Mapping]]:
    groups: dict[str, list[Mapping]] = {"all": list(rows)}
    for name, lo, hi in SNR_BANDS:
        members = [r for r in rows if lo <= r["input_snr_db"] < hi]
        if members:
            groups[name] = members
    if any(r.get("noise") for r in rows):  # pairs of voxsep mix --enhancement: recordings vs generated noise
        for name, test in (("noise=recording", lambda r: r.get("noise", "").startswith("file:")),
                           ("noise=generated", lambda r: not r.get("noise", "").startswith("file:"))):
            members = [r for r in rows if test(r)]
            if members:
                groups[name] = members
    if any(r.get("room") for r in rows):
        groups["room=simulated"] = [r for r in rows if r.get("room")]
        groups["room=none"] = [r for r in rows if not r.get("room")]
    return groups


@dataclass
class EnhancementResult:
    out_dir: Path
    summary: dict
    rows: list[dict]
    table: str


def evaluate_enhancement(pairs: Sequence[PairRecord], systems: Sequence[EnhancementSystem], out_dir,
                         sample_rate: int | None = None, *, pesq: bool = True, stoi: bool = True,
                         n_examples: int = 3, plots: bool = True, data_description: str = "",
                         progress: bool = True) -> EnhancementResult:
    """Score the noisy input and every system on ``pairs``; write the outputs (module docstring).

    Args:
        pairs: the noisy/clean pairs (:func:`read_pairs`).
        systems: baselines and denoisers (names must be unique and not ``"noisy"``).
        out_dir: output folder (created).
        sample_rate: evaluation rate (files are resampled to it); default: the first clean file's.
        pesq, stoi: compute them (if their packages are installed; else the columns are left out).
        n_examples: pairs whose audio and spectrograms are written.
        plots: write ``plots/enhancement.png`` and the example spectrograms.
        data_description: one line for the report.
    """
    if not pairs:
        raise VoxsepError("no noisy/clean pairs to evaluate")
    names = [NOISY] + [s.name for s in systems]
    if len(set(names)) != len(names):
        raise VoxsepError(f"two systems share a name: {names}")
    have = available_perceptual()
    pesq, stoi = pesq and have["pesq"], stoi and have["stoi"]
    sample_rate = int(sample_rate or pairs_rate(pairs))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    for index, pair in enumerate(tqdm(pairs, desc="evaluate", unit="pair", disable=not progress)):
        noisy = load_audio(pair.noisy, sample_rate=sample_rate)[0].numpy().astype(np.float64)
        clean = load_audio(pair.clean, sample_rate=sample_rate)[0].numpy().astype(np.float64)
        n = min(noisy.size, clean.size)
        if n == 0:
            raise VoxsepError(f"{pair.noisy}: empty audio")
        noisy, clean = noisy[:n], clean[:n]
        row: dict = {"id": pair.id, "duration_s": n / sample_rate, "input_snr_db": input_snr_db(noisy, clean)}
        row.update({k: v for k, v in pair.info.items() if k in ("noise", "room", "speaker", "snr_db")})
        outputs = {NOISY: noisy}
        for system in systems:
            start = time.perf_counter()
            est = _fit(system.enhance(noisy.copy(), sample_rate), n)
            row[f"{system.name}/rtf"] = (time.perf_counter() - start) / (n / sample_rate)
            outputs[system.name] = est
        for name, est in outputs.items():
            for key, value in score_estimate(clean, est, sample_rate, pesq, stoi).items():
                row[f"{name}/{key}"] = value
            row[f"{name}/si_snri"] = row[f"{name}/si_snr"] - row[f"{NOISY}/si_snr"]
        rows.append(row)
        if index < n_examples:
            _write_example(out_dir, pair, clean, outputs, systems, sample_rate, row, plots)
    metrics = ["pesq_nb" if sample_rate == 8000 else "pesq_wb"] * pesq + ["stoi"] * stoi + ["si_snr", "si_snri"]
    groups = _groups(rows)
    summary = {group: {f"{name}/{m}": _mean(r.get(f"{name}/{m}") for r in members)
                       for name in names for m in metrics + (["rtf"] if name != NOISY else [])}
               for group, members in groups.items()}
    labels = {NOISY: "noisy input", **{s.name: s.label or s.name for s in systems}}
    table = markdown_table(summary, {g: len(m) for g, m in groups.items()}, names, labels, metrics, sample_rate,
                           data_description)
    result = {"task": "enhancement", "data": data_description, "sample_rate": sample_rate, "n": len(rows),
              "systems": names, "labels": labels, "metrics": metrics,
              "counts": {g: len(m) for g, m in groups.items()}, "summary": summary, "rows": rows}
    with atomic_output(out_dir / "results.json") as tmp:
        Path(tmp).write_text(json.dumps(result, indent=2))
    with atomic_output(out_dir / "results.md") as tmp:
        Path(tmp).write_text(table)
    if plots:
        plot_enhancement(summary, names, labels, metrics, out_dir / "plots" / "enhancement.png")
    return EnhancementResult(out_dir, summary, rows, table)


def _write_example(out_dir: Path, pair: PairRecord, clean: np.ndarray, outputs: Mapping[str, np.ndarray],
                   systems: Sequence[EnhancementSystem], sample_rate: int, row: Mapping, plots: bool) -> None:
    stem = safe_name(pair.id)
    peak = max(float(np.max(np.abs(x))) for x in [clean, *outputs.values()])
    scale = min(1.0, 0.99 / peak) if peak > 0 else 1.0  # one gain for all: levels stay comparable

    def write(path: Path, wav: np.ndarray) -> None:
        save_audio(path, torch.from_numpy(wav * scale).float(), sample_rate)

    write(out_dir / f"{stem}_clean.flac", clean)
    write(out_dir / f"{stem}_noisy.flac", outputs[NOISY])
    for system in systems:
        folder = out_dir / "baselines" if system.baseline else out_dir
        write(folder / f"{stem}_{safe_name(system.name)}.flac", outputs[system.name])
    if plots:
        shown = [s for s in systems if not s.baseline] or list(systems)
        plot_spectrograms(outputs[NOISY], clean[None], np.stack([outputs[s.name] for s in shown]) if shown else [],
                          sample_rate, out_dir / f"{stem}.png",
                          titles={"mix": [f"noisy ({row['input_snr_db']:.1f} dB SNR)"], "refs": ["clean"],
                                  "ests": [f"{s.name} (SI-SNRi {row[f'{s.name}/si_snri']:.1f} dB)" for s in shown]})


# ------------------------------------------------------------------------------------- reporting
_HEADERS = {"pesq_wb": "PESQ-WB", "pesq_nb": "PESQ-NB", "stoi": "STOI", "si_snr": "SI-SNR (dB)",
            "si_snri": "SI-SNRi (dB)", "rtf": "RTF"}
_GROUP_TITLES = {"all": "all pairs", "snr<0": "input SNR < 0 dB", "0<=snr<10": "input SNR 0-10 dB",
                 "snr>=10": "input SNR >= 10 dB", "noise=recording": "recorded noise",
                 "noise=generated": "generated noise", "room=simulated": "with a simulated room",
                 "room=none": "without a room"}


def _cell(value: float, metric: str) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.3f}" if metric in ("stoi", "rtf") else f"{value:.2f}"


def markdown_table(summary: Mapping, counts: Mapping[str, int], names: Sequence[str], labels: Mapping[str, str],
                   metrics: Sequence[str], sample_rate: int, data_description: str = "") -> str:
    """One Markdown table per group: a row per system (the noisy input first), a column per metric."""
    columns = list(metrics) + ["rtf"]
    lines = []
    if data_description:
        lines += [f"Data: {data_description}, {sample_rate} Hz.", ""]
    for group, values in summary.items():
        title = _GROUP_TITLES.get(group, group)
        lines += [f"### {title} ({counts[group]} pairs)", "",
                  "| system | " + " | ".join(_HEADERS[m] for m in columns) + " |",
                  "|---|" + "---:|" * len(columns)]
        for name in names:
            cells = [_cell(values.get(f"{name}/{m}"), m) if not (name == NOISY and m in ("rtf", "si_snri"))
                     else "-" for m in columns]
            lines.append(f"| {labels.get(name, name)} | " + " | ".join(cells) + " |")
        lines.append("")
    lines.append("PESQ: ITU-T P.862 (wide band at 16 kHz, narrow band at 8 kHz); STOI: Taal et al. 2011; "
                 "SI-SNRi: SI-SNR gain over the noisy input; RTF: processing time / audio duration. "
                 "Input SNR: the noisy file against its clean reference. Means over pairs where a value is defined.")
    return "\n".join(lines) + "\n"


def plot_enhancement(summary: Mapping, names: Sequence[str], labels: Mapping[str, str], metrics: Sequence[str],
                     path) -> Path:
    """Bars of each metric per system and group (all pairs and the input-SNR bands)."""
    shown = [m for m in metrics if m != "si_snri"]
    groups = [g for g in summary if g == "all" or g.startswith(("snr", "0<="))]
    fig = Figure(figsize=(4.2 * len(shown), 3.6), layout="constrained")
    width = 0.8 / len(names)
    for i, metric in enumerate(shown):
        ax = fig.add_subplot(1, len(shown), i + 1)
        for k, name in enumerate(names):
            values = [summary[g].get(f"{name}/{metric}", float("nan")) for g in groups]
            ax.bar(np.arange(len(groups)) + (k - (len(names) - 1) / 2) * width, values, width,
                   label=labels.get(name, name))
        ax.set_xticks(np.arange(len(groups)), [_GROUP_TITLES.get(g, g).replace("input ", "") for g in groups],
                      fontsize=7)
        ax.set_title(_HEADERS[metric], fontsize=10)
        ax.tick_params(labelsize=7)
        if i == 0:
            ax.legend(fontsize=6)
    return save_figure(fig, path)
