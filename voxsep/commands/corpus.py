"""``voxsep corpus``: build the offline multi-voice speech corpus with TTS engines."""
from __future__ import annotations

import argparse

from frontend.errors import VoxsepError

NAME = "corpus"
HELP = "build the offline multi-voice speech corpus with TTS engines"


def _rates(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(r) for r in text.split(",") if r.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated sample rates in Hz, got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder (re-run the same command to resume)")
    parser.add_argument("--identities", type=int, default=200, help="voice identities (speakers), >= 3")
    parser.add_argument("--utterances-per-identity", type=int, default=50, metavar="K",
                        help="sentences spoken by each identity")
    parser.add_argument("--seed", type=int, default=0, help="fixes identities, splits and texts")
    parser.add_argument("--workers", type=int, default=2, help="parallel processes")
    parser.add_argument("--sentences", metavar="FILE",
                        help="UTF-8 text file, one sentence a line (default: built-in grammar)")
    parser.add_argument("--rates", type=_rates, default=(8000, 16000), help="output sample rates in Hz")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from voxsep.corpus import build_corpus

    s = build_corpus(args.out, identities=args.identities, utterances_per_identity=args.utterances_per_identity,
                     seed=args.seed, workers=args.workers, sentences_file=args.sentences, rates=args.rates,
                     progress=not args.no_progress)
    if s["utterances"] == 0:  # pragma: no cover - plan_corpus never returns an empty plan
        raise VoxsepError(f"{args.out}: nothing to build")
    engines = ", ".join(f"{e} {v['identities']}" for e, v in s["engines"].items())
    hours = " / ".join(f"{k} {v['hours']:.2f}" for k, v in s["splits"].items())
    b = s["build"]
    print(f"corpus: {s['identities']} identities ({engines}), {s['utterances']} utterances, "
          f"{s['hours']:.2f} h (train / valid / test: {hours} h) -> {args.out} "
          f"[made {b['made']}, reused {b['reused']}, {b['wall_s']:.0f} s, {b['cpu_s']:.0f} CPU s]")
    return 0
