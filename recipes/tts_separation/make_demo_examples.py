"""Copy a few test-split utterances (voices no training split contains) into voxsep/examples/.

Usage: python recipes/tts_separation/make_demo_examples.py CORPUS_DIR [--voices 12] [--per-voice 2]

The demo (`voxsep demo`) mixes these into 2..5-talker mixtures. Voices are picked round-robin
across engines so that espeak-ng, flite and festival all appear.
"""
from __future__ import annotations

import argparse
import json
import shutil
from collections import defaultdict
from pathlib import Path

OUT = Path(__file__).resolve().parents[2] / "voxsep" / "examples"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--voices", type=int, default=12)
    parser.add_argument("--per-voice", type=int, default=2)
    args = parser.parse_args()
    rows = [json.loads(line) for line in (args.corpus / "manifest_8k.jsonl").read_text().splitlines()]
    by_engine: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        if row["split"] == "test":
            by_engine[row["engine"]][row["speaker"]].append(row)
    picked: list[str] = []
    queues = {e: sorted(v) for e, v in sorted(by_engine.items())}
    while len(picked) < args.voices and any(queues.values()):
        for engine in list(queues):
            if queues[engine] and len(picked) < args.voices:
                picked.append((engine, queues[engine].pop(0)))
    OUT.mkdir(parents=True, exist_ok=True)
    records = []
    for engine, speaker in picked:
        utts = sorted(by_engine[engine][speaker], key=lambda r: r["id"])[: args.per_voice]
        for row in utts:
            name = f"{row['id']}.flac"
            shutil.copyfile(args.corpus / row["path"], OUT / name)
            records.append({**row, "path": name, "split": "test"})
    (OUT / "examples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    print(f"{len(records)} utterances of {len(picked)} voices -> {OUT}")


if __name__ == "__main__":
    main()
