"""A training campaign's log: quality against cumulative training compute, across runs and machines.

A campaign is a chain of training runs (each may start from the previous one's weights with
``init_from``); their run folders live on one machine, the log is committed with the repository so
that a session on a new machine continues where the last one stopped. Each line of the log (jsonl)
is one validation point::

    {"run": "r01", "step": 1500, "cpu_h": 0.42, "campaign_cpu_h": 0.42, "val/si_snri": 3.1,
     "val/count_acc_est": 0.41, ...}

``campaign_cpu_h`` adds the CPU-hours of the runs before (``after``: the run it started from, counted
up to the step of the checkpoint it started from), so the points of all runs form one learning curve.
:func:`sync_run` is idempotent (a run's points are replaced by those of its current history).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from engine.train import read_history
from frontend import atomic_output
from frontend.errors import VoxsepError

#: the validation metrics a point keeps (those present)
KEYS = ("val/si_snri", "val/count_acc_est", "val/count_acc", "val/loss")


def read_log(path: str | os.PathLike) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                raise VoxsepError(f"{path}:{n}: not a campaign record (invalid JSON)") from None
    return out


def _offset(points: list[dict], after: str | None, after_step: int | None) -> float:
    """Campaign CPU-hours at which a run started from ``after`` (at ``after_step``, else its end)."""
    if after is None:
        return 0.0
    parent = [p for p in points if p["run"] == after]
    if not parent:
        raise VoxsepError(f"campaign: no run {after!r} in the log to continue from")
    if after_step is not None:
        parent = [p for p in parent if p["step"] <= after_step] or parent[:1]
    last = max(parent, key=lambda p: p["step"])
    return float(last["campaign_cpu_h"])


def sync_run(log: str | os.PathLike, run_dir: str | os.PathLike, name: str, after: str | None = None,
             after_step: int | None = None, note: str | None = None) -> list[dict]:
    """Replace run ``name``'s points in ``log`` by the validation points of ``run_dir``'s history.

    Returns the run's points. Raises :class:`VoxsepError` if the history has no validated epoch.
    """
    points = [p for p in read_log(log) if p["run"] != name]
    offset = _offset(points, after, after_step)
    history = read_history(run_dir)
    if not history:
        raise VoxsepError(f"{run_dir}: no history.jsonl (not a run folder?)")
    new = []
    for record in history:
        if "event" in record or not any(k in record for k in KEYS) or "cpu_s" not in record:
            continue
        cpu_h = record["cpu_s"] / 3600
        point = {"run": name, "step": record["step"], "cpu_h": round(cpu_h, 4),
                 "campaign_cpu_h": round(offset + cpu_h, 4), **{k: record[k] for k in KEYS if k in record}}
        if after is not None:
            point["after"] = after
        if note:
            point["note"] = note
        new.append(point)
    if not new:
        raise VoxsepError(f"{run_dir}: no validated epoch with CPU time in its history yet")
    with atomic_output(log) as tmp:
        tmp.write_text("".join(json.dumps(p) + "\n" for p in points + new))
    return new


def panels(points: list[dict]) -> list[tuple[str, str]]:
    """The plot's panels for the metrics the log holds, as ``(key, y label)``: SI-SNRi (separation and
    enhancement), count accuracy (separation), and the validation loss where neither is logged (the
    vocoder: its teacher-forced cross-entropy)."""
    has = {k for p in points for k in p if k.startswith("val/")}
    counting = bool(has & {"val/count_acc_est", "val/count_acc"})
    out = []
    if "val/si_snri" in has:
        out.append(("val/si_snri", "validation SI-SNRi, 2-5 talkers (dB)" if counting else "validation SI-SNRi (dB)"))
    if counting:
        out.append(("count", "validation count accuracy (%)"))
    if not out and "val/loss" in has:
        out.append(("val/loss", "validation loss (the training loss)"))
    return out


def plot_log(log: str | os.PathLike, path: str | os.PathLike, title: str = "") -> None:
    """The log's validation metrics (:func:`panels`) against cumulative CPU-hours, one colour per run."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = read_log(log)
    if not points:
        raise VoxsepError(f"{log}: the campaign log is empty")
    shown = panels(points)
    if not shown:
        raise VoxsepError(f"{log}: no validation metric to plot")
    fig, axes = plt.subplots(1, len(shown), figsize=(5 * len(shown), 3.6), squeeze=False)
    axes = axes[0]
    runs = list(dict.fromkeys(p["run"] for p in points))
    colors = plt.get_cmap("tab10" if len(runs) <= 10 else "tab20")  # one colour per run
    for i, run in enumerate(runs):
        pts = sorted((p for p in points if p["run"] == run), key=lambda p: p["campaign_cpu_h"])
        x = [p["campaign_cpu_h"] for p in pts]
        style = dict(marker=".", label=run, color=colors(i % colors.N))
        for ax, (key, _) in zip(axes, shown):
            if key == "count":
                y = [100 * p.get("val/count_acc_est", p.get("val/count_acc", float("nan"))) for p in pts]
            else:
                y = [p.get(key, float("nan")) for p in pts]
            ax.plot(x, y, **style)
    for ax, (_, label) in zip(axes, shown):
        ax.set_ylabel(label)
        ax.set_xlabel("cumulative training CPU-hours")
        ax.grid(alpha=0.3)
    # beside the panels, in as many columns as it takes to stay as tall as they are
    handles, labels = axes[-1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8,
               ncol=1 + (len(runs) - 1) // 14)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight")
    plt.close(fig)
