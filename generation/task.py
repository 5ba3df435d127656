"""Training tasks "enhancement" (WaveNet denoiser) and "vocoder" (mel WaveNet) for ``voxsep train``.

Data config (both tasks)::

    data:
      manifest: DATA/speech/manifest.csv   # utterance table, corpus manifest (.jsonl) or folder
      fractions: [0.8, 0.1, 0.1]   # speaker split of records that name no split (the project's
                                   # rule, frontend.utterances: the same speakers as separation's
                                   # for the same table and fractions)
      train_split: train
      valid_split: valid
      segment: null            # crop length in samples (enhancement default: the model's
                               # target field + receptive field - 1; vocoder default: 8 hops x 32)
      train_examples: 4000     # random crops per epoch
      valid_examples: 200      # fixed crops
      # enhancement only:
      snr_db: [-5, 15]
      noise_kinds: [colored, bandpass, hum, clicks, tonal, modulated, babble]   # generated noise
      noise_files: null        # real noise recordings: a folder or a table with a path column,
      noise_file_prob: 0.5     #   split by file (noise_file_fractions, train/valid/test), used for
      noise_file_fractions: [0.75, 0.25, 0.0]   # this share of the items (else generated noise)
      rooms: null              # simulated rooms ([rooms] extra): {prob, rt60, size, n_rooms,
                               #   target, early_ms} (frontend.rooms.ROOM_DEFAULTS)
      babble: null             # a crowd for a share of the items, before any other noise:
                               #   {prob, talkers: [low, high], room_prob} (room_prob: the share
                               #   of crowds put through one of the rooms whole; needs rooms)

Enhancement ``task_options``::

    loss: {l1: 1.0}            # weights of: l1 (Rethage et al.'s speech + noise L1), si_snr
                               # (negative SI-SNR, dB), mrstft (multi-resolution STFT loss),
                               # pesq (PESQ's disturbance, torch-pesq; at the config's sample_rate)
    stft_resolutions: [[1024, 120, 600], [2048, 240, 1200], [512, 50, 240]]   # (n_fft, hop, window)

The default (``l1`` alone) is the loss of the first recipes; e.g. ``{si_snr: 1.0, mrstft: 1.0}``
optimises what SI-SNR and listeners measure (the loss is computed on the level-normalised crops).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from engine.task import Task, register_task
from frontend.errors import VoxsepError
from frontend.utterances import DEFAULT_FRACTIONS, NOISE_FRACTIONS
from generation.data import NoisySpeechDataset, SpeechCropDataset, noise_recordings, noise_settings, read_utterances
from generation.enhancer import Enhancer
from generation.losses import (
    STFT_RESOLUTIONS, denoising_l1, discretized_logistic_mixture_nll, multi_resolution_stft_loss, mulaw_cross_entropy,
    neg_si_snr, pesq_loss, pesq_module, si_snr,
)
from generation.vocoder import Vocoder

_COMMON_KEYS = {"manifest", "fractions", "train_split", "valid_split", "segment", "train_examples",
                "valid_examples", "seed"}
_DATA_KEYS = _COMMON_KEYS | {"snr_db", "noise_kinds", "noise_files", "noise_file_prob", "noise_file_fractions",
                             "rooms", "babble"}
#: enhancement loss terms (task_options.loss)
LOSS_TERMS = ("l1", "si_snr", "mrstft", "pesq")


def _check_data(data: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = set(data) - allowed
    if unknown:
        raise VoxsepError(f"unknown data keys {sorted(unknown)} (allowed: {sorted(allowed)})")
    if "manifest" not in data:
        raise VoxsepError("data.manifest is required (utterance manifest .jsonl or audio folder)")


def _utterances(data_config: Mapping[str, Any], key: str, default: str):
    fractions = data_config.get("fractions") or DEFAULT_FRACTIONS
    return read_utterances(data_config["manifest"], data_config.get(key, default), fractions=fractions)


@register_task("enhancement")
class EnhancementTask(Task):
    """Denoiser training on each crop's target field with a weighted sum of losses.

    Args:
        loss: weights of the terms of :data:`LOSS_TERMS` (default ``{"l1": 1.0}``: Rethage et
            al.'s L1 on speech and on noise).
        stft_resolutions: ``(n_fft, hop, window)`` triples of the ``mrstft`` term.

    The ``pesq`` term reads the sample rate that :meth:`build_datasets` is given (16 kHz until then).
    """

    def __init__(self, loss: Mapping[str, float] | None = None,
                 stft_resolutions: list[list[int]] | None = None):
        self.segment: int | None = None
        self.sample_rate = 16000
        weights = dict(loss) if loss is not None else {"l1": 1.0}
        unknown = set(weights) - set(LOSS_TERMS)
        if unknown:
            raise VoxsepError(f"task_options.loss: unknown term(s) {sorted(unknown)} (known: {', '.join(LOSS_TERMS)})")
        if any(float(w) < 0 for w in weights.values()) or not any(float(w) > 0 for w in weights.values()):
            raise VoxsepError(f"task_options.loss: weights must be >= 0 and not all zero, got {weights}")
        self.loss_weights = {k: float(w) for k, w in weights.items() if float(w) > 0}
        if "pesq" in self.loss_weights:
            pesq_module()  # a missing package stops the run before it starts
        resolutions = stft_resolutions if stft_resolutions is not None else STFT_RESOLUTIONS
        try:
            self.stft_resolutions = [tuple(int(v) for v in r) for r in resolutions]
        except (TypeError, ValueError):
            raise VoxsepError("task_options.stft_resolutions: give [n_fft, hop, window] triples, "
                              f"got {resolutions}") from None
        if not self.stft_resolutions or any(len(r) != 3 or r[2] > r[0] or min(r) < 1 for r in self.stft_resolutions):
            raise VoxsepError("task_options.stft_resolutions: give [n_fft, hop, window] triples with window <= n_fft, "
                              f"got {resolutions}")

    def build_model(self, model_name: str, model_config: Mapping[str, Any]) -> nn.Module:
        model = super().build_model(model_name, model_config)
        if not isinstance(model, Enhancer):
            raise TypeError(f"task enhancement needs an Enhancer model (wavenet_denoiser), got {model_name}")
        self.segment = model.training_length
        longest = max(r[0] for r in self.stft_resolutions)
        if "mrstft" in self.loss_weights and model.config.target_field <= longest // 2:
            raise VoxsepError(f"task_options.loss.mrstft: the target field ({model.config.target_field} samples) must "
                              f"exceed half the largest FFT size ({longest}); set task_options.stft_resolutions")
        return model

    def build_datasets(self, data_config, sample_rate):
        _check_data(data_config, _DATA_KEYS)
        self.sample_rate = int(sample_rate)
        segment = int(data_config.get("segment") or self.segment or 16384)
        seed = int(data_config.get("seed", 0))
        noise_source = data_config.get("noise_files")
        noise_fractions = data_config.get("noise_file_fractions") or NOISE_FRACTIONS

        def noise_of(split):
            return noise_recordings(noise_source, split, noise_fractions) if noise_source else ()

        common = dict(n_samples=segment, sample_rate=sample_rate, seed=seed, **noise_settings(data_config))
        train_split = data_config.get("train_split", "train")
        train = NoisySpeechDataset(_utterances(data_config, "train_split", "train"),
                                   length=int(data_config.get("train_examples", 4000)), fixed=False,
                                   noise_files=noise_of(train_split), **common)
        valid_utts = _utterances(data_config, "valid_split", "valid")
        valid = None
        if valid_utts:
            valid = NoisySpeechDataset(valid_utts, length=int(data_config.get("valid_examples", 200)), fixed=True,
                                       noise_files=noise_of(data_config.get("valid_split", "valid")), **common)
        return train, valid

    def collate(self, batch):
        return {k: torch.stack([item[k] for item in batch]) for k in batch[0]}

    @staticmethod
    def _normalise(model: Enhancer, batch):
        noisy, clean = batch["noisy"], batch["clean"]
        rms = noisy.pow(2).mean(-1, keepdim=True).sqrt().clamp(min=1e-6)
        scale = model.config.input_rms / rms  # the level enhance() feeds the network
        return noisy * scale, clean * scale

    def _loss_terms(self, est, clean, noisy) -> tuple[torch.Tensor, dict[str, float]]:
        """The weighted loss over the target field and each term's value (logged as ``loss_<term>``)."""
        total = est.new_zeros(())
        logs = {}
        for term, weight in self.loss_weights.items():
            if term == "l1":
                value = denoising_l1(est, clean, noisy)
            elif term == "si_snr":
                value = neg_si_snr(est, clean)
            elif term == "pesq":
                value = pesq_loss(est, clean, self.sample_rate)
            else:
                value = multi_resolution_stft_loss(est, clean, self.stft_resolutions)
            total = total + weight * value
            if len(self.loss_weights) > 1:
                logs[f"loss_{term}"] = float(value.detach())
        return total, logs

    def loss(self, model, batch):
        noisy, clean = self._normalise(model, batch)
        est = model(noisy)
        valid = model.valid_slice(noisy.shape[-1])
        loss, logs = self._loss_terms(est[:, valid], clean[:, valid], noisy[:, valid])
        return loss, {"loss": float(loss.detach()), **logs}

    @torch.no_grad()
    def validation_metrics(self, model, batch):
        noisy, clean = self._normalise(model, batch)
        est = model(noisy)
        valid = model.valid_slice(noisy.shape[-1])
        e, c, n = est[:, valid], clean[:, valid], noisy[:, valid]
        loss, _ = self._loss_terms(e, c, n)
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
        _check_data(data_config, _COMMON_KEYS)
        hop = self.hop or 256
        segment = int(data_config.get("segment") or 32 * hop)
        segment = max(hop, segment // hop * hop)  # whole frames
        common = dict(n_samples=segment, sample_rate=sample_rate, seed=int(data_config.get("seed", 0)))
        train = SpeechCropDataset(_utterances(data_config, "train_split", "train"),
                                  length=int(data_config.get("train_examples", 4000)), fixed=False, **common)
        valid_utts = _utterances(data_config, "valid_split", "valid")
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
