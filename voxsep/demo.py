"""End-to-end demo on the bundled examples: mix, count, separate, score, report.

Two sets of bundled utterances, both of voices the bundled model never trained on: real recordings
(``voxsep/examples/real/``: validation speakers of ``recipes/real_separation``, speechocean762 and
LibriSpeech, licences in its README) and synthetic voices (``voxsep/examples/``, made by
``recipes/tts_separation/make_demo_examples.py`` from the test split of the offline corpus). The demo
mixes each set into mixtures of 2..5 talkers with the wsj0-mix gain rule, lets the model count and
separate each one, scores the estimates with counting-aware SI-SNRi (:mod:`evaluation.counting`)
and also with the true count, and writes the WAVs, a spectrogram PNG per mixture and a report
(Markdown and HTML). Every number in the report is computed in the run.
"""
from __future__ import annotations

import html
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from frontend import atomic_output, limit_peak, save_audio
from frontend.levels import scale_to_mixture
from frontend.errors import VoxsepError

EXAMPLES = Path(__file__).resolve().parent / "examples"
#: the bundled example sets: name -> manifest
EXAMPLE_SETS = {"real": EXAMPLES / "real" / "examples.jsonl", "synthetic": EXAMPLES / "examples.jsonl"}


@dataclass
class DemoResult:
    """One demo mixture and its scores."""

    name: str
    true_count: int
    est_count: int
    probabilities: list[float]
    si_snri_est: float  # counting-aware SI-SNRi with the estimated count (dB)
    si_snri_oracle: float  # SI-SNRi with the true count given to the model (dB)
    false_talkers: int
    missed: int
    seconds: float
    rtf: float
    speakers: list[str] = field(default_factory=list)


def build_demo_mixtures(counts: Sequence[int], per_count: int, sample_rate: int, seed: int,
                        manifest: Path | None = None, prefix: str = ""):
    """Mixtures of the bundled utterances: a list of ``(name, mix (T,), sources (C, T), speakers)``."""
    from frontend.utterances import read_utterances as load_utterance_manifest
    from separation.mixing import AudioCache, plan_mixtures, render_mixture

    manifest = manifest or EXAMPLES / "examples.jsonl"
    if not manifest.exists():
        raise VoxsepError(f"{manifest}: bundled examples are missing (reinstall voxsep)")
    utterances = load_utterance_manifest(manifest)
    rng = np.random.default_rng(seed)
    cache = AudioCache(sample_rate)
    out = []
    for count in counts:
        for plan in plan_mixtures(utterances, count, "tt", per_count, "wsj0", rng):
            mixture = render_mixture(plan, sample_rate, "min", "wsj0", cache.load)
            out.append((f"{prefix}{count}talkers_{len(out):02d}", mixture.mix.float(), mixture.sources.float(),
                        [u.speaker for u in plan.utterances]))
    return out


def run_demo(out_dir: str | Path, model: str = "default", counts: Sequence[int] = (2, 3, 4, 5),
             per_count: int = 1, seed: int = 0, enhancer: str | None = None,
             progress: bool = True) -> Path:
    """Run the demo into ``out_dir``; returns the path of ``report.md``."""
    from separation.inference import Separator
    from voxsep.registry import load_model

    final_dir = Path(out_dir)
    if final_dir.exists() and any(final_dir.iterdir()) and not (final_dir / "report.md").exists():
        raise VoxsepError(f"{final_dir}: exists and is not an earlier demo's output; choose another -o")
    net, ckpt = load_model(model, task="separation")
    separator = Separator(net, int(ckpt["sample_rate"]), model_name=str(model))
    sr = separator.sample_rate
    bad = [c for c in counts if not 1 <= c <= separator.max_speakers]
    if bad:
        raise VoxsepError(f"the model separates 1..{separator.max_speakers} talkers; asked for {bad}")
    enhance = None
    if enhancer:
        from voxsep.pipelines import enhance_sources, load_enhancer

        denoiser = load_enhancer(enhancer)
        enhance = lambda est: enhance_sources(est, sr, denoiser)  # noqa: E731
    mixtures = [m for name, manifest in EXAMPLE_SETS.items()
                for m in build_demo_mixtures(counts, per_count, sr, seed, manifest, prefix=f"{name}_")]
    # built in a hidden staging folder and renamed at the end: a failure leaves no partial output
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    out_dir = Path(tempfile.mkdtemp(prefix=f".{final_dir.name}.partial-", dir=final_dir.parent))
    try:
        results = _run(separator, mixtures, out_dir, enhance, progress)
        report = write_report(out_dir, results, model=str(model), model_step=int(ckpt.get("step", 0)),
                              enhancer=enhancer)
    except BaseException:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise
    if final_dir.exists():
        shutil.rmtree(final_dir)
    os.chmod(out_dir, 0o755)
    os.replace(out_dir, final_dir)
    return final_dir / report.name


def _run(separator, mixtures, out_dir: Path, enhance, progress: bool) -> list[DemoResult]:
    """Separate and score every mixture, writing WAVs and spectrograms into ``out_dir``."""
    from tqdm import tqdm

    from evaluation.counting import count_aware_si_snri
    from evaluation.plots import plot_spectrograms

    sr = separator.sample_rate
    results: list[DemoResult] = []
    for name, mix, sources, speakers in tqdm(mixtures, desc="demo", unit="mixture", disable=not progress):
        start = time.perf_counter()
        with torch.inference_mode():
            est, probs = separator.separate(mix)
            if enhance is not None and est.shape[0]:
                est = enhance(est)
        elapsed = time.perf_counter() - start
        with torch.inference_mode():
            oracle, _ = separator.separate(mix, num_speakers=sources.shape[0])
        score = count_aware_si_snri(sources.numpy(), est.numpy(), mix.numpy())
        oracle_score = count_aware_si_snri(sources.numpy(), oracle.numpy(), mix.numpy())
        folder = out_dir / name
        save_audio(folder / "mix.wav", mix, sr)
        for i, src in enumerate(sources):
            save_audio(folder / f"ref{i + 1}.wav", src, sr)
        # each estimate keeps its share of the mixture's level (least squares), all scaled down
        # together only if one would clip
        written = scale_to_mixture(est, mix)
        shared = limit_peak(written, 0.9) if written.numel() else written
        for i, src in enumerate(shared):
            save_audio(folder / f"s{i + 1}.wav", src, sr)
        # row i of the estimates column is the estimate matched to reference i (blank if missed);
        # false talkers follow
        rows = [est[p] if p >= 0 else torch.zeros_like(mix) for p in score.perm.tolist()]
        titles = [f"estimate s{p + 1}" if p >= 0 else "missed" for p in score.perm.tolist()]
        extra = [k for k in range(est.shape[0]) if k not in score.perm.tolist()]
        rows += [est[k] for k in extra]
        titles += [f"estimate s{k + 1} (false talker)" for k in extra]
        plot_spectrograms(mix.numpy(), sources.numpy(), torch.stack(rows).numpy(), sr,
                          folder / "spectrograms.png",
                          titles={"mix": [f"{name}: {sources.shape[0]} talkers, counted {est.shape[0]}"],
                                  "refs": speakers, "ests": titles})
        results.append(DemoResult(name, int(sources.shape[0]), int(est.shape[0]),
                                  [round(float(p), 4) for p in probs], score.mean_si_snri,
                                  oracle_score.mean_si_snri, score.false_talkers, score.missed,
                                  mix.shape[-1] / sr, elapsed / (mix.shape[-1] / sr), speakers))
    return results


def write_report(out_dir: Path, results: list[DemoResult], model: str, model_step: int,
                 enhancer: str | None) -> Path:
    """``report.md``, ``report.html`` and ``results.json`` in ``out_dir``."""
    correct = sum(r.est_count == r.true_count for r in results)
    header = ("| mixture | talkers | counted | SI-SNRi, counted (dB) | SI-SNRi, true count (dB) "
              "| false talkers | missed | RTF |")
    lines = [
        "# voxsep demo",
        "",
        f"Model `{model}` (step {model_step}){', enhanced with `' + enhancer + '`' if enhancer else ''}; "
        f"mixtures of voices the bundled model never trained on: `real_*` are real recordings "
        f"(speechocean762, LibriSpeech), `synthetic_*` TTS voices.",
        f"Count correct on {correct} of {len(results)} mixtures.",
        "",
        header,
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(f"| [{r.name}]({r.name}/spectrograms.png) | {r.true_count} | {r.est_count} | "
                     f"{r.si_snri_est:.1f} | {r.si_snri_oracle:.1f} | {r.false_talkers} | {r.missed} | "
                     f"{r.rtf:.3f} |")
    lines += ["", "SI-SNRi with the counted talkers: estimates are matched to references by the "
              "Hungarian algorithm on SI-SNR; a talker left without an estimate scores 0 dB. "
              "RTF: seconds of computing per second of audio.", ""]
    for r in results:
        lines += [f"## {r.name}", "", f"Talkers: {', '.join(r.speakers)}. Count probabilities "
                  f"(0..{len(r.probabilities) - 1}): {', '.join(f'{p:.2f}' for p in r.probabilities)}.", "",
                  f"![{r.name}]({r.name}/spectrograms.png)", ""]
    md_path = out_dir / "report.md"
    with atomic_output(md_path) as tmp:
        tmp.write_text("\n".join(lines), encoding="utf-8")
    rows = "".join(
        f"<tr><td><a href='{r.name}/spectrograms.png'>{html.escape(r.name)}</a></td><td>{r.true_count}</td>"
        f"<td>{r.est_count}</td><td>{r.si_snri_est:.1f}</td><td>{r.si_snri_oracle:.1f}</td>"
        f"<td>{r.false_talkers}</td><td>{r.missed}</td><td>{r.rtf:.3f}</td></tr>" for r in results)
    def player(label: str, src: str) -> str:
        return (f"<div class='p'><span>{html.escape(label)}</span><audio controls preload='none' "
                f"src='{src}'></audio></div>")

    figures = "".join(
        f"<h2>{html.escape(r.name)}</h2><p>{html.escape(', '.join(r.speakers))}</p>"
        + player("mixture", f"{r.name}/mix.wav")
        + "<div class='row'><div><h3>references</h3>"
        + "".join(player(spk, f"{r.name}/ref{i + 1}.wav") for i, spk in enumerate(r.speakers))
        + f"</div><div><h3>estimates ({r.est_count} counted)</h3>"
        + "".join(player(f"s{i + 1}", f"{r.name}/s{i + 1}.wav") for i in range(r.est_count))
        + f"</div></div><img src='{r.name}/spectrograms.png' width='900'>"
        for r in results)
    style = ("<style>.row{display:flex;gap:3em}.p{display:flex;align-items:center;gap:.5em;margin:.2em 0}"
             ".p span{min-width:9em;font-family:monospace}</style>")
    page = (f"<!doctype html><meta charset='utf-8'><title>voxsep demo</title>{style}<h1>voxsep demo</h1>"
            f"<p>Model <code>{html.escape(model)}</code> (step {model_step}). Count correct on {correct} of "
            f"{len(results)} mixtures.</p><table border='1' cellpadding='4'><tr><th>mixture</th><th>talkers</th>"
            f"<th>counted</th><th>SI-SNRi counted (dB)</th><th>SI-SNRi true count (dB)</th><th>false talkers</th>"
            f"<th>missed</th><th>RTF</th></tr>{rows}</table>{figures}")
    with atomic_output(out_dir / "report.html") as tmp:
        tmp.write_text(page, encoding="utf-8")
    with atomic_output(out_dir / "results.json") as tmp:
        tmp.write_text(json.dumps([r.__dict__ for r in results], indent=1), encoding="utf-8")
    return md_path
