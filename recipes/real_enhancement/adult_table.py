"""Write a copy of an utterance table with only its adult speakers (d06adult in README.md).

Keeps every row of a corpus without ages (LibriSpeech) and the rows of speakers aged 18 or more, and
adds a ``split`` column with the split the *full* table gets from the project's split rule, so the
held-back speakers stay held back. Paths are rewritten relative to the new table's folder.

    python recipes/real_enhancement/adult_table.py DATA/speech/manifest.csv DATA/speech_adult/manifest.csv
"""
from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

from frontend.utterances import read_utterances

FRACTIONS = (0.91, 0.09, 0.0)  # the recipes' split of DATA/speech


def main(table: str, out: str, min_age: int = 18) -> None:
    split_of = {u.speaker: u.split for u in read_utterances(table, splits=("train", "valid", "test"),
                                                             fractions=FRACTIONS)}
    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    keep = [r for r in rows if not r.get("age") or int(r["age"]) >= min_age]
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    root = Path(table).resolve().parent
    with open(out_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*rows[0], "split"])
        writer.writeheader()
        for r in keep:
            path = os.path.relpath(root / r["path"], out_path.resolve().parent)
            writer.writerow({**r, "path": path, "split": split_of[r["speaker"]]})
    print(f"{out}: {len(keep)} of {len(rows)} utterances, {len({r['speaker'] for r in keep})} speakers")


if __name__ == "__main__":
    main(*sys.argv[1:3])
