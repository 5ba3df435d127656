"""`voxsep vocode IN... [-o OUT] [--model NAME|CKPT]`: audio -> log-mel -> WaveNet vocoder -> audio.

A round trip through the vocoder's mel features, to hear (and measure) what the vocoder keeps.
Inputs are resampled to the model's rate; outputs are ``OUT/<name>.wav`` at the model's rate,
written atomically. ``--temperature 0`` samples greedily (deterministic).
"""
from __future__ import annotations

import argparse
from pathlib import Path

NAME = "vocode"
HELP = "resynthesize audio through mel -> WaveNet vocoder"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="IN", help="audio files or folders")
    parser.add_argument("-o", "--out", default="vocoded", help="output folder (default: vocoded/)")
    parser.add_argument("--model", default="default", help="bundled model name or checkpoint path")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (0 = greedy)")
    parser.add_argument("--seed", type=int, default=0, help="random seed for sampling")


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from frontend import load_audio, save_audio
    from frontend.errors import VoxsepError
    from voxsep.commands.enhance import collect_inputs
    from voxsep.pipelines import load_vocoder

    if args.temperature < 0:
        raise VoxsepError(f"--temperature must be >= 0, got {args.temperature}")
    pairs = collect_inputs(args.inputs, Path(args.out))
    vocoder = load_vocoder(args.model)
    generator = torch.Generator().manual_seed(args.seed)
    for src, dst in tqdm(pairs, desc="vocode", unit="file", disable=len(pairs) < 2):
        wav, sr = load_audio(src, sample_rate=vocoder.sample_rate)
        mel = vocoder.mel_of(wav)
        out = vocoder.vocode(mel, n_samples=wav.shape[-1], temperature=args.temperature, generator=generator,
                             progress=True)
        dst.parent.mkdir(parents=True, exist_ok=True)
        save_audio(dst, out, vocoder.sample_rate)
        print(dst)
    return 0
