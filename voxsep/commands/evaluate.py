"""`voxsep evaluate`: score separation models (and other systems' estimates) on a mixture set.

Examples::

    voxsep evaluate --model default --data data/mix --out eval/default
    voxsep evaluate --model default --model runs/x/best.pt --data data/mix/manifest_tt.jsonl
    voxsep evaluate --estimates other=outputs/other_toolkit --data data/mix --out eval/cmp

``--data`` is a ``voxsep mix`` output folder (its ``manifest_{split}.jsonl``), a jsonl mixture
manifest, LibriMix metadata CSVs (a file, or a folder of ``*.csv``), or a wsj0-mix tree
(``ROOT/{C}speakers/wav8k/min/tt/...``, every count found). All systems are scored on the same
mixtures, with the oracle IBM/IRM baselines unless ``--no-oracle``. Rerunning with the same
``--out`` resumes. See :mod:`evaluation.runner` for the outputs and columns.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from frontend import VoxsepError
from voxsep.extras import extra_message, missing_modules

NAME = "evaluate"
HELP = "evaluate models or estimates on a mixture dataset"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", action="append", default=[], metavar="[LABEL=]NAME|CKPT",
                        help="bundled model name or checkpoint, optionally labelled (ours=runs/a/best.pt); "
                             "repeat or give a comma list to compare")
    parser.add_argument("--estimates", action="append", default=[], metavar="[NAME=]DIR",
                        help="estimates written by another system as DIR/<mixture id>/s1.wav ... sK.wav "
                             "(the layout of `voxsep separate`); repeatable")
    parser.add_argument("--data", required=True, metavar="PATH",
                        help="voxsep mix folder, jsonl mixture manifest, LibriMix CSV(s) or wsj0-mix root")
    parser.add_argument("--out", default="eval_out", metavar="DIR",
                        help="output folder; rerunning with the same folder resumes (default eval_out)")
    parser.add_argument("--split", default="tt", help="split to evaluate: tt/cv/tr (default tt)")
    parser.add_argument("--counts", default=None, metavar="LIST",
                        help="talker counts to keep, e.g. 2-5 or 2,3 (default: all present)")
    parser.add_argument("--sample-rate", type=int, default=None,
                        help="evaluation rate in Hz (default: the first model's rate, else the data's)")
    parser.add_argument("--mode", choices=["min", "max"], default="min", help="wsj0-mix mode (default min)")
    parser.add_argument("--max-mixtures", type=int, default=None, metavar="N",
                        help="evaluate only the first N mixtures")
    parser.add_argument("--workers", type=int, default=max(0, min(4, (os.cpu_count() or 1) - 1)),
                        help="metric worker processes (0: none; default: CPUs - 1, at most 4)")
    parser.add_argument("--no-oracle", action="store_true", help="leave out the IBM/IRM oracle baselines")
    parser.add_argument("--no-bss", action="store_true", help="skip SDR/SIR/SAR")
    parser.add_argument("--no-pesq", action="store_true", help="skip PESQ")
    parser.add_argument("--no-stoi", action="store_true", help="skip STOI/ESTOI")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--examples", type=int, default=3, metavar="N",
                        help="mixtures whose spectrograms are plotted (default 3)")


# ------------------------------------------------------------------------------------- data

def _parse_counts(text: str | None) -> list[int] | None:
    if not text:
        return None
    out: list[int] = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)(?:\s*-\s*(\d+))?\s*", part)
        if not m:
            raise VoxsepError(f"--counts: cannot read {part!r} (use e.g. 2-5 or 2,3)")
        out += range(int(m.group(1)), int(m.group(2) or m.group(1)) + 1)
    return sorted(set(out))


def open_dataset(path: str | os.PathLike, split: str, counts: list[int] | None,
                 sample_rate: int | None, mode: str = "min"):
    """The mixture dataset at ``path`` (format detected) and a one-line description."""
    from separation.data import LibriMixDataset, MixtureManifestDataset, Wsj0MixDataset
    from separation.mixing import normalize_split

    p = Path(path)
    split = normalize_split(split)
    if not p.exists():
        raise VoxsepError(f"{p}: no such file or folder")
    if p.is_file() and p.suffix == ".jsonl":
        return MixtureManifestDataset(p, n_src=counts, sample_rate=sample_rate), f"manifest {p}"
    if p.is_file() and p.suffix == ".csv":
        return _filtered(LibriMixDataset(p, sample_rate=sample_rate), counts), f"LibriMix CSV {p}"
    if p.is_dir():
        manifest = p / f"manifest_{split}.jsonl"
        if manifest.is_file():
            return MixtureManifestDataset(manifest, n_src=counts, sample_rate=sample_rate), f"manifest {manifest}"
        found = sorted(int(m.group(1)) for d in p.iterdir() if (m := re.fullmatch(r"(\d+)speakers", d.name)))
        if found:
            use = [c for c in found if counts is None or c in counts]
            if not use:
                raise VoxsepError(f"{p}: no {counts} speaker folders (found {found})")
            rate = sample_rate or 8000
            return (Wsj0MixDataset(p, n_src=use, split=split, sample_rate=rate, mode=mode),
                    f"wsj0-mix tree {p} ({split}, {mode}, {rate} Hz)")
        csvs = sorted((p / "metadata").glob(f"*{split}*.csv")) or sorted(p.glob("*.csv"))
        if csvs:
            return (_filtered(LibriMixDataset(csvs, sample_rate=sample_rate), counts),
                    f"LibriMix CSVs in {csvs[0].parent}")
    raise VoxsepError(f"{p}: not a mixture dataset (expected a voxsep mix folder, a .jsonl manifest, "
                      "LibriMix .csv files or a wsj0-mix tree)")


def _filtered(dataset, counts):
    if counts is not None:
        dataset.records = [r for r in dataset.records if r.n_src in counts]
    return dataset


class _Items:
    """Dataset items in the runner's form (``sample_rate`` added, ``mixture_path`` kept)."""

    def __init__(self, dataset, sample_rate: int | None, limit: int | None):
        self.dataset = dataset
        self.sample_rate = sample_rate
        self.n = len(dataset) if limit is None else min(limit, len(dataset))

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        for i in range(self.n):
            item = dict(self.dataset[i])
            rec = self.dataset.records[i]
            item["mixture_path"] = str(rec.mixture_path)
            item["sample_rate"] = self.sample_rate or self.dataset.sample_rate or rec.sample_rate \
                or _file_rate(rec.mixture_path)
            yield item


def _file_rate(path) -> int:
    from frontend import audio_info

    return audio_info(path).sample_rate


# ----------------------------------------------------------------------------------- systems

class _ModelCallables:
    """``separate`` / ``separate_with_count`` / ``count_probs`` of a loaded separation model.

    One model pass gives both the estimates and the count probabilities; ``count_probs`` returns
    those of the last ``separate`` call on the same tensor.
    """

    def __init__(self, separator):
        self.separator = separator
        self._last = None

    def separate(self, mix):
        est, probs = self.separator.separate(mix)
        self._last = (mix, probs)
        return est

    def separate_with_count(self, mix, k: int):
        return self.separator.separate(mix, num_speakers=min(int(k), self.separator.max_speakers))[0]

    def count_probs(self, mix):
        if self._last is not None and self._last[0] is mix:
            return self._last[1]
        return self.separator.count_probabilities(mix)


def _load_separator(spec: str):
    """A :class:`separation.inference.Separator` for a bundled model name or checkpoint path."""
    from separation.inference import Separator
    from voxsep.registry import load_model

    model, ckpt = load_model(spec, task="separation")
    return Separator(model, sample_rate=int(ckpt["sample_rate"]), model_name=str(spec))


def build_systems(models: list[str], estimates: list[str], sample_rate: int | None):
    """Systems for the model specs and estimate folders; returns ``(systems, model rate or None)``."""
    from evaluation.systems import CallableSystem, EstimatesDirSystem

    systems, rate = [], sample_rate
    for spec in models:
        label = None
        if "=" in spec and not Path(spec).exists():
            label, _, spec = spec.partition("=")
        sep = _load_separator(spec)
        if rate is None:
            rate = sep.sample_rate
        elif sep.sample_rate != rate:
            raise VoxsepError(f"{spec}: model runs at {sep.sample_rate} Hz but the evaluation uses {rate} Hz")
        calls = _ModelCallables(sep)
        name = label or (Path(spec).stem if ("/" in spec or os.sep in spec or spec.endswith(".pt")) else spec)
        systems.append(CallableSystem(name, calls.separate, calls.separate_with_count, calls.count_probs))
    for entry in estimates:
        name, _, folder = entry.rpartition("=") if "=" in entry else ("", "", entry)
        systems.append(EstimatesDirSystem(folder, name=name or None))
    return systems, rate


def run(args: argparse.Namespace) -> int:
    from evaluation import MetricOptions, OracleMaskSystem, evaluate_systems

    models = [m.strip() for spec in args.model for m in spec.split(",") if m.strip()]
    if not models and not args.estimates and args.no_oracle:
        raise VoxsepError("nothing to evaluate: give --model and/or --estimates (or drop --no-oracle)")
    systems, rate = build_systems(models, args.estimates, args.sample_rate)
    if not args.no_oracle:
        systems = [OracleMaskSystem("ibm"), OracleMaskSystem("irm")] + systems
    names = [s.name for s in systems]
    if len(set(names)) != len(names):
        raise VoxsepError(f"two systems share a name: {names} (use --estimates NAME=DIR)")
    dataset, description = open_dataset(args.data, args.split, _parse_counts(args.counts), rate, args.mode)
    if len(dataset) == 0:
        raise VoxsepError(f"{args.data}: no mixtures to evaluate")
    items = _Items(dataset, rate, args.max_mixtures)
    options = MetricOptions(bss=not args.no_bss, pesq=not args.no_pesq, stoi=not args.no_stoi)
    skipped = [name for name, wanted, module in (("PESQ", options.pesq, "pesq"), ("STOI", options.stoi, "pystoi"))
               if wanted and module in missing_modules("eval")]
    if skipped:
        print(f"voxsep: note: {' and '.join(skipped)} skipped: " + extra_message("they", "eval"), file=sys.stderr)
    result = evaluate_systems(items, systems, args.out, metrics=options, workers=args.workers,
                              n_examples=args.examples, plots=not args.no_plots,
                              data_description=f"{description}, {len(items)} mixtures")
    print(f"wrote {result.out_dir / 'report.md'}, summary.json, rows/*.csv"
          + ("" if args.no_plots else ", plots/"))
    return 0
