"""`voxsep export OUT --model CKPT [--counter CKPT]`: one deployable separation checkpoint.

Takes a run's separator (``best.pt``) and, optionally, the counter trained on its own by the
``counting`` task, checks that they fit together, and writes one checkpoint whose stored training
config holds no machine path (``DATA/...``, ``RUN/...`` placeholders). ``voxsep separate --model OUT``
and ``voxsep count --model OUT`` then use the counter. With ``--calibrate MANIFEST`` the counters
(the separator's own head and each ``--counter``) are fused: a logistic regression on both counters'
log-probabilities, fitted on the manifest's mixtures of held-back speakers. ``--set KEY=VALUE``
changes an inference setting of the model config (e.g. a denoiser's ``mask_floor``). Nothing is
written on error.
"""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", metavar="OUT.pt", help="checkpoint to write")
    parser.add_argument("--model", required=True, metavar="CKPT",
                        help="separator checkpoint (a 'multihead' model), or a checkpoint of another task "
                             "(denoiser, vocoder: portable paths, --half or --int8 and --set only)")
    parser.add_argument("--counter", action="append", default=None, metavar="CKPT",
                        help="take the counter from this checkpoint (a 'counting' run's best.pt); with "
                             "--calibrate, repeat it to fuse several counters with the separator's own")
    parser.add_argument("--calibrate", action="append", default=None, metavar="MANIFEST",
                        help="fuse the separator's counter with --counter's and fit the fusion on this mixture "
                             "manifest (voxsep mix, every count 1..max; held-back speakers, never the test set); "
                             "repeat it to fit on several sets together (e.g. real and synthetic voices)")
    parser.add_argument("--l2", type=_l2, default="auto", metavar="auto|W",
                        help="with --calibrate: L2 weight of the fusion's logistic regression, or 'auto' (the "
                             "default): the weight with the least held-out cross-entropy in 5-fold cross-validation "
                             "on the calibration mixtures")
    parser.add_argument("--count-duration", action="store_true",
                        help="with --calibrate: the fusion also reads each mixture's duration (short mixtures "
                             "hide a talker more often), clipped to the calibration mixtures' range; only sound when lengths vary "
                             "within each calibration corpus, else it learns the corpora (recipes/real_separation)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--half", action="store_true",
                      help="store the weights as float16 (half the size, e.g. for bundled models)")
    size.add_argument("--int8", action="store_true",
                      help="store the weight matrices as int8 with a float32 scale per row, the rest as float16 "
                           "(a quarter of the float32 size; loaded as float32)")
    parser.add_argument("--set", dest="settings", action="append", default=None, metavar="KEY=VALUE",
                        help="change an inference setting of the model config (repeatable; e.g. a denoiser's "
                             "mask_floor=0.03, a separator's count_method=power); the weights must still fit")


def _l2(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number >= 0, got {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    from separation.counters import CV_FOLDS
    from voxsep.export import export_separator

    ckpt = export_separator(args.model, args.out, args.counter, half=args.half, calibrate=args.calibrate,
                            count_duration=args.count_duration, l2=args.l2, progress=True,
                            settings=args.settings, int8=args.int8)
    if ckpt["model_name"] != "multihead":
        print(f"wrote {args.out}: {ckpt['task']} model {ckpt['model_name']}, step {ckpt['step']}")
        return 0
    counter = ckpt["model_config"]["counter"]["type"]
    if args.calibrate is not None:
        m = ckpt["metrics"]
        members = ", ".join(f"{m[k]:.1%}" for k in sorted(m) if k.startswith("calibration/count_acc_member"))
        chosen = f", chosen by {CV_FOLDS}-fold cross-validation" if args.l2 == "auto" else ""
        print(f"counter calibrated on {int(m['calibration/n'])} mixtures (L2 weight {m['calibration/l2']:g}{chosen}): "
              f"count accuracy {members} (members) -> {m['calibration/count_acc']:.1%} (fused, on the calibration "
              f"set itself)")
    print(f"wrote {args.out}: {ckpt['model_name']} (encoder {ckpt['model_config']['encoder']['type']}, "
          f"trunk {ckpt['model_config']['trunk']['type']}, counter {counter}), step {ckpt['step']}")
    return 0
