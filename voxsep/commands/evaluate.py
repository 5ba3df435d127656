"""`voxsep evaluate`: score separation models, denoisers or vocoders, with their baselines.

Examples::

    voxsep evaluate --model default --data data/mix --out eval/default
    voxsep evaluate --model default --model runs/x/best.pt --data data/mix/manifest_tt.jsonl
    voxsep evaluate --estimates other=outputs/other_toolkit --data data/mix --out eval/cmp
    voxsep evaluate --table eval/a/summary.json eval/b/summary.json --system ours
    voxsep evaluate --task enhancement --model ours=runs/enh/best.pt --data path/to/vctk-enhance --out eval/enh
    voxsep evaluate --task vocoder --model runs/voc/best.pt --data DATA/speech --split valid --out eval/voc

Separation (default ``--task``): ``--data`` is a ``voxsep mix`` output folder (its
``manifest_{split}.jsonl``), a jsonl mixture manifest, LibriMix metadata CSVs (a file, or a folder
of ``*.csv``), or a wsj0-mix tree (``ROOT/{C}speakers/wav8k/min/tt/...``, every count found). All
systems are scored on the same mixtures, with the oracle IBM/IRM baselines unless ``--no-oracle``.
Models run as ``voxsep separate`` runs them: one pass up to ``--window`` seconds, longer mixtures
window by window (:meth:`separation.inference.Separator.separate_windowed`; ``--window 0``: one pass).
Rerunning with the same ``--out`` resumes. See :mod:`evaluation.runner` for the outputs and columns.
``--table SUMMARY.json ...`` prints the compact per-count table of finished runs instead.

Enhancement: ``--data`` holds noisy/clean pairs (a ``noisy/`` + ``clean/`` folder as
VoiceBank-DEMAND, or the ``pairs_<split>.csv`` of ``voxsep mix --enhancement``); the rows are the
noisy input, the baselines (``--baselines``) and each ``--model`` denoiser checkpoint, run as
``voxsep enhance`` runs it (:func:`voxsep.pipelines.denoise`). See :mod:`evaluation.enhancement`.

Vocoder: ``--data`` is an utterance table, manifest or folder (``--split`` of the project's speaker
split, ``--split-fractions`` for records that name none); one ``--model`` vocoder against
Griffin-Lim from the same log-mel. See :mod:`evaluation.vocoding`.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

from frontend import VoxsepError
from separation.inference import DEFAULT_OVERLAP_S, DEFAULT_WINDOW_S
from voxsep.extras import extra_message, missing_modules

NAME = "evaluate"
HELP = "evaluate separation models, denoisers or vocoders (and estimates) against baselines"
TASKS = ("separation", "enhancement", "vocoder")
DEFAULT_BASELINES = "wiener,stft_wiener,spectral_gating"
VOCODER_ITEMS = 20  # default --max-items of the vocoder (generation is slow)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", choices=TASKS, default="separation",
                        help="what the models do (default separation); enhancement: denoisers on noisy/clean "
                             "pairs; vocoder: audio -> log-mel -> vocoder against Griffin-Lim")
    parser.add_argument("--model", action="append", default=[], metavar="[LABEL=]NAME|CKPT",
                        help="bundled model name or checkpoint, optionally labelled (ours=runs/a/best.pt); "
                             "repeat or give a comma list to compare")
    parser.add_argument("--estimates", action="append", default=[], metavar="[NAME=]DIR",
                        help="separation: estimates written by another system as DIR/<mixture id>/s1.wav ... "
                             "sK.wav (the layout of `voxsep separate`); repeatable")
    parser.add_argument("--data", default=None, metavar="PATH",
                        help="separation: voxsep mix folder, jsonl mixture manifest, LibriMix CSV(s) or wsj0-mix "
                             "root; enhancement: noisy/clean pairs (folder with noisy/ and clean/, or pairs CSV); "
                             "vocoder: utterance table, manifest or folder")
    parser.add_argument("--table", nargs="+", default=None, metavar="SUMMARY.json",
                        help="print the compact per-count table of finished separation runs (their "
                             "summary.json) and stop")
    parser.add_argument("--system", action="append", default=None, metavar="NAME",
                        help="with --table: keep only these systems (repeatable)")
    parser.add_argument("--out", default="eval_out", metavar="DIR",
                        help="output folder (default eval_out); a separation run resumes in the same folder")
    parser.add_argument("--split", default=None,
                        help="split to evaluate: tt/cv/tr (default tt; enhancement: the folder's only "
                             "pairs_<split>.csv)")
    parser.add_argument("--counts", default=None, metavar="LIST",
                        help="talker counts to keep, e.g. 2-5 or 2,3 (default: all present)")
    parser.add_argument("--sample-rate", type=int, default=None,
                        help="evaluation rate in Hz (default: the first model's rate, else the data's; "
                             "enhancement: the data's)")
    parser.add_argument("--mode", choices=["min", "max"], default="min", help="wsj0-mix mode (default min)")
    parser.add_argument("--max-items", "--max-mixtures", dest="max_items", type=int, default=None, metavar="N",
                        help=f"evaluate only the first N mixtures, pairs or utterances (vocoder default "
                             f"{VOCODER_ITEMS})")
    parser.add_argument("--workers", type=int, default=max(0, min(4, (os.cpu_count() or 1) - 1)),
                        help="separation: metric worker processes (0: none; default: CPUs - 1, at most 4)")
    parser.add_argument("--no-oracle", action="store_true", help="leave out the IBM/IRM oracle baselines")
    parser.add_argument("--baselines", default=DEFAULT_BASELINES, metavar="LIST",
                        help=f"enhancement: baseline rows, or none (default {DEFAULT_BASELINES}; spectral "
                             "gating needs the [eval] extra)")
    parser.add_argument("--window", type=float, default=DEFAULT_WINDOW_S, metavar="S",
                        help="separation: mixtures longer than S seconds are separated window by window, as "
                             "`voxsep separate --window` does (default %(default)g, its default); 0: always one pass")
    parser.add_argument("--overlap", type=float, default=DEFAULT_OVERLAP_S, metavar="S",
                        help="separation: overlap between windows in seconds (default %(default)g)")
    parser.add_argument("--no-bss", action="store_true", help="skip SDR/SIR/SAR")
    parser.add_argument("--no-pesq", action="store_true", help="skip PESQ")
    parser.add_argument("--no-stoi", action="store_true", help="skip STOI/ESTOI")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--examples", type=int, default=3, metavar="N",
                        help="mixtures, pairs or utterances whose spectrograms (and enhancement/vocoder "
                             "audio) are written (default 3)")
    parser.add_argument("--max-seconds", type=float, default=3.0,
                        help="vocoder: utterances are cut to this length (default 3)")
    parser.add_argument("--temperature", type=float, default=1.0, help="vocoder: sampling temperature (default 1)")
    parser.add_argument("--split-fractions", default=None,
                        help="vocoder: speaker shares of train,valid,test for records that name no split "
                             "(the rule of voxsep mix; default: the checkpoint's training data.fractions, "
                             "else 0.8,0.1,0.1)")


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
    from frontend.utterances import normalize_split

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
        est, probs = self.separator.separate_windowed(mix)
        self._last = (mix, probs)
        return est

    def separate_with_count(self, mix, k: int):
        return self.separator.separate_windowed(mix, num_speakers=min(int(k), self.separator.max_speakers))[0]

    def count_probs(self, mix):
        if self._last is not None and self._last[0] is mix:
            return self._last[1]
        return self.separator.count_probabilities(mix)


def _window_note(models: list[str], args: argparse.Namespace) -> str:
    """How the models met long mixtures, for the report."""
    if not models:
        return ""
    if not args.window:
        return "; models: one pass per mixture"
    return (f"; models: one pass up to {args.window:g} s, longer mixtures in windows of {args.window:g} s "
            f"overlapping by {args.overlap:g} s (as `voxsep separate`)")


def _load_separator(spec: str, window: float = DEFAULT_WINDOW_S, overlap: float = DEFAULT_OVERLAP_S):
    """A :class:`separation.inference.Separator` for a bundled model name or checkpoint path, with
    ``voxsep separate``'s windows (``window`` 0: one pass whatever the length)."""
    import math

    from separation.inference import Separator
    from voxsep.registry import load_model

    if window < 0 or overlap < 0 or (window and window <= 2 * overlap):
        raise VoxsepError(f"--window ({window} s) must be 0 or longer than twice --overlap ({overlap} s)")
    model, ckpt = load_model(spec, task="separation")
    return Separator(model, sample_rate=int(ckpt["sample_rate"]), model_name=str(spec),
                     window=window or math.inf, overlap=overlap)


def build_systems(models: list[str], estimates: list[str], sample_rate: int | None,
                  window: float = DEFAULT_WINDOW_S, overlap: float = DEFAULT_OVERLAP_S):
    """Systems for the model specs and estimate folders; returns ``(systems, model rate or None)``.
    Models run as ``voxsep separate`` runs them: one pass up to ``window`` seconds, windows beyond
    (``window`` 0: always one pass)."""
    from evaluation.systems import CallableSystem, EstimatesDirSystem

    systems, rate = [], sample_rate
    for spec in models:
        label, spec = _label(spec)
        sep = _load_separator(spec, window, overlap)
        if rate is None:
            rate = sep.sample_rate
        elif sep.sample_rate != rate:
            raise VoxsepError(f"{spec}: model runs at {sep.sample_rate} Hz but the evaluation uses {rate} Hz")
        calls = _ModelCallables(sep)
        name = label or _system_name(spec)
        systems.append(CallableSystem(name, calls.separate, calls.separate_with_count, calls.count_probs))
    for entry in estimates:
        name, _, folder = entry.rpartition("=") if "=" in entry else ("", "", entry)
        systems.append(EstimatesDirSystem(folder, name=name or None))
    return systems, rate


def _label(spec: str) -> tuple[str | None, str]:
    """``LABEL=SPEC`` -> (label, spec); a path that exists keeps its ``=``."""
    if "=" in spec and not Path(spec).exists():
        label, _, spec = spec.partition("=")
        return label, spec
    return None, spec


def _system_name(spec: str) -> str:
    return Path(spec).stem if ("/" in spec or os.sep in spec or spec.endswith(".pt")) else spec


def _model_specs(args) -> list[str]:
    return [m.strip() for spec in args.model for m in spec.split(",") if m.strip()]


def _note_missing(what: list[str]) -> None:
    if what:
        print(f"voxsep: note: {' and '.join(what)} skipped: " + extra_message("they", "eval"), file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    if args.table:
        return _run_table(args)
    if args.data is None:
        raise VoxsepError("--data is required (or --table SUMMARY.json to print a finished run's table)")
    if args.task == "enhancement":
        return _run_enhancement(args)
    if args.task == "vocoder":
        return _run_vocoder(args)
    return _run_separation(args)


def _run_table(args) -> int:
    from evaluation.report import count_table

    summaries = []
    for path in args.table:
        try:
            summaries.append(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise VoxsepError(f"{path}: cannot read summary ({err.__class__.__name__})") from None
        if not isinstance(summaries[-1], dict) or "results" not in summaries[-1]:
            raise VoxsepError(f"{path}: not a summary.json of a separation evaluation")
    print(count_table(summaries, args.system), end="")
    return 0


def _run_enhancement(args) -> int:
    import torch

    from evaluation.enhancement import EnhancementSystem, baseline_systems, evaluate_enhancement, read_pairs
    from voxsep.pipelines import denoise, load_enhancer

    if args.estimates:
        raise VoxsepError("--estimates is for --task separation")
    pairs = read_pairs(args.data, args.split)
    if args.max_items is not None:
        pairs = pairs[: max(0, args.max_items)]
    names = [b.strip() for b in args.baselines.split(",") if b.strip() and b.strip() != "none"]
    systems = baseline_systems(names)
    missing = ["PESQ"] * (not args.no_pesq and "pesq" in missing_modules("eval")) \
        + ["STOI"] * (not args.no_stoi and "pystoi" in missing_modules("eval")) \
        + ["spectral gating"] * ("spectral_gating" in names and "noisereduce" in missing_modules("eval"))
    _note_missing(missing)
    for spec in _model_specs(args):
        label, spec = _label(spec)
        enhancer = load_enhancer(spec)

        def enhance(noisy, sample_rate, enhancer=enhancer):
            est = denoise(torch.from_numpy(noisy).float()[None], sample_rate, enhancer)[0]
            return est.double().numpy()

        systems.append(EnhancementSystem(label or _system_name(spec), enhance))
    result = evaluate_enhancement(pairs, systems, args.out, args.sample_rate, pesq=not args.no_pesq,
                                  stoi=not args.no_stoi, n_examples=args.examples, plots=not args.no_plots,
                                  data_description=f"{args.data}, {len(pairs)} noisy/clean pairs")
    print(result.table, end="")
    print(f"wrote {result.out_dir / 'results.md'}, results.json" + ("" if args.no_plots else ", plots/"))
    return 0


def _run_vocoder(args) -> int:
    import math

    import torch

    from evaluation.vocoding import MelSettings, evaluate_vocoder
    from frontend.utterances import read_utterances
    from generation.losses import discretized_logistic_mixture_nll, mulaw_cross_entropy
    from voxsep.registry import load_model

    specs = _model_specs(args)
    if len(specs) != 1 or args.estimates:
        raise VoxsepError("--task vocoder takes one --model (a vocoder checkpoint) and no --estimates")
    label, spec = _label(specs[0])
    vocoder, ckpt = load_model(spec, "vocoder")
    vocoder.sample_rate = int(ckpt["sample_rate"])
    if args.split_fractions is not None:
        try:
            fractions = [float(x) for x in args.split_fractions.split(",")]
        except ValueError:
            raise VoxsepError(f"--split-fractions: cannot read {args.split_fractions!r}") from None
    else:  # the split the vocoder was trained with: its held-back speakers stay held back
        train_data = (ckpt.get("train_config") or {}).get("data") or {}
        fractions = list(train_data.get("fractions") or (0.8, 0.1, 0.1))
    c = vocoder.config
    settings = MelSettings(vocoder.sample_rate, c.n_fft, c.hop_length, c.n_mels, c.f_min, c.f_max)
    split = args.split or "tt"
    utts = sorted(read_utterances(args.data, split, sample_rate=vocoder.sample_rate, fractions=fractions),
                  key=lambda u: str(u.path))
    utts = utts[: VOCODER_ITEMS if args.max_items is None else max(0, args.max_items)]
    if not utts:
        raise VoxsepError(f"{args.data}: no utterances in split {split}")
    generator = torch.Generator().manual_seed(0)

    def vocode(wav):
        return vocoder.vocode(vocoder.mel_of(wav), n_samples=wav.shape[-1], temperature=args.temperature,
                              generator=generator)

    @torch.no_grad()
    def bits_per_sample(wav):
        out = vocoder(wav[None], vocoder.mel_of(wav)[None])
        if c.wavenet.output == "mulaw":
            return float(mulaw_cross_entropy(out, wav[None])) / math.log(2)
        return float(discretized_logistic_mixture_nll(out, wav[None])) / math.log(2)

    missing = ["PESQ"] * ("pesq" in missing_modules("eval")) + ["STOI"] * ("pystoi" in missing_modules("eval"))
    _note_missing(missing)
    result = evaluate_vocoder([u.path for u in utts], settings, vocode, args.out, bits_per_sample=bits_per_sample,
                              max_seconds=args.max_seconds, n_examples=args.examples,
                              description=f"{label or spec} on {args.data} ({split}, {len(utts)} utterances)")
    print(f"wrote {Path(args.out) / 'results.md'}, results.json ({result['n']} utterances)")
    return 0


def _run_separation(args: argparse.Namespace) -> int:
    from evaluation import MetricOptions, OracleMaskSystem, evaluate_systems

    models = _model_specs(args)
    if not models and not args.estimates and args.no_oracle:
        raise VoxsepError("nothing to evaluate: give --model and/or --estimates (or drop --no-oracle)")
    systems, rate = build_systems(models, args.estimates, args.sample_rate, args.window, args.overlap)
    if not args.no_oracle:
        systems = [OracleMaskSystem("ibm"), OracleMaskSystem("irm")] + systems
    names = [s.name for s in systems]
    if len(set(names)) != len(names):
        raise VoxsepError(f"two systems share a name: {names} (use --estimates NAME=DIR)")
    dataset, description = open_dataset(args.data, args.split or "tt", _parse_counts(args.counts), rate, args.mode)
    if len(dataset) == 0:
        raise VoxsepError(f"{args.data}: no mixtures to evaluate")
    items = _Items(dataset, rate, args.max_items)
    options = MetricOptions(bss=not args.no_bss, pesq=not args.no_pesq, stoi=not args.no_stoi)
    skipped = [name for name, wanted, module in (("PESQ", options.pesq, "pesq"), ("STOI", options.stoi, "pystoi"))
               if wanted and module in missing_modules("eval")]
    if skipped:
        print(f"voxsep: note: {' and '.join(skipped)} skipped: " + extra_message("they", "eval"), file=sys.stderr)
    result = evaluate_systems(items, systems, args.out, metrics=options, workers=args.workers,
                              n_examples=args.examples, plots=not args.no_plots,
                              data_description=f"{description}, {len(items)} mixtures" + _window_note(models, args))
    print(f"wrote {result.out_dir / 'report.md'}, summary.json, rows/*.csv"
          + ("" if args.no_plots else ", plots/"))
    return 0
