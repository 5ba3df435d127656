"""`voxsep enhance IN... [-o OUT] [--model NAME|CKPT]`: denoise speech with the WaveNet denoiser.

Inputs are audio files or folders (searched recursively). Each output is written atomically as
``OUT/<name>.wav`` (folders keep their relative layout) at the input's sample rate; multichannel
input is mixed down to mono. Every input is checked before any work starts, so a bad file stops
the command with one line naming it and no outputs.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from frontend.errors import VoxsepError

NAME = "enhance"
HELP = "remove noise from speech with the WaveNet denoiser"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="IN", help="audio files or folders")
    parser.add_argument("-o", "--out", default="enhanced", help="output folder (default: enhanced/)")
    parser.add_argument("--model", default="default", help="bundled model name or checkpoint path")


def collect_inputs(inputs: list[str], out_dir: Path, suffix: str = ".wav") -> list[tuple[Path, Path]]:
    """``(input file, output file)`` pairs; checks every input is readable audio; no duplicates."""
    from frontend import audio_info, find_audio_files

    pairs: list[tuple[Path, Path]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = find_audio_files(path)
            if not files:
                raise VoxsepError(f"{path}: no audio files in this folder")
            pairs += [(f, out_dir / f.relative_to(path).with_suffix(suffix)) for f in files]
        else:
            pairs.append((path, out_dir / (path.stem + suffix)))
    seen: dict[Path, Path] = {}
    for src, dst in pairs:
        audio_info(src)  # raises AudioError naming the file
        if dst in seen:
            raise VoxsepError(f"{src}: its output {dst} would overwrite the output of {seen[dst]}")
        seen[dst] = src
    return pairs


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from frontend import load_audio, save_audio
    from voxsep.pipelines import enhance_sources, load_enhancer

    out_dir = Path(args.out)
    pairs = collect_inputs(args.inputs, out_dir)
    enhancer = load_enhancer(args.model)
    for src, dst in tqdm(pairs, desc="enhance", unit="file", disable=len(pairs) < 2):
        wav, sr = load_audio(src)
        clean = enhance_sources(wav.unsqueeze(0), sr, enhancer)[0]
        dst.parent.mkdir(parents=True, exist_ok=True)
        save_audio(dst, clean.clamp(-1.0, 1.0), sr)
        print(dst)
    return 0
