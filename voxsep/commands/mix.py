"""`voxsep mix`: make wsj0-mix / LibriMix style mixtures of 1..C talkers (:mod:`voxsep.mixtures`),
or noisy/clean pairs.

Example::

    voxsep mix --speech corpus/manifest_8k.jsonl --out data/mix --speakers 1-5 \\
        --n-mixtures tr=2000,cv=500,tt=300 --gains wsj0 --mode min

With ``--enhancement CONFIG.yaml`` it writes noisy/clean pairs for evaluating denoisers instead,
made with the data settings of that enhancement training config (speaker split, noise recordings
split by file, generated noise, SNR range, rooms; :mod:`voxsep.noisy_pairs`)::

    voxsep mix --enhancement recipes/real_enhancement/conf.yaml --speech DATA/speech --noise DATA/noise \\
        --out data/real_enhancement/valid --splits cv --n-mixtures 200

``--speech``, ``--noise``, ``--snr``, ``--split-fractions`` and ``--sample-rate`` then replace the
config's values when given; ``--speakers``, ``--gains``, ``--mode`` and the other mixing options do
not apply.
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
    from frontend.utterances import normalize_split

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
    parser.add_argument("--enhancement", default=None, metavar="CONFIG.yaml",
                        help="write noisy/clean pairs for denoisers with the data settings of this enhancement "
                             "training config (its speaker split, noise recordings, SNR range, rooms)")
    parser.add_argument("--max-seconds", type=float, default=8.0,
                        help="with --enhancement: utterances are cut to this length (default 8)")
    parser.add_argument("--speech", action="append", metavar="TABLE|MANIFEST|DIR",
                        help="utterance table (CSV: path, speaker, ...), manifest (jsonl), a corpus "
                             "folder with manifest_*.jsonl, a LibriSpeech-style folder (speaker/chapter/*.flac) or any folder of "
                             "single-talker files (with --speaker-rule); repeat it to mix several sources")
    parser.add_argument("--speech-weights", default=None, metavar="W1,W2,...",
                        help="with several --speech sources: each source's share of the talkers, e.g. "
                             "0.7,0.3 (default: equal)")
    parser.add_argument("--corpus", action="append", default=None, metavar="NAME",
                        help="keep only this corpus of an utterance table (its corpus column; repeatable), "
                             "after the split rule ran over the whole table: e.g. the held-back LibriSpeech "
                             "speakers alone")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (must not exist or be empty)")
    parser.add_argument("--speakers", default="1-5", help="talker counts, e.g. 1-5 or 2,3,10 (default 1-5)")
    parser.add_argument("--n-mixtures", default="100", metavar="N",
                        help="mixtures per count and split: N, or tr=N,cv=N,tt=N (default 100)")
    parser.add_argument("--sample-rate", type=int, default=None,
                        help="output rate in Hz (default 8000; --enhancement: the config's)")
    parser.add_argument("--mode", choices=["min", "max"], default="min",
                        help="min: truncate to the shortest utterance; max: pad to the longest")
    parser.add_argument("--gains", choices=["wsj0", "librimix"], default="wsj0",
                        help="wsj0: active-level normalised +-2.5 dB; librimix: [-33, -25] LUFS")
    parser.add_argument("--noise", default=None, metavar="none|colored|white|pink|brown|DIR",
                        help="add noise: generated coloured noise or excerpts of files in DIR (default none; "
                             "--enhancement: noise recordings, a folder or table, none for generated noise only)")
    parser.add_argument("--snr", default=None,
                        help="noise SNR range in dB re the talkers' sum (default 10-20; --enhancement: the config's)")
    parser.add_argument("--speaker-rule", default=None, metavar="REGEX",
                        help="for folders: regex on the relative path whose first group is the speaker")
    parser.add_argument("--splits", default=None, help="splits to make (default tr,cv,tt; --enhancement: cv)")
    parser.add_argument("--split-fractions", default=None,
                        help="shares of the speakers in train,valid,test for inputs that name no split "
                             "(folders, tables without a split column); the split of a speaker does "
                             "not depend on --splits (default 0.8,0.1,0.1; --enhancement: the config's)")
    parser.add_argument("--format", choices=["float", "pcm16"], default="float",
                        help="wav sample format: float (exact sums, default) or pcm16")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    parser.add_argument("--check", choices=["auto", "full", "header"], default="auto",
                        help="validate inputs first: full decodes every file (NaN, corrupt data), "
                             "header reads headers only; auto = full up to 256 MiB of input")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")


def _fractions(text: str) -> list[float]:
    try:
        fractions = [float(x) for x in text.split(",")]
    except ValueError:
        raise VoxsepError(f"--split-fractions: cannot read {text!r}") from None
    if len(fractions) != 3:
        raise VoxsepError(f"--split-fractions: give 3 shares (train, valid, test), got {text!r}")
    return fractions


def run(args: argparse.Namespace) -> int:
    if args.enhancement:
        return _run_enhancement(args)
    from frontend.utterances import normalize_split
    from voxsep.mixtures import MixConfig, make_mixtures

    if not args.speech:
        raise VoxsepError("--speech is required (an utterance table, manifest or folder)")
    splits = [normalize_split(s) for s in (args.splits or "tr,cv,tt").split(",") if s.strip()]
    fractions = _fractions(args.split_fractions or "0.8,0.1,0.1")
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
        n_mixtures=parse_n_mixtures(args.n_mixtures, splits), sample_rate=args.sample_rate or 8000,
        mode=args.mode, gains=args.gains, noise=args.noise or "none", snr=parse_range(args.snr or "10-20", "--snr"),
        speaker_rule=args.speaker_rule, splits=splits, split_fractions=fractions, seed=args.seed,
        workers=args.workers, format=args.format, overwrite=args.overwrite, check=args.check,
        corpora=args.corpus,
    )
    counts = make_mixtures(cfg)
    total = sum(counts.values())
    per = ", ".join(f"{s} {n}" for s, n in counts.items())
    print(f"wrote {total} mixtures ({per}) of {','.join(map(str, cfg.speakers))} talkers to {args.out}")
    return 0


def _run_enhancement(args: argparse.Namespace) -> int:
    """``--enhancement CONFIG``: noisy/clean pairs with the config's data settings (voxsep.noisy_pairs)."""
    import importlib.util

    from frontend.utterances import normalize_split
    from voxsep.extras import extra_message

    if importlib.util.find_spec("yaml") is None:  # the one module of [train] this needs
        raise VoxsepError(extra_message("voxsep mix --enhancement (a YAML config)", "train"))
    from engine.config import read_yaml
    from voxsep.noisy_pairs import write_noisy_pairs

    config = read_yaml(args.enhancement)
    if config.get("task") != "enhancement":
        raise VoxsepError(f"{args.enhancement}: not an enhancement config (task: {config.get('task')!r})")
    data = dict(config.get("data") or {})
    if args.speech:
        if len(args.speech) > 1:
            raise VoxsepError("--enhancement takes one --speech source")
        data["manifest"] = args.speech[0]
    if args.noise is not None:
        data["noise_files"] = None if args.noise == "none" else args.noise
    if args.snr is not None:
        data["snr_db"] = list(parse_range(args.snr, "--snr"))
    if args.split_fractions is not None:
        data["fractions"] = _fractions(args.split_fractions)
    splits = [normalize_split(s) for s in (args.splits or "cv").split(",") if s.strip()]
    rate = int(args.sample_rate or config.get("sample_rate") or 16000)
    counts = write_noisy_pairs(data, rate, args.out, parse_n_mixtures(args.n_mixtures, splits),
                               max_seconds=args.max_seconds, seed=args.seed, overwrite=args.overwrite)
    per = ", ".join(f"{s} {n}" for s, n in counts.items())
    print(f"wrote {sum(counts.values())} noisy/clean pairs ({per}) at {rate} Hz to {args.out}")
    return 0
