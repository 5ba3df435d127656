"""Training tasks "enhancement" (WaveNet denoiser) and "vocoder" (mel WaveNet) for ``voxsep train``.

Data config (both tasks)::

    data:
      manifest: /work/data/corpus/manifest_16k.jsonl   # or a folder of audio files
      train_split: train
      valid_split: valid
      segment: null            # crop length in samples (enhancement default: the model's
                               # target field + receptive field - 1; vocoder default: 8 hops x 32)
      train_examples: 4000     # random crops per epoch
      valid_examples: 200      # fixed crops
      # enhancement only:
      snr_db: [-5, 15]
      noise_kinds: [colored, bandpass, hum, clicks, tonal, modulated, babble]
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from engine.task import Task, register_task
from generation.data import NoisySpeechDataset, SpeechCropDataset, read_utterances
from generation.enhancer import Enhancer
from generation.losses import denoising_l1, discretized_logistic_mixture_nll, mulaw_cross_entropy, si_snr
from generation.noise import NOISE_KINDS
from generation.vocoder import Vocoder

_DATA_KEYS = {"manifest", "train_split", "valid_split", "segment", "train_examples", "valid_examples",
              "snr_db", "noise_kinds", "seed"}


def _check_data(data: Mapping[str, Any], allowed: set[str]) -> None:
    from frontend.errors import VoxsepError

    unknown = set(data) - allowed
    if unknown:
        raise VoxsepError(f"unknown data keys {sorted(unknown)} (allowed: {sorted(allowed)})")
    if "manifest" not in data:
        raise VoxsepError("data.manifest is required (utterance manifest .jsonl or audio folder)")


@register_task("enhancement")
class EnhancementTask(Task):
    """Denoiser training: L1 on speech + L1 on noise over each crop's target field."""

    def __init__(self):
        self.segment: int | None = None

    def build_model(self, model_name: str, model_config: Mapping[str, Any]) -> nn.Module:
        model = super().build_model(model_name, model_config)
        if not isinstance(model, Enhancer):
            raise TypeError(f"task enhancement needs an Enhancer model (wavenet_denoiser), got {model_name}")
        self.segment = model.training_length
        return model

    def build_datasets(self, data_config, sample_rate):
        _check_data(data_config, _DATA_KEYS)
        source = data_config["manifest"]
        segment = int(data_config.get("segment") or self.segment or 16384)
        common = dict(n_samples=segment, sample_rate=sample_rate, seed=int(data_config.get("seed", 0)),
                      snr_db=data_config.get("snr_db", (-5.0, 15.0)),
                      noise_kinds=data_config.get("noise_kinds", NOISE_KINDS))
        train = NoisySpeechDataset(read_utterances(source, data_config.get("train_split", "train")),
                                   length=int(data_config.get("train_examples", 4000)), fixed=False, **common)
        valid_utts = read_utterances(source, data_config.get("valid_split", "valid"))
        valid = (NoisySpeechDataset(valid_utts, length=int(data_config.get("valid_examples", 200)), fixed=True,
                                    **common) if valid_utts else None)
        return train, valid

    def collate(self, batch):
        return {k: torch.stack([item[k] for item in batch]) for k in batch[0]}

    @staticmethod
    def _normalise(model: Enhancer, batch):
        noisy, clean = batch["noisy"], batch["clean"]
        rms = noisy.pow(2).mean(-1, keepdim=True).sqrt().clamp(min=1e-6)
        scale = model.config.input_rms / rms  # the level enhance() feeds the network
        return noisy * scale, clean * scale

    def loss(self, model, batch):
        noisy, clean = self._normalise(model, batch)
        est = model(noisy)
        valid = model.valid_slice(noisy.shape[-1])
        loss = denoising_l1(est[:, valid], clean[:, valid], noisy[:, valid])
        return loss, {"loss": float(loss.detach())}

    @torch.no_grad()
    def validation_metrics(self, model, batch):
        noisy, clean = self._normalise(model, batch)
        est = model(noisy)
        valid = model.valid_slice(noisy.shape[-1])
        e, c, n = est[:, valid], clean[:, valid], noisy[:, valid]
        loss = denoising_l1(e, c, n)
        active = c.pow(2).sum(-1) > 1e-8  # SI-SNR is undefined on silent crops
        est_si, noisy_si = si_snr(e, c)[active], si_snr(n, c)[active]
        out = {"loss": float(loss)}
        if active.any():
            out.update(si_snr=float(est_si.mean()), si_snri=float((est_si - noisy_si).mean()))
        return out


@register_task("vocoder")
class VocoderTask(Task):
    """Vocoder training: teacher-forced likelihood of speech crops given their log-mel frames."""

    def __init__(self):
        self.hop: int | None = None

    def build_model(self, model_name, model_config):
        model = super().build_model(model_name, model_config)
        if not isinstance(model, Vocoder):
            raise TypeError(f"task vocoder needs a Vocoder model (wavenet_vocoder), got {model_name}")
        self.hop = model.config.hop_length
        return model

    def build_datasets(self, data_config, sample_rate):
        _check_data(data_config, _DATA_KEYS - {"snr_db", "noise_kinds"})
        source = data_config["manifest"]
        hop = self.hop or 256
        segment = int(data_config.get("segment") or 32 * hop)
        segment = max(hop, segment // hop * hop)  # whole frames
        common = dict(n_samples=segment, sample_rate=sample_rate, seed=int(data_config.get("seed", 0)))
        train = SpeechCropDataset(read_utterances(source, data_config.get("train_split", "train")),
                                  length=int(data_config.get("train_examples", 4000)), fixed=False, **common)
        valid_utts = read_utterances(source, data_config.get("valid_split", "valid"))
        valid = (SpeechCropDataset(valid_utts, length=int(data_config.get("valid_examples", 200)), fixed=True,
                                   **common) if valid_utts else None)
        return train, valid

    def collate(self, batch):
        return {"wav": torch.stack([item["wav"] for item in batch])}

    def loss(self, model, batch):
        wav = batch["wav"].clamp(-1.0, 1.0)
        with torch.no_grad():
            mel = model.mel_of(wav)
        out = model(wav, mel)
        if model.config.wavenet.output == "mulaw":
            loss = mulaw_cross_entropy(out, wav)
        else:
            loss = discretized_logistic_mixture_nll(out, wav)
        return loss, {"loss": float(loss.detach())}
