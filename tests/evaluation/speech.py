"""Small speech fixtures for the evaluation tests: espeak-ng utterances, mixtures of 1..5 talkers.

Each talker is a different espeak-ng voice/pitch saying a different sentence, resampled to the
requested rate and cut/padded to a fixed length (wsj0-mix "min"-style equal-length sources).
"""
from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch

from frontend import load_audio

VOICES = [("en-us", 40), ("en-gb+f3", 75), ("en-us+m3", 25), ("en-gb-scotland+f2", 60),
          ("en-us+f4", 90), ("en-gb+m4", 35)]
SENTENCES = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "Six spoons of fresh snow peas, five thick slabs of blue cheese.",
    "We also need a small plastic snake and a big toy frog for the kids.",
    "She can scoop these things into three red bags, and we will go meet her.",
    "A large size in stockings is hard to sell in the summer months.",
]


def espeak_utterance(index: int, sample_rate: int, seconds: float, cache: Path) -> np.ndarray:
    """Utterance ``index`` (voice and sentence vary with it), ``(T,)`` float32, peak 0.5."""
    voice, pitch = VOICES[index % len(VOICES)]
    text = SENTENCES[(index * 5 + 1) % len(SENTENCES)]
    wav_path = cache / f"utt{index}.wav"
    if not wav_path.exists():
        subprocess.run(["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(150 + 7 * (index % 5)),
                        "-w", str(wav_path), text], check=True, capture_output=True)
    wav, _ = load_audio(wav_path, sample_rate=sample_rate)
    length = int(seconds * sample_rate)
    wav = wav[:length]
    wav = torch.nn.functional.pad(wav, (0, length - wav.shape[-1]))
    return (0.5 * wav / wav.abs().max()).numpy().astype(np.float32)


def make_items(counts, sample_rate: int = 8000, seconds: float = 2.0, cache: Path | None = None,
               seed: int = 0) -> list[dict]:
    """One mixture per entry of ``counts`` (talker counts), gains within +-2.5 dB."""
    cache = Path(cache or tempfile.mkdtemp(prefix="voxsep_espeak_"))
    cache.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    items = []
    for i, n_src in enumerate(counts):
        first = int(rng.integers(0, 40))
        sources = np.stack([espeak_utterance(first + j, sample_rate, seconds, cache) for j in range(n_src)])
        # shift each talker a little so the utterances do not start together
        sources = np.stack([np.roll(s, int(rng.integers(0, sample_rate // 4))) for s in sources])
        gains = 10 ** (rng.uniform(-2.5, 2.5, n_src) / 20)
        sources = (sources * gains[:, None]).astype(np.float32)
        mix = sources.sum(0)
        scale = max(1.0, np.abs(mix).max() / 0.9)
        items.append({"id": f"mix{i:03d}_{n_src}spk", "mix": torch.from_numpy(mix / scale),
                      "sources": torch.from_numpy(sources / scale), "n_src": n_src,
                      "sample_rate": sample_rate})
    return items
