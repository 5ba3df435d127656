"""`voxsep enhance IN... [-o OUT] [--model NAME|CKPT]`: denoise speech with the WaveNet denoiser.

Inputs are audio files or folders (searched recursively). Each output is ``OUT/<name>.wav``
(folders keep their relative layout) at the input's sample rate; multichannel input is mixed down
to mono. The output is scaled down if it would clip (:func:`voxsep.pipelines.denoise`, as
``separate --enhance``). Without ``--model`` it uses the bundled denoiser ``default``.
Bad files follow the rule of :mod:`voxsep.files`: every input is checked first, a bad one stops
the command with one line naming it (exit 2) and no output.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from frontend.errors import VoxsepError
from voxsep.files import BAD_FILE_RULE, check_inputs
from voxsep.registry import model_requirement

NAME = "enhance"
HELP = "remove noise from speech with the WaveNet denoiser"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="IN", help="audio files or folders")
    parser.add_argument("-o", "--out", default="enhanced", help="output folder (default: enhanced/)")
    parser.add_argument("--model", default=None, metavar="NAME|CKPT", help=model_requirement("enhancement"))
    parser.epilog = BAD_FILE_RULE


def collect_inputs(inputs: list[str], suffix: str = ".wav") -> list[tuple[Path, Path]]:
    """``(input file, output path relative to OUT)`` pairs, every input checked (rule of
    :mod:`voxsep.files`); two inputs that would write the same output are refused."""
    pairs = [(f, f.relative_to(folder).with_suffix(suffix) if folder is not None else Path(f.stem + suffix))
             for f, folder in check_inputs(inputs)]
    seen: dict[Path, Path] = {}
    for src, dst in pairs:
        if dst in seen:
            raise VoxsepError(f"{src}: its output {dst} would overwrite the output of {seen[dst]}")
        seen[dst] = src
    return pairs


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from frontend import load_audio, save_audio
    from voxsep.files import staged_output
    from voxsep.pipelines import denoise, load_enhancer
    from voxsep.registry import require_model

    spec = require_model("enhancement", args.model, "enhance")
    pairs = collect_inputs(args.inputs)
    enhancer = load_enhancer(spec)
    with staged_output(args.out) as stage:
        for src, dst in tqdm(pairs, desc="enhance", unit="file", disable=True if len(pairs) < 2 else None):
            wav, sr = load_audio(src)
            save_audio(stage.path(dst), denoise(wav.unsqueeze(0), sr, enhancer)[0], sr)
    print("\n".join(str(stage.final(dst)) for _, dst in pairs))
    return 0
