"""No absolute machine paths in what we ship or document: the docs (README, docs/, recipe READMEs
and run.sh files, model cards), the package data (models, examples, static files), and the
strings stored in bundled checkpoints (``train_config``, ``model_config``, ...). Paths there are
relative to the repository root (``data/corpus``, ``runs/x``) or placeholders (``path/to/...``).
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

#: An absolute path of some machine: /home/..., /root/..., /tmp/..., /work/..., C:\..., ~user/...
ABSOLUTE = re.compile(
    r"(?<![A-Za-z0-9_.~$:/\\-])"
    r"(/(?:home|root|tmp|work|workspace|Users|mnt|media|scratch|data|datasets|opt|srv|var|private|nfs|gpfs|lustre)"
    r"/[^\s'\"`)\]>,;]+"
    r"|[A-Za-z]:\\[^\s'\"`)\]>,;]+)")

DOC_GLOBS = ["README.md", "docs/**/*.md", "recipes/**/README.md", "recipes/**/*.sh", "recipes/**/*.yaml",
             "voxsep/models/*.md"]
PACKAGE_DATA_GLOBS = ["voxsep/models/*.json", "voxsep/examples/*.json", "voxsep/examples/*.jsonl",
                      "voxsep/web/static/*"]
CHECKPOINT_GLOB = "voxsep/models/*.pt"


def absolute_paths(text: str) -> list[str]:
    """The absolute machine paths in ``text``."""
    return ABSOLUTE.findall(text)


def checkpoint_strings(obj, where: str = "") -> list[tuple[str, str]]:
    """``(key path, string)`` for every string in a checkpoint dict, tensors skipped."""
    if isinstance(obj, dict):
        return [item for k, v in obj.items() if k != "state_dict" for item in checkpoint_strings(v, f"{where}.{k}")]
    if isinstance(obj, (list, tuple)):
        return [item for i, v in enumerate(obj) for item in checkpoint_strings(v, f"{where}[{i}]")]
    if isinstance(obj, str):
        return [(where.lstrip("."), obj)]
    return []


def checkpoint_violations(ckpt: dict) -> list[str]:
    return [f"{key} = {value!r}" for key, value in checkpoint_strings(ckpt) if absolute_paths(value)]


def _files(globs: list[str]) -> list[Path]:
    return sorted({p for g in globs for p in ROOT.glob(g) if p.is_file()})


@pytest.mark.parametrize("kind, globs", [("docs", DOC_GLOBS), ("package data", PACKAGE_DATA_GLOBS)])
def test_docs_and_package_data_hold_no_absolute_paths(kind, globs):
    files = _files(globs)
    assert files or kind == "package data"
    bad = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary data (images, audio) has no paths to read
        for number, line in enumerate(text.splitlines(), 1):
            bad += [f"{path.relative_to(ROOT)}:{number}: {p}" for p in absolute_paths(line)]
    assert not bad, f"absolute paths in the {kind}:\n" + "\n".join(bad)


@pytest.mark.parametrize("path", _files([CHECKPOINT_GLOB]), ids=lambda p: p.name)
def test_bundled_checkpoints_store_no_absolute_paths(path):
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert "train_config" in ckpt and checkpoint_strings(ckpt["train_config"])
    assert checkpoint_violations(ckpt) == []


def test_the_scanner_catches_planted_paths_and_spares_relative_ones():
    planted = ("CORPUS=/work/data/corpus recipes/x/run.sh; cp /root/runs/a/best.pt .; see (/tmp/out/report.md)\n"
               "`voxsep evaluate --data /home/ann/mix` or C:\\Users\\ann\\mix or /Users/bob/x.wav")
    assert absolute_paths(planted) == ["/work/data/corpus", "/root/runs/a/best.pt", "/tmp/out/report.md",
                                       "/home/ann/mix", "C:\\Users\\ann\\mix", "/Users/bob/x.wav"]
    fine = ("data/corpus runs/final/best.pt ../shared/speech/manifest.csv path/to/wsj0-mix "
            "https://example.org/home/x 1/f noise, SI-SNR / SDR, s1.wav .. sK.wav, ~/.cache/voxsep, $HOME/data/x")
    assert absolute_paths(fine) == []
    ckpt = {"state_dict": {"w": torch.zeros(2)}, "model_config": {"n": 2},
            "train_config": {"run_dir": "runs/x", "data": {"train": {"utterances": "/scratch/me/corpus.jsonl"}},
                             "list": ["data/a", "/mnt/b/c"]}}
    assert checkpoint_violations(ckpt) == ["train_config.data.train.utterances = '/scratch/me/corpus.jsonl'",
                                           "train_config.list[1] = '/mnt/b/c'"]
