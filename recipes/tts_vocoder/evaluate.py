"""Evaluate a mel WaveNet vocoder on the corpus' test split: audio -> log-mel -> vocoder -> audio.

For each of the first --n-utterances test utterances (sorted, cropped to --max-seconds) it reports
the teacher-forced likelihood (bits per sample), and for the generated audio: log-mel distance
(dB, RMS over bins and frames), mel-cepstral distortion (MCD, dB, 13 coefficients from a DCT of the
log-mel, c0 excluded), PESQ and STOI against the original, and the generation real-time factor.
A Griffin-Lim resynthesis from the same mel (torchaudio InverseMelScale + GriffinLim) is the
baseline row. Writes OUT/results.json, OUT/results.md and, for the first --n-examples utterances,
FLAC files (original, vocoded, Griffin-Lim) and a spectrogram PNG.

    python recipes/tts_vocoder/evaluate.py --model runs/tts_vocoder_cpu/best.pt \
        --manifest data/corpus/manifest_8k.jsonl --out runs/tts_vocoder_cpu/eval
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torchaudio
from scipy.fft import dct
from tqdm import tqdm

from evaluation import pesq_scores, stoi_scores
from evaluation.plots import plot_spectrograms
from frontend import atomic_output, load_audio, save_audio
from generation.data import read_utterances
from generation.losses import discretized_logistic_mixture_nll, mulaw_cross_entropy
from voxsep.pipelines import load_vocoder


def log_mel_db(vocoder, wav: torch.Tensor) -> np.ndarray:
    """Log-mel in dB ``(n_mels, N)`` (the vocoder's own front end)."""
    return (vocoder.mel(wav) * 20 / math.log(10)).numpy()


def mel_distances(vocoder, ref: torch.Tensor, est: torch.Tensor) -> dict[str, float]:
    n = min(ref.shape[-1], est.shape[-1])
    a, b = log_mel_db(vocoder, ref[:n]), log_mel_db(vocoder, est[:n])
    c_a = dct(a / 20 * math.log(10), type=2, axis=0, norm="ortho")[1:14]  # natural-log cepstra
    c_b = dct(b / 20 * math.log(10), type=2, axis=0, norm="ortho")[1:14]
    mcd = float(np.mean(10 / math.log(10) * np.sqrt(2 * np.sum((c_a - c_b) ** 2, axis=0))))
    return {"log_mel_rmse_db": float(np.sqrt(np.mean((a - b) ** 2))), "mcd_db": mcd}


def griffin_lim(vocoder, mel: torch.Tensor, n_samples: int) -> torch.Tensor:
    c = vocoder.config
    mag_mel = torch.exp(mel * c.mel_std + c.mel_mean)
    inv = torchaudio.transforms.InverseMelScale(c.n_fft // 2 + 1, c.n_mels, c.sample_rate, c.f_min, c.f_max,
                                                norm="slaney", mel_scale="slaney")
    gl = torchaudio.transforms.GriffinLim(c.n_fft, hop_length=c.hop_length, power=1.0, n_iter=64)
    wav = gl(inv(mag_mel))
    return torch.nn.functional.pad(wav, (0, max(0, n_samples - wav.shape[-1])))[:n_samples]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="checkpoint or bundled name")
    parser.add_argument("--manifest", required=True, help="utterance manifest (test split is used)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--n-utterances", type=int, default=20)
    parser.add_argument("--max-seconds", type=float, default=3.0)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--n-examples", type=int, default=4)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    vocoder = load_vocoder(args.model)
    sr = vocoder.sample_rate
    utts = sorted(read_utterances(args.manifest, "test"), key=lambda u: u.path)[: args.n_utterances]
    if not utts:
        sys.exit(f"{args.manifest}: no test-split utterances")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    generator = torch.Generator().manual_seed(0)
    for i, utt in enumerate(tqdm(utts, desc="vocode", unit="utt")):
        wav = load_audio(utt.path, sample_rate=sr)[0][: int(args.max_seconds * sr)].clamp(-1, 1)
        with torch.no_grad():
            mel = vocoder.mel_of(wav)
            out = vocoder(wav[None], mel[None])
            if vocoder.config.wavenet.output == "mulaw":
                nll = mulaw_cross_entropy(out, wav[None]).item()
            else:
                nll = discretized_logistic_mixture_nll(out, wav[None]).item()
        start = time.perf_counter()
        est = vocoder.vocode(mel, n_samples=wav.shape[-1], temperature=args.temperature, generator=generator)
        rtf = (time.perf_counter() - start) / (wav.shape[-1] / sr)
        gl = griffin_lim(vocoder, mel, wav.shape[-1])
        row = {"name": Path(utt.path).stem, "bits_per_sample": nll / math.log(2), "rtf": rtf}
        for system, signal in (("vocoder", est), ("griffin_lim", gl)):
            for key, value in {**mel_distances(vocoder, wav, signal), **pesq_scores(wav, signal, sr),
                               **stoi_scores(wav, signal, sr, extended=False)}.items():
                row[f"{system}/{key}"] = value
        rows.append(row)
        if i < args.n_examples:
            for name, signal in (("original", wav), ("vocoded", est), ("griffin_lim", gl)):
                save_audio(out_dir / f"{row['name']}_{name}.flac", signal.clamp(-1, 1).float(), sr)
            plot_spectrograms(wav.numpy(), gl.numpy()[None], est.numpy()[None], sr, out_dir / f"{row['name']}.png",
                              titles={"mix": ["original"], "refs": ["Griffin-Lim (baseline)"],
                                      "ests": ["WaveNet vocoder"]})
    keys = [k for k in rows[0] if k != "name"]
    summary = {k: float(np.nanmean([r[k] for r in rows])) for k in keys}
    result = {"model": args.model, "sample_rate": sr, "n": len(rows), "temperature": args.temperature,
              "summary": summary, "rows": rows}
    with atomic_output(out_dir / "results.json") as tmp:
        Path(tmp).write_text(json.dumps(result, indent=2))
    pesq_key = "pesq_nb" if sr == 8000 else "pesq_wb"
    lines = ["| system | log-mel RMSE (dB) | MCD (dB) | PESQ | STOI |", "|---|---|---|---|---|"]
    for system in ("vocoder", "griffin_lim"):
        s = summary
        lines.append(f"| {system} | {s[f'{system}/log_mel_rmse_db']:.2f} | {s[f'{system}/mcd_db']:.2f} | "
                     f"{s[f'{system}/{pesq_key}']:.2f} | {s[f'{system}/stoi']:.3f} |")
    lines.append(f"\nteacher-forced {summary['bits_per_sample']:.3f} bits/sample; generation RTF "
                 f"{summary['rtf']:.3f} ({len(rows)} utterances)")
    table = "\n".join(lines) + "\n"
    with atomic_output(out_dir / "results.md") as tmp:
        Path(tmp).write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
