"""`voxsep separate IN... -o OUT`: separate the talkers of audio files (the count is estimated).

For each input file ``NAME.ext`` it writes ``OUT/NAME/s1.wav .. sK.wav`` (32-bit float wav at the
model's rate) and ``OUT/NAME/summary.json`` (count, count probabilities, durations, model), and
prints one line. Inputs may be files or folders (searched recursively) at any rate and channel
layout; they are read mono at the model's rate. Files longer than ``--window`` seconds are
processed window by window in bounded memory (see :mod:`separation.inference`). A file without
speech (silent, or, with ``--vad``, noise in which the voice activity detector finds no talker)
has count 0 and no source files. Bad files follow the rule of :mod:`voxsep.files`: every input is
checked first, a bad one stops the command with one line naming it (exit 2) and no output.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from frontend.errors import VoxsepError
from separation.inference import COUNT_VOTES, DEFAULT_OVERLAP_S, DEFAULT_WINDOW_S, Separator
from voxsep.files import BAD_FILE_RULE, check_inputs, staged_output
from voxsep.pipelines import enhance_folder, load_enhancer
from voxsep.registry import bundled_default, load_model, require_model

DEFAULT_MODEL = "default"


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by `separate` and `count`: the inputs and :func:`add_separator_options`."""
    parser.add_argument("inputs", nargs="+", metavar="IN", help="audio files or folders")
    add_separator_options(parser)


def add_separator_options(parser: argparse.ArgumentParser) -> None:
    """The options :func:`load_separator` reads (`separate`, `count`, `serve`)."""
    parser.add_argument("--model", default=DEFAULT_MODEL, metavar="NAME|CKPT",
                        help="bundled model name or checkpoint path (default: %(default)s)")
    parser.add_argument("--window", type=float, default=DEFAULT_WINDOW_S, metavar="S",
                        help="longer files are processed in windows of S seconds (default %(default)g)")
    parser.add_argument("--overlap", type=float, default=DEFAULT_OVERLAP_S, metavar="S",
                        help="overlap between windows in seconds (default %(default)g)")
    parser.add_argument("--count-method", choices=["head", "power"], default=None,
                        help="count head, or SVoice's power threshold on the max-count head "
                             "(default: the model's; baselines always use power)")
    parser.add_argument("--count-vote", choices=COUNT_VOTES, default="mean",
                        help="long files: average window probabilities (mean) or take the largest "
                             "window count (max) (default mean)")
    parser.add_argument("--vad", action=argparse.BooleanOptionalAction, default=None,
                        help="ask a voice activity detector (Silero VAD) first: audio without speech (noise) "
                             "has 0 talkers, and long files' windows without speech do not vote; it can also "
                             "miss real speech, so it is off by default (or set VOXSEP_VAD=1)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("-o", "--out", default="separated", metavar="OUT",
                        help="output folder (default: ./separated)")
    parser.add_argument("--num-speakers", "-k", type=int, default=None, metavar="K",
                        help="number of talkers, when known (skips counting)")
    parser.add_argument("--enhance", nargs="?", const="", default=None, metavar="NAME|CKPT",
                        help="denoise every separated talker with the WaveNet denoiser CKPT "
                             + ("(or the bundled one when CKPT is left out)" if bundled_default("enhancement") else
                                "(a checkpoint is required: no denoiser is bundled yet; train one with "
                                "recipes/tts_enhancement)"))
    parser.epilog = BAD_FILE_RULE


def load_separator(args: argparse.Namespace) -> Separator:
    """The model named by ``--model`` wrapped in a :class:`Separator` with the CLI's options."""
    if args.threads:
        torch.set_num_threads(args.threads)
    model, ckpt = load_model(args.model, task="separation")
    if args.count_method is not None:
        model.count_method = args.count_method
    if args.window <= 2 * args.overlap:
        raise VoxsepError(f"--window ({args.window} s) must be longer than twice --overlap ({args.overlap} s)")
    return Separator(model, sample_rate=int(ckpt["sample_rate"]), window=args.window, overlap=args.overlap,
                     count_vote=args.count_vote, model_name=str(args.model), vad=args.vad)


def output_names(files: list[Path]) -> list[str]:
    """One output folder name per file: the file's stem, with ``_2``, ``_3``... for repeats."""
    names, seen = [], {}
    for f in files:
        stem = f.stem
        seen[stem] = seen.get(stem, 0) + 1
        names.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
    return names


def run(args: argparse.Namespace) -> int:
    enhance_spec = (None if args.enhance is None
                    else require_model("enhancement", args.enhance, "separate --enhance", "--enhance"))
    files = [path for path, _ in check_inputs(args.inputs)]
    separator = load_separator(args)
    enhancer = load_enhancer(enhance_spec) if enhance_spec is not None else None
    if args.num_speakers is not None and not 1 <= args.num_speakers <= separator.max_speakers:
        raise VoxsepError(f"--num-speakers must be in 1..{separator.max_speakers} for this model")
    lines = []
    with staged_output(args.out) as stage:
        for path, name in zip(files, output_names(files)):
            folder = stage.path(name)
            with tqdm(total=None, unit="sample", unit_scale=True, desc=path.name, leave=False,
                      disable=None, file=sys.stderr) as bar:
                summary = separator.separate_file(path, folder, args.num_speakers, progress=bar.update)
            if enhancer is not None:
                enhance_folder(folder, summary["count"], separator.sample_rate, enhancer, name=str(enhance_spec))
            k = summary["count"]
            probs = summary["count_probabilities"]
            confidence = f", p={probs[str(k)]:.2f}" if str(k) in probs else ""
            lines.append(f"{path}: {k} talker{'s' if k != 1 else ''}{confidence} -> {stage.final(name)}")
    print("\n".join(lines))
    return 0
