"""Summaries of per-mixture rows: JSON, Markdown tables (one per talker count), plots."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from evaluation.counting import confusion_matrix, count_aware_si_snri
from frontend import VoxsepError, atomic_output

# (column in the rows, header in the Markdown table, format)
TABLE_COLUMNS = [
    ("si_snr", "SI-SNR true count", "db"),
    ("si_snri", "SI-SNRi true count", "db"),
    ("si_snri_est", "SI-SNRi est. count", "db"),
    ("sdri", "SDRi", "db"),
    ("siri", "SIRi", "db"),
    ("sar", "SAR", "db"),
    ("count_acc", "count acc.", "pct"),
    ("false_per_mix", "false talkers / mix", "num"),
    ("pesq_nb", "PESQ-NB", "num"),
    ("pesq_wb", "PESQ-WB", "num"),
    ("stoi", "STOI", "num"),
    ("estoi", "ESTOI", "num"),
    ("rtf", "RTF", "rtf"),
]
MEAN_COLUMNS = ["si_snr", "si_snri", "si_snri_est", "sdr", "sdri", "sir", "siri", "sar", "sari",
                "pesq_nb", "pesq_wb", "stoi", "estoi", "count_prob_true"]

COUNTING_RULE = (
    "SI-SNRi (est. count): estimates are matched to references by the Hungarian algorithm on "
    "SI-SNR; a reference left without an estimate scores 0 dB (the mixture as its estimate); "
    "extra estimates are false talkers (not averaged). A single clean talker (the mixture equals "
    "its reference) has no SI-SNRi: it is left blank and SI-SNR is reported. SI-SNRi/SDRi (true count): the output for "
    "the true count. SDR/SIR/SAR: bss_eval v3 (mir_eval's definition and permutation); SAR is "
    "shown as is, since a clean mixture has no artifacts (its SAR is the 100 dB cap). "
    "RTF: separation time / audio duration (CPU). Oracle IBM/IRM: ideal binary / ratio masks "
    "on a 32 ms STFT, the ceiling of mask-based separation.")


def safe_name(name: str) -> str:
    """A system (or mixture) name as a file name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "system"


def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _aggregate(rows: Sequence[Mapping]) -> dict:
    out: dict = {"n": len(rows)}
    for col in MEAN_COLUMNS:
        vals = np.array([_float(r.get(col)) for r in rows if col in r], dtype=np.float64)
        finite = vals[np.isfinite(vals)]
        if vals.size:
            out[col] = float(finite.mean()) if finite.size else float("nan")
            if col in ("si_snri", "sdri"):
                out[f"n_{col}"] = int(finite.size)
    n_src = [int(_float(r["n_src"])) for r in rows]
    n_est = [int(_float(r["n_est"])) for r in rows]
    out["count_acc"] = float(np.mean([a == b for a, b in zip(n_src, n_est)])) if rows else float("nan")
    for key, col in (("false_per_mix", "false"), ("missed_per_mix", "missed")):
        vals = np.array([_float(r[col]) for r in rows])
        out[key] = float(vals[np.isfinite(vals)].mean()) if np.isfinite(vals).any() else float("nan")
    seconds = np.array([_float(r["seconds"]) for r in rows])
    duration = np.array([_float(r["duration_s"]) for r in rows])
    ok = np.isfinite(seconds)
    out["rtf"] = float(seconds[ok].sum() / duration[ok].sum()) if ok.any() and duration[ok].sum() > 0 else float("nan")
    return out


def summarize(rows: Mapping[str, Sequence[Mapping]], options=None, data_description: str = "") -> dict:
    """Aggregate per-mixture rows ``{system: [row, ...]}`` per system and talker count."""
    counts = sorted({int(_float(r["n_src"])) for rs in rows.values() for r in rs})
    results, confusion = {}, {}
    for name, rs in rows.items():
        by_count = {str(c): _aggregate([r for r in rs if int(_float(r["n_src"])) == c]) for c in counts}
        results[name] = {"all": _aggregate(rs), "by_count": by_count}
        true = [int(_float(r["n_src"])) for r in rs]
        est = [int(_float(r["n_est"])) for r in rs]
        labels = list(range(min(true + est, default=1), max(true + est, default=1) + 1))
        matrix, labels = confusion_matrix(true, est, labels)
        confusion[name] = {"labels": labels, "matrix": matrix.tolist()}
    return {
        "data": data_description,
        "systems": list(rows),
        "counts": counts,
        "metrics": dict(vars(options)) if options is not None else {},
        "counting_rule": COUNTING_RULE,
        "results": results,
        "confusion": confusion,
    }


def _cell(value, kind: str) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    if kind == "pct":
        return f"{100 * value:.1f} %"
    if kind == "rtf":
        return f"{value:.3f}"
    return f"{value:.2f}"


def markdown_tables(summary: Mapping) -> str:
    """The report: one Markdown table per talker count (a row per system), then all counts."""
    lines = ["# Evaluation report", ""]
    if summary.get("data"):
        lines += [f"Data: {summary['data']}", ""]
    present = [(c, h, k) for c, h, k in TABLE_COLUMNS
               if any(c in res["all"] for res in summary["results"].values())]
    sections = [(str(c), f"{c} talker{'s' if c != 1 else ''}") for c in summary["counts"]]
    sections.append(("all", "All counts"))
    for key, title in sections:
        first = next(iter(summary["results"].values()))
        n = (first["all"] if key == "all" else first["by_count"][key])["n"]
        lines += [f"## {title} ({n} mixtures)", "",
                  "| system | " + " | ".join(h for _, h, _ in present) + " |",
                  "|---|" + "---:|" * len(present)]
        for name, res in summary["results"].items():
            agg = res["all"] if key == "all" else res["by_count"][key]
            lines.append(f"| {name} | " + " | ".join(_cell(agg.get(c), k) for c, _, k in present) + " |")
        lines.append("")
    lines += [summary.get("counting_rule", ""), ""]
    return "\n".join(lines)


def count_table(summaries: Sequence[Mapping], systems: Sequence[str] | None = None) -> str:
    """A compact per-count table of one or several ``summary.json`` (for READMEs and model cards).

    One row per talker count (then all mixtures) and, per system, three columns: SI-SNRi with the
    true count, SI-SNRi with the estimated count, count accuracy. For one talker, whose mixture is
    its own reference, the SI-SNR of the output is shown instead of the (undefined) SI-SNRi.

    Args:
        summaries: ``summary.json`` contents (``voxsep evaluate`` outputs).
        systems: keep only these systems (default: all, in order).

    Raises:
        VoxsepError: no system of ``systems`` in the summaries.
    """
    columns = [(name, result) for summary in summaries for name, result in summary["results"].items()
               if not systems or name in systems]
    if not columns:
        raise VoxsepError(f"no system {list(systems or [])} in the summaries")
    counts = sorted({int(c) for _, r in columns for c in r["by_count"]})
    head = ["talkers", "mixtures"]
    for name, _ in columns:
        head += [f"{name}: SI-SNRi true count", f"{name}: SI-SNRi est. count", f"{name}: count acc."]
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for c in counts + ["all"]:
        row = [str(c), ""]
        for _, result in columns:
            r = result["by_count"].get(str(c)) if c != "all" else result["all"]
            if r is None:
                row += ["", "", ""]
                continue
            row[1] = str(r["n"])
            if r.get("si_snri") is None and r.get("si_snr") is not None and c == 1:
                true = f"(SI-SNR {r['si_snr']:.2f})"
            else:
                true = _cell(r.get("si_snri"), "db")
            row += [true, _cell(r.get("si_snri_est"), "db"), _cell(r.get("count_acc"), "pct")]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def write_report(out_dir: Path, summary: Mapping, rows: Mapping[str, Sequence[Mapping]]) -> None:
    """Write ``summary.json`` and ``report.md`` atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_output(out_dir / "summary.json") as tmp:
        tmp.write_text(json.dumps(_json_safe(summary), indent=2) + "\n")
    with atomic_output(out_dir / "report.md") as tmp:
        tmp.write_text(markdown_tables(summary))


def _json_safe(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def write_plots(out_dir: Path, summary: Mapping, rows: Mapping[str, Sequence[Mapping]],
                systems: Sequence, examples: Sequence[Mapping]) -> list[Path]:
    """Confusion matrices, SI-SNRi distributions per count and example spectrograms."""
    from evaluation.plots import plot_confusion, plot_distribution, plot_spectrograms

    plot_dir = out_dir / "plots"
    written = []
    for s in systems:
        if getattr(s, "oracle_count", False) or s.__class__.__name__ == "OracleMaskSystem":
            continue  # outputs the true count by construction
        conf = summary["confusion"][s.name]
        written.append(plot_confusion(conf["matrix"], conf["labels"],
                                      plot_dir / f"confusion_{safe_name(s.name)}.png",
                                      title=f"count confusion: {s.name}"))
    for col, label in (("si_snri", "SI-SNRi, true count (dB)"), ("si_snri_est", "SI-SNRi, estimated count (dB)")):
        values = {name: {} for name in rows}
        for name, rs in rows.items():
            for r in rs:
                values[name].setdefault(int(_float(r["n_src"])), []).append(_float(r[col]))
        written.append(plot_distribution(values, plot_dir / f"{col}_by_count.png", ylabel=label))
    for item in examples:
        for s in systems:
            out = s.run(item)
            score = count_aware_si_snri(item["sources"], out.est, item["mix"])
            # row i: the estimate matched to reference i (silence if missed), then false talkers
            zeros = np.zeros_like(item["mix"])
            ests = [out.est[k] if k >= 0 else zeros for k in score.perm]
            ests += [out.est[k] for k in range(out.est.shape[0]) if k not in set(score.perm.tolist())]
            titles = {"refs": [f"reference {i + 1}" for i in range(item["sources"].shape[0])],
                      "ests": [f"estimate (SI-SNRi {score.si_snri[i]:.1f} dB)" if k >= 0
                               else "missed (no estimate)" for i, k in enumerate(score.perm)]
                      + ["false talker"] * score.false_talkers}
            ests = np.stack(ests) if ests else np.zeros((0, zeros.shape[-1]))
            written.append(plot_spectrograms(
                item["mix"], item["sources"], ests, item["sample_rate"],
                plot_dir / "examples" / f"{safe_name(item['id'])}__{safe_name(s.name)}.png", titles=titles))
    return written
