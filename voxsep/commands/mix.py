"""`voxsep mix`: make wsj0-mix / LibriMix style mixtures of 1..C talkers.

Example::

    voxsep mix --speech corpus/manifest_8k.jsonl --out data/mix --speakers 1-5 \\
        --n-mixtures tr=2000,cv=500,tt=300 --gains wsj0 --mode min
"""
from __future__ import annotations

import argparse
import re

from frontend import VoxsepError

NAME = "mix"
HELP = "make wsj0-mix / LibriMix style mixtures of 1..C talkers"


def parse_counts(text: str) -> list[int]:
    """``"1-5"`` -> [1..5]; ``"2,3,10"`` -> [2, 3, 10]; ranges and lists combine (``"2-4,10"``)."""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise VoxsepError(f"--speakers: cannot read {part!r} (use e.g. 1-5 or 2,3,10)")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if lo < 1 or hi < lo:
            raise VoxsepError(f"--speakers: {part!r} is not a range of counts >= 1")
        out += [c for c in range(lo, hi + 1) if c not in out]
    return out


def parse_range(text: str, flag: str) -> tuple[float, float]:
    """``"10-20"``, ``"10:20"``, ``"-5:5"`` or a single value ``"15"`` -> (low, high)."""
    num = r"(-?\d+(?:\.\d+)?)"
    m = re.fullmatch(rf"{num}(?:\s*[-:,]\s*{num})?", text.strip())
    if not m:
        raise VoxsepError(f"{flag}: cannot read {text!r} (use e.g. 10-20 or -5:5)")
    lo = float(m.group(1))
    hi = float(m.group(2)) if m.group(2) is not None else lo
    return lo, hi


def parse_n_mixtures(text: str, splits: list[str]) -> dict[str, int]:
    """``"100"`` (every split) or ``"tr=2000,cv=500,tt=300"``."""
    from separation.mixing import normalize_split

    text = text.strip()
    if re.fullmatch(r"\d+", text):
        return {s: int(text) for s in splits}
    out = {s: 0 for s in splits}
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\w+)\s*=\s*(\d+)\s*", part)
        if not m:
            raise VoxsepError(f"--n-mixtures: cannot read {part!r} (use 100 or tr=2000,cv=500,tt=300)")
        out[normalize_split(m.group(1))] = int(m.group(2))
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--speech", required=True, action="append", metavar="TABLE|MANIFEST|DIR",
                        help="utterance table (CSV: path, speaker, ...), manifest (jsonl), a corpus "
                             "folder with manifest_*.jsonl, a LibriSpeech-style folder (speaker/chapter/*.flac) or any folder of "
                             "single-talker files (with --speaker-rule); repeat it to mix several sources")
    parser.add_argument("--speech-weights", default=None, metavar="W1,W2,...",
                        help="with several --speech sources: each source's share of the talkers, e.g. "
                             "0.7,0.3 (default: equal)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (must not exist or be empty)")
    parser.add_argument("--speakers", default="1-5", help="talker counts, e.g. 1-5 or 2,3,10 (default 1-5)")
    parser.add_argument("--n-mixtures", default="100", metavar="N",
                        help="mixtures per count and split: N, or tr=N,cv=N,tt=N (default 100)")
    parser.add_argument("--sample-rate", type=int, default=8000, help="output rate in Hz (default 8000)")
    parser.add_argument("--mode", choices=["min", "max"], default="min",
                        help="min: truncate to the shortest utterance; max: pad to the longest")
    parser.add_argument("--gains", choices=["wsj0", "librimix"], default="wsj0",
                        help="wsj0: active-level normalised +-2.5 dB; librimix: [-33, -25] LUFS")
    parser.add_argument("--noise", default="none", metavar="none|colored|white|pink|brown|DIR",
                        help="add noise: generated coloured noise or excerpts of files in DIR")
    parser.add_argument("--snr", default="10-20", help="noise SNR range in dB re the talkers' sum (default 10-20)")
    parser.add_argument("--speaker-rule", default=None, metavar="REGEX",
                        help="for folders: regex on the relative path whose first group is the speaker")
    parser.add_argument("--splits", default="tr,cv,tt", help="splits to make (default tr,cv,tt)")
    parser.add_argument("--split-fractions", default="0.8,0.1,0.1",
                        help="shares of the speakers in train,valid,test for inputs that name no split "
                             "(folders, tables without a split column); the split of a speaker does "
                             "not depend on --splits (default 0.8,0.1,0.1)")
    parser.add_argument("--format", choices=["float", "pcm16"], default="float",
                        help="wav sample format: float (exact sums, default) or pcm16")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    parser.add_argument("--check", choices=["auto", "full", "header"], default="auto",
                        help="validate inputs first: full decodes every file (NaN, corrupt data), "
                             "header reads headers only; auto = full up to 256 MiB of input")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")


def run(args: argparse.Namespace) -> int:
    from separation.mixing import MixConfig, make_mixtures, normalize_split

    splits = [normalize_split(s) for s in args.splits.split(",") if s.strip()]
    try:
        fractions = [float(x) for x in args.split_fractions.split(",")]
    except ValueError:
        raise VoxsepError(f"--split-fractions: cannot read {args.split_fractions!r}") from None
    if len(fractions) != 3:
        raise VoxsepError(f"--split-fractions: give 3 shares (train, valid, test), got {args.split_fractions!r}")
    weights = None
    if args.speech_weights is not None:
        try:
            weights = [float(x) for x in args.speech_weights.split(",")]
        except ValueError:
            raise VoxsepError(f"--speech-weights: cannot read {args.speech_weights!r}") from None
    elif len(args.speech) > 1:
        weights = [1.0] * len(args.speech)
    cfg = MixConfig(
        speech=args.speech[0] if len(args.speech) == 1 else args.speech, speech_weights=weights,
        out=args.out, speakers=parse_counts(args.speakers),
        n_mixtures=parse_n_mixtures(args.n_mixtures, splits), sample_rate=args.sample_rate,
        mode=args.mode, gains=args.gains, noise=args.noise, snr=parse_range(args.snr, "--snr"),
        speaker_rule=args.speaker_rule, splits=splits, split_fractions=fractions, seed=args.seed,
        workers=args.workers, format=args.format, overwrite=args.overwrite, check=args.check,
    )
    counts = make_mixtures(cfg)
    total = sum(counts.values())
    per = ", ".join(f"{s} {n}" for s, n in counts.items())
    print(f"wrote {total} mixtures ({per}) of {','.join(map(str, cfg.speakers))} talkers to {args.out}")
    return 0
