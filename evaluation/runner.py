"""The evaluation runner: score systems on a mixture set, resumably, and write the report.

:func:`evaluate_systems` walks the items once; every system separates the same mixture, and the
metrics of that mixture are computed (in worker processes when ``workers > 0``, separation stays in
this process). Each finished mixture appends one row per system to ``OUT/rows/<system>.csv`` and
flushes it, so a run that stops (error, Ctrl-C, power cut) continues where it stopped: rows whose
``id`` is already there are skipped on the next run (a half-written last line is dropped). At the
end it writes ``OUT/summary.json``, ``OUT/report.md`` (a table per talker count with a row per
system) and plots under ``OUT/plots/``.

Per-mixture columns (dB unless noted; the true-count path is the system's output for the true
count C, the estimated-count path its output for the count it chose):

========================  =================================================================
``si_snr``, ``si_snri``   true count: mean over references, Hungarian match on SI-SNR
``si_snri_est``           estimated count, rule of :mod:`evaluation.counting`
``n_est``, ``count_ok``   estimated count, 1 if it equals ``n_src``
``missed``, ``false``     references without an estimate, estimates without a reference
``sdr`` ... ``sari``      bss_eval v3 on the true-count output (mir_eval's permutation)
``pesq_nb``/``pesq_wb``   PESQ at 8 kHz / 16 kHz (true count, SI-SNR match), [eval] extra
``stoi``, ``estoi``       STOI / ESTOI (true count, SI-SNR match), [eval] extra
``seconds``, ``rtf``      separation time (s) and real-time factor of the estimated-count pass
``count_prob_true``       probability the system gave the true count (if it reports them)
``note``                  why a value is NaN (e.g. "no true-count output", "bss_eval: ...")
========================  =================================================================
"""
from __future__ import annotations

import csv
import io
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from tqdm import tqdm

from evaluation.counting import count_aware_si_snri
from evaluation.metrics import MetricError, bss_eval, pairwise_si_snr
from evaluation.perceptual import available_perceptual, pesq_scores, stoi_scores
from evaluation.report import safe_name, summarize, write_plots, write_report
from evaluation.systems import CallableSystem, OracleMaskSystem, SystemOutput
from frontend import VoxsepError, atomic_output
from frontend.workers import WorkerPool

BASE_COLUMNS = ["id", "n_src", "n_est", "count_ok", "missed", "false", "duration_s", "seconds",
                "rtf", "si_snr", "si_snri", "si_snri_est"]
BSS_COLUMNS = ["sdr", "sdri", "sir", "siri", "sar", "sari"]
TAIL_COLUMNS = ["count_prob_true", "note"]


@dataclass(frozen=True)
class MetricOptions:
    """Which metric families to compute (perceptual ones only if installed)."""

    bss: bool = True
    pesq: bool = True
    stoi: bool = True

    def resolved(self) -> "MetricOptions":
        have = available_perceptual()
        return MetricOptions(self.bss, self.pesq and have["pesq"], self.stoi and have["stoi"])

    def columns(self, sample_rate: int) -> list[str]:
        cols = list(BASE_COLUMNS)
        if self.bss:
            cols += BSS_COLUMNS
        if self.pesq:
            cols.append("pesq_nb" if sample_rate == 8000 else "pesq_wb")
        if self.stoi:
            cols += ["stoi", "estoi"]
        return cols + TAIL_COLUMNS


def _mean(values) -> float:
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if arr.size else float("nan")


def score_outputs(ref: np.ndarray, mix: np.ndarray, out: SystemOutput, sample_rate: int,
                  options: MetricOptions) -> dict[str, Any]:
    """All metrics of one system's output on one mixture, as one CSV row (without ``id``).

    Never raises for metric edge cases: an undefined value is ``NaN`` and ``note`` says why.
    Estimates with NaN/Inf samples are scored as silence (noted).
    """
    n_src, length = ref.shape
    notes: list[str] = []
    row: dict[str, Any] = {"n_src": n_src, "n_est": int(out.est.shape[0]),
                           "duration_s": length / sample_rate, "seconds": out.seconds,
                           "rtf": out.seconds / (length / sample_rate)}
    row["count_ok"] = int(row["n_est"] == n_src)
    if out.count_probs is not None and n_src < out.count_probs.shape[0]:
        row["count_prob_true"] = float(out.count_probs[n_src])
    nan_cols = ["missed", "false", "si_snri_est", "si_snr", "si_snri"] + (BSS_COLUMNS if options.bss else [])
    if options.pesq:
        nan_cols.append("pesq_nb" if sample_rate == 8000 else "pesq_wb")
    if options.stoi:
        nan_cols += ["stoi", "estoi"]
    row.update({c: float("nan") for c in nan_cols})
    est_all = _finite(out.est, notes)
    est = None if out.est_true_count is None else _finite(out.est_true_count, notes)
    try:
        _score_into(row, notes, ref, mix, est_all, est, sample_rate, options)
    except MetricError as err:  # e.g. a mixture of fewer than 2 samples
        notes.append(str(err))
    row["note"] = "; ".join(dict.fromkeys(notes))
    return row


def _mixture_is_the_reference(ref: np.ndarray, mix: np.ndarray, threshold_db: float = 60.0) -> bool:
    """True when there is one reference and the mixture equals it up to ``threshold_db`` SI-SNR."""
    if ref.shape[0] != 1:
        return False
    return bool(pairwise_si_snr(ref, mix[None])[0, 0] >= threshold_db)


def _finite(est: np.ndarray, notes: list[str]) -> np.ndarray:
    if np.isfinite(est).all():
        return est
    notes.append("estimate had NaN/Inf samples (scored as silence)")
    return np.where(np.isfinite(est), est, 0.0)


def _score_into(row, notes, ref, mix, est_all, est, sample_rate, options) -> None:
    est_score = count_aware_si_snri(ref, est_all, mix)
    row.update(missed=est_score.missed, false=est_score.false_talkers, si_snri_est=est_score.mean_si_snri)
    if not np.isfinite(est_score.si_snri).all():
        notes.append("silent reference: its SI-SNR is undefined")
    if est is None:
        notes.append("no true-count output")
        return
    true_score = count_aware_si_snri(ref, est, mix)
    row.update(si_snr=true_score.mean_si_snr, si_snri=true_score.mean_si_snri)
    if options.bss:
        try:
            bss = bss_eval(ref, est, mix)
            row.update({c: _mean(bss[c]) for c in BSS_COLUMNS})
        except MetricError as err:
            notes.append(f"bss_eval: {err}")
    if _mixture_is_the_reference(ref, mix):
        # one talker and no noise: the mixture already is the reference (SI-SNR ~ +inf), so an
        # improvement is meaningless; such mixtures report SI-SNR and SDR only
        row.update(si_snri=float("nan"), si_snri_est=float("nan"))
        row.update({c: float("nan") for c in ("sdri", "siri", "sari") if c in row})
        notes.append("one clean talker: SI-SNRi/SDRi undefined (see SI-SNR/SDR)")
    pairs = [(c, int(k)) for c, k in enumerate(true_score.perm) if k >= 0]
    if options.pesq:
        key = "pesq_nb" if sample_rate == 8000 else "pesq_wb"
        row[key] = _mean([pesq_scores(ref[c], est[k], sample_rate)[key] for c, k in pairs])
        if not math.isfinite(row[key]):
            notes.append("PESQ undefined (silent or shorter than 0.25 s)")
    if options.stoi:
        scores = [stoi_scores(ref[c], est[k], sample_rate) for c, k in pairs]
        row["stoi"] = _mean([s["stoi"] for s in scores])
        row["estoi"] = _mean([s["estoi"] for s in scores])


def _score_job(job: dict) -> dict[str, dict]:
    """Worker entry point: score every system's output on one mixture."""
    ref = job["sources"].astype(np.float64)
    mix = job["mix"].astype(np.float64)
    rows = {}
    for name, out in job["outputs"].items():
        row = score_outputs(ref, mix, out, job["sample_rate"], job["options"])
        row["id"] = job["id"]
        rows[name] = row
    return rows


# ------------------------------------------------------------------------------ resumable rows

class RowLog:
    """Append-only per-mixture CSV that survives interruption (one flushed line per mixture)."""

    def __init__(self, path: Path, columns: Sequence[str]):
        self.path = path
        self.rows: dict[str, dict[str, str]] = {}
        self.columns = list(columns)
        if path.exists():
            self._load()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "w", newline="") as f:
                csv.writer(f).writerow(self.columns)
                f.flush()
                os.fsync(f.fileno())

    def _load(self) -> None:
        text = self.path.read_text()
        complete = text if text.endswith("\n") or not text else text[: text.rfind("\n") + 1]
        reader = csv.reader(io.StringIO(complete))
        header = next(reader, None)
        if header and header != self.columns:
            raise VoxsepError(f"{self.path}: written with other columns (metric options) than this run "
                              f"computes; rerun with the same options or another --out")
        good, dropped = [], complete != text or header is None  # no header: rewrite it
        for fields in reader:
            if len(fields) != len(self.columns):
                dropped = True  # damaged line: that mixture is scored again
                continue
            row = dict(zip(self.columns, fields))
            if row["id"] in self.rows:
                dropped = True
                continue
            self.rows[row["id"]] = row
            good.append(fields)
        if dropped:  # rewrite without the damaged lines, atomically
            with atomic_output(self.path) as tmp:
                with open(tmp, "w", newline="") as f:
                    w = csv.writer(f)
                    w.writerow(self.columns)
                    w.writerows(good)

    def __contains__(self, item_id: str) -> bool:
        return item_id in self.rows

    def append(self, row: Mapping[str, Any]) -> None:
        line = {c: _fmt(row.get(c, "")) for c in self.columns}
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([line[c] for c in self.columns])
            f.flush()
            os.fsync(f.fileno())
        self.rows[str(row["id"])] = line


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}" if abs(value) >= 1e4 else f"{value:.6f}"
    return str(value)


# ------------------------------------------------------------------------------------ running

@dataclass
class EvaluationResult:
    """What :func:`evaluate_systems` wrote, and the per-system rows."""

    out_dir: Path
    summary: dict
    rows: dict[str, list[dict]] = field(default_factory=dict)


def _item_arrays(item: Mapping, default_rate: int | None) -> dict:
    mix = np.asarray(torch.as_tensor(item["mix"]).detach().cpu().float().numpy())
    sources = np.asarray(torch.as_tensor(item["sources"]).detach().cpu().float().numpy())
    if mix.ndim != 1 or sources.ndim != 2 or sources.shape[-1] != mix.shape[-1]:
        raise ValueError(f"item {item.get('id')!r}: expected mix (T,) and sources (C, T), got "
                         f"{mix.shape} and {sources.shape}")
    n_src = int(item.get("n_src", sources.shape[0]))
    if n_src != sources.shape[0]:
        raise ValueError(f"item {item['id']!r}: n_src={n_src} but {sources.shape[0]} sources")
    rate = item.get("sample_rate", default_rate)
    if rate is None:
        raise ValueError(f"item {item['id']!r} has no sample_rate and none was given")
    return {**item, "id": str(item["id"]), "mix": mix, "sources": sources, "n_src": n_src,
            "sample_rate": int(rate)}


def evaluate_systems(items: Iterable[Mapping], systems: Sequence, out_dir: str | os.PathLike, *,
                     sample_rate: int | None = None, metrics: MetricOptions = MetricOptions(),
                     workers: int = 0, n_examples: int = 3, progress: bool = True,
                     plots: bool = True, data_description: str = "") -> EvaluationResult:
    """Evaluate several systems on identical mixtures; resumable; writes CSV, JSON, Markdown, PNG.

    Args:
        items: mappings ``{"id", "mix" (T,), "sources" (C, T), "n_src", "sample_rate"}``.
        systems: objects with ``name`` and ``run(item) -> SystemOutput`` (see
            :mod:`evaluation.systems`); names must be unique.
        out_dir: output folder; rerunning with the same folder resumes.
        sample_rate: used for items without ``sample_rate``.
        metrics: metric families (PESQ/STOI are dropped if their package is missing).
        workers: metric worker processes (0: compute in this process).
        n_examples: mixtures (the first ones) whose spectrograms are plotted.
        progress: show a tqdm bar on stderr.

    Returns:
        :class:`EvaluationResult`. Exceptions from a system propagate after every finished
        mixture has been written, so rerunning continues from there.
    """
    out_dir = Path(out_dir)
    names = [s.name for s in systems]
    if len(set(map(safe_name, names))) != len(names):
        raise VoxsepError(f"system names must be unique: {names}")
    options = metrics.resolved()
    logs: dict[str, RowLog] = {}
    examples: list[dict] = []
    total = len(items) if hasattr(items, "__len__") else None
    bar = tqdm(total=total, desc="evaluate", unit="mix", file=sys.stderr, disable=not progress,
               dynamic_ncols=True)
    # 0 workers: metrics in this process, each mixture's as soon as it is separated
    pool = WorkerPool(workers, name="metric", hint="rerun with fewer workers (finished mixtures are kept)")
    pending: list = []
    seen: set[str] = set()

    def write(rows: dict[str, dict]) -> None:
        for name, row in rows.items():
            logs[name].append(row)
        bar.update(1)

    def drain(limit: int) -> None:
        while len(pending) > limit:
            write(pending.pop(0).result())

    with pool:
        try:
            for raw in items:
                item = _item_arrays(raw, sample_rate)
                if item["id"] in seen:
                    raise VoxsepError(f"mixture id {item['id']!r} occurs twice; ids must be unique "
                                      "(rows are matched by id when a run resumes)")
                seen.add(item["id"])
                if not logs:
                    columns = options.columns(item["sample_rate"])
                    logs = {s.name: RowLog(out_dir / "rows" / f"{safe_name(s.name)}.csv", columns)
                            for s in systems}
                if len(examples) < n_examples:
                    examples.append(item)
                todo = [s for s in systems if item["id"] not in logs[s.name]]
                if not todo:
                    bar.update(1)
                    continue
                outputs = {s.name: s.run(item) for s in todo}
                job = {"id": item["id"], "mix": item["mix"], "sources": item["sources"],
                       "sample_rate": item["sample_rate"], "outputs": outputs, "options": options}
                pending.append(pool.submit(_score_job, job))
                drain(2 * workers)
            drain(0)
        except BaseException:
            # keep every mixture that finished, so that a rerun continues after it
            for fut in pending:
                try:
                    write(fut.result())
                except Exception:
                    pass
            raise
        finally:
            bar.close()
    if not logs:
        raise VoxsepError("no mixtures to evaluate")
    rows = {name: list(logs[name].rows.values()) for name in names}
    summary = summarize(rows, options, data_description=data_description)
    write_report(out_dir, summary, rows)
    if plots:
        write_plots(out_dir, summary, rows, systems, examples)
    return EvaluationResult(out_dir, summary, rows)


def evaluate(items: Iterable[Mapping], separate: Callable, out_dir: str | os.PathLike, *,
             separate_with_count: Callable | None = None, count_probs: Callable | None = None,
             name: str = "model", oracle: bool = True, **kwargs) -> EvaluationResult:
    """Evaluate one separator callable (plus the IBM/IRM oracle baselines when ``oracle``).

    ``separate(mix (T,)) -> (K, T)``; ``separate_with_count(mix, k) -> (k, T)`` is optional; see
    :func:`evaluate_systems` for the other arguments.
    """
    systems = [CallableSystem(name, separate, separate_with_count, count_probs)]
    if oracle:
        systems += [OracleMaskSystem("ibm"), OracleMaskSystem("irm")]
    return evaluate_systems(items, systems, out_dir, **kwargs)
