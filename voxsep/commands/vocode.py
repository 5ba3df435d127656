"""`voxsep vocode IN... [-o OUT] --model CKPT`: audio -> log-mel -> WaveNet vocoder -> audio.

A round trip through the vocoder's mel features, to hear (and measure) what the vocoder keeps.
Inputs are resampled to the model's rate; outputs are ``OUT/<name>.wav`` at the model's rate.
``--temperature 0`` samples greedily (deterministic). No vocoder is bundled yet, so ``--model``
is required until one is. Bad files follow the rule of :mod:`voxsep.files`: every input is checked
first, a bad one stops the command with one line naming it (exit 2) and no output.
"""
from __future__ import annotations

import argparse
import sys

from voxsep.files import BAD_FILE_RULE
from voxsep.registry import model_requirement

NAME = "vocode"
HELP = "resynthesize audio through mel -> WaveNet vocoder"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="IN", help="audio files or folders")
    parser.add_argument("-o", "--out", default="vocoded", help="output folder (default: vocoded/)")
    parser.add_argument("--model", default=None, metavar="NAME|CKPT", help=model_requirement("vocoder"))
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (0 = greedy)")
    parser.add_argument("--seed", type=int, default=0, help="random seed for sampling")
    parser.epilog = BAD_FILE_RULE


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from frontend import load_audio, save_audio
    from frontend.errors import VoxsepError
    from voxsep.commands.enhance import collect_inputs
    from voxsep.files import staged_output
    from voxsep.pipelines import load_vocoder
    from voxsep.registry import require_model

    if args.temperature < 0:
        raise VoxsepError(f"--temperature must be >= 0, got {args.temperature}")
    spec = require_model("vocoder", args.model, "vocode")
    pairs = collect_inputs(args.inputs)
    vocoder = load_vocoder(spec)
    generator = torch.Generator().manual_seed(args.seed)
    with staged_output(args.out) as stage:
        for src, dst in tqdm(pairs, desc="vocode", unit="file", disable=True if len(pairs) < 2 else None):
            wav, sr = load_audio(src, sample_rate=vocoder.sample_rate)
            mel = vocoder.mel_of(wav)
            out = vocoder.vocode(mel, n_samples=wav.shape[-1], temperature=args.temperature, generator=generator,
                                 progress=sys.stderr.isatty())
            save_audio(stage.path(dst), out, vocoder.sample_rate)
    print("\n".join(str(stage.final(dst)) for _, dst in pairs))
    return 0
