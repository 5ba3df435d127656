"""Compact per-count table from `voxsep evaluate` outputs (for the recipe README and model cards).

    python recipes/tts_separation/results_table.py runs/a/eval/summary.json [runs/b/eval/summary.json ...]

One row per talker count and one column group per system: SI-SNRi with the true count, SI-SNRi
with the estimated count, count accuracy (for one talker, whose mixture is its own reference, the
SI-SNR of the output is shown instead). The last row is over all mixtures.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _fmt(value, pattern: str = "{:.2f}") -> str:
    return "-" if value is None else pattern.format(value)


def table(summaries: list[dict], systems: list[str] | None = None) -> str:
    columns = []  # (label, per-count results)
    for summary in summaries:
        for name, result in summary["results"].items():
            if systems and name not in systems:
                continue
            columns.append((name, result))
    if not columns:
        raise SystemExit("results_table: no matching system in the summaries")
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
                true = _fmt(r.get("si_snri"))
            row += [true, _fmt(r.get("si_snri_est")), _fmt(r.get("count_acc"), "{:.1%}")]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines).replace("%", " %") + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("summaries", nargs="+", help="summary.json files written by voxsep evaluate")
    parser.add_argument("--system", action="append", help="keep only these systems (repeatable)")
    args = parser.parse_args(argv)
    summaries = []
    for path in args.summaries:
        try:
            summaries.append(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as err:
            print(f"results_table: {path}: {err}", file=sys.stderr)
            return 2
    print(table(summaries, args.system), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
