"""Evaluate a WaveNet denoiser on a fixed noisy test set built from the corpus' test split.

Each test utterance gets one noise kind (cycling through generation.noise.NOISE_KINDS; babble from
other test speakers) at one SNR (cycling through --snrs), all seeded, so every run and every model
sees the same set. Reports SI-SNR, PESQ (narrow-band at 8 kHz, wide-band otherwise) and STOI for
the noisy input, a Wiener-filter baseline (scipy.signal.wiener) and the model, overall and by noise
kind and SNR. Writes OUT/results.json, OUT/results.md and, for the first --n-examples utterances,
FLAC files (clean, noisy, enhanced) and a spectrogram PNG.

    python recipes/tts_enhancement/evaluate.py --model runs/tts_enhancement_cpu/best.pt \
        --manifest data/corpus/manifest_8k.jsonl --out runs/tts_enhancement_cpu/eval
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from scipy.signal import wiener
from tqdm import tqdm

from evaluation import pesq_scores, si_snr, stoi_scores
from evaluation.plots import plot_spectrograms
from frontend import atomic_output, load_audio, save_audio
from generation.data import read_utterances
from generation.noise import NOISE_KINDS, make_noise, mix_at_snr
from voxsep.pipelines import load_enhancer


def build_test_set(manifest: str, n: int, sample_rate: int, snrs: list[float], max_seconds: float):
    utts = sorted(read_utterances(manifest, "test"), key=lambda u: u.path)[:n]
    if not utts:
        sys.exit(f"{manifest}: no test-split utterances")
    items = []
    for i, utt in enumerate(utts):
        rng = np.random.default_rng([1234, i])
        clean = load_audio(utt.path, sample_rate=sample_rate)[0].numpy()[: int(max_seconds * sample_rate)]
        kind = NOISE_KINDS[i % len(NOISE_KINDS)]
        others = [u for u in utts if u.speaker != utt.speaker] or utts

        def babble_source(k, r, others=others, length=clean.size):
            picks = r.integers(0, len(others), k)
            return [load_audio(others[int(j)].path, sample_rate=sample_rate)[0].numpy()[:length] for j in picks]

        noise, desc = make_noise(clean.size, sample_rate, rng, [kind], babble_source, p_combo=0.0)
        snr = snrs[(i // len(NOISE_KINDS)) % len(snrs)]
        items.append({"name": Path(utt.path).stem, "kind": desc, "snr": snr, "clean": clean,
                      "noisy": mix_at_snr(clean, noise, snr)})
    return items


def scores(clean, est, sample_rate):
    out = {"si_snr": float(si_snr(clean, est))}
    out.update(pesq_scores(clean, est, sample_rate))
    out.update(stoi_scores(clean, est, sample_rate, extended=False))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="checkpoint or bundled name")
    parser.add_argument("--manifest", required=True, help="utterance manifest (test split is used)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--n-utterances", type=int, default=200)
    parser.add_argument("--snrs", default="0,5,10", help="input SNRs (dB), cycled")
    parser.add_argument("--max-seconds", type=float, default=6.0)
    parser.add_argument("--n-examples", type=int, default=4, help="example files to write")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    model = load_enhancer(args.model)
    sr = model.sample_rate
    items = build_test_set(args.manifest, args.n_utterances, sr, [float(s) for s in args.snrs.split(",")],
                           args.max_seconds)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, item in enumerate(tqdm(items, desc="evaluate", unit="utt")):
        est = model.enhance(torch.from_numpy(item["noisy"])).numpy()
        row = {"name": item["name"], "noise": item["kind"], "snr_db": item["snr"]}
        for system, signal in (("noisy", item["noisy"]), ("wiener", wiener(item["noisy"], 15)), ("model", est)):
            for key, value in scores(item["clean"], signal, sr).items():
                row[f"{system}/{key}"] = value
        row["model/si_snri"] = row["model/si_snr"] - row["noisy/si_snr"]
        row["wiener/si_snri"] = row["wiener/si_snr"] - row["noisy/si_snr"]
        rows.append(row)
        if i < args.n_examples:
            for name, signal in (("clean", item["clean"]), ("noisy", item["noisy"]), ("enhanced", est)):
                save_audio(out_dir / f"{item['name']}_{name}.flac", torch.from_numpy(np.clip(signal, -1, 1)).float(), sr)
            plot_spectrograms(item["noisy"], item["clean"][None], est[None], sr, out_dir / f"{item['name']}.png",
                              titles={"mix": [f"noisy ({item['kind']}, {item['snr']:g} dB)"], "refs": ["clean"],
                                      "ests": [f"enhanced (SI-SNRi {row['model/si_snri']:.1f} dB)"]})
    keys = [k for k in rows[0] if "/" in k]
    mean = lambda rs, k: float(np.nanmean([r[k] for r in rs]))  # noqa: E731
    groups = defaultdict(list)
    for r in rows:
        groups[f"noise={r['noise']}"].append(r)
        groups[f"snr={r['snr_db']:g}"].append(r)
    summary = {"all": {k: mean(rows, k) for k in keys}}
    summary.update({g: {k: mean(rs, k) for k in keys} for g, rs in sorted(groups.items())})
    result = {"model": args.model, "sample_rate": sr, "n": len(rows), "summary": summary, "rows": rows}
    with atomic_output(out_dir / "results.json") as tmp:
        Path(tmp).write_text(json.dumps(result, indent=2))
    pesq_key = "pesq_nb" if sr == 8000 else "pesq_wb"
    lines = [f"| group | n | SI-SNR noisy | Wiener | model | SI-SNRi | PESQ noisy | PESQ model | STOI noisy | STOI model |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    counts = {"all": len(rows), **{g: len(rs) for g, rs in groups.items()}}
    for group, s in summary.items():
        lines.append(f"| {group} | {counts[group]} | {s['noisy/si_snr']:.2f} | {s['wiener/si_snr']:.2f} | "
                     f"{s['model/si_snr']:.2f} | {s['model/si_snri']:.2f} | {s[f'noisy/{pesq_key}']:.2f} | "
                     f"{s[f'model/{pesq_key}']:.2f} | {s['noisy/stoi']:.3f} | {s['model/stoi']:.3f} |")
    table = "\n".join(lines) + "\n"
    with atomic_output(out_dir / "results.md") as tmp:
        Path(tmp).write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
