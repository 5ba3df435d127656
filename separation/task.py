"""The "separation" training task (engine API): datasets, batches, loss and validation metrics.

Config ``data`` section: one dataset spec for ``train`` and one (optional) for ``valid``, each a
``type`` plus the keyword arguments of its class in :mod:`separation.data` (``sample_rate`` comes
from the config's top level)::

    data:
      train: {type: dynamic, utterances: corpus/manifest_8k.jsonl, counts: [1, 2, 3, 4, 5],
              segment: 4.0, epoch_size: 4000, seed: 0}
      valid: {type: manifest, manifests: [mixtures/valid.jsonl]}

Types: ``dynamic`` (:class:`~separation.data.DynamicMixingDataset`: fresh mixtures of 1-5 talkers
from an utterance manifest; the trainer calls ``set_epoch`` so every epoch has new mixtures,
reproducible from ``seed``; ``seed: null`` draws new mixtures at every read instead), ``manifest``
(:class:`~separation.data.MixtureManifestDataset`), ``wsj0mix``
(:class:`~separation.data.Wsj0MixDataset`), ``librimix`` (:class:`~separation.data.LibriMixDataset`).
Relative paths are used as given (relative to the working directory).

``task_options``: the fields of :class:`separation.losses.SeparationLossConfig`
(``count_weight``, ``inactive_weight``, ``inactive_floor_db``, ``multi_scale``).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from engine.task import Task, register_task
from frontend.errors import VoxsepError
from frontend.sisnr import pairwise_neg_si_snr
from separation import baselines  # noqa: F401  (registers the baseline models)
from separation import model as _model  # noqa: F401  (registers svoice_multihead)
from separation.data import (DynamicMixingDataset, LibriMixDataset, MixtureManifestDataset, Wsj0MixDataset,
                             collate_mixtures)
from separation.losses import SeparationLossConfig, pit_neg_sisdr, separation_loss

DATASET_TYPES = {
    "dynamic": DynamicMixingDataset,
    "manifest": MixtureManifestDataset,
    "wsj0mix": Wsj0MixDataset,
    "librimix": LibriMixDataset,
}


class FreshMixtures(Dataset):
    """Dynamic mixing with new mixtures at every read: each item uses a random "epoch" of the
    wrapped :class:`~separation.data.DynamicMixingDataset`, drawn from torch's generator (seeded
    per DataLoader worker by the trainer, so runs are reproducible)."""

    def __init__(self, dataset: DynamicMixingDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        self.dataset.set_epoch(int(torch.randint(0, 2**31 - 1, (1,))))
        return self.dataset[index]


def build_dataset(spec: Mapping[str, Any], sample_rate: int):
    """Build one dataset from ``{type: ..., **kwargs}`` (see the module docstring)."""
    spec = dict(spec)
    kind = spec.pop("type", None)
    if kind not in DATASET_TYPES:
        raise VoxsepError(f"separation data: type must be one of {sorted(DATASET_TYPES)}, got {kind!r}")
    fresh = kind == "dynamic" and "seed" in spec and spec["seed"] is None
    if fresh:
        spec["seed"] = 0
    try:
        dataset = DATASET_TYPES[kind](sample_rate=sample_rate, **spec)
    except TypeError as err:
        raise VoxsepError(f"separation data ({kind}): bad options {spec}: {err}") from None
    return FreshMixtures(dataset) if fresh else dataset


def si_snr_improvement(est_sources: torch.Tensor, ref_sources: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
    """Per-item SI-SNR improvement (dB) of PIT-aligned estimates: ``(B, C, T)`` x2, ``(B, T)`` -> ``(B,)``."""
    loss, _ = pit_neg_sisdr(est_sources, ref_sources)
    mix_rep = mix.unsqueeze(1).expand_as(ref_sources)
    baseline = -torch.diagonal(pairwise_neg_si_snr(mix_rep, ref_sources), dim1=1, dim2=2).mean(-1)
    return -loss - baseline


@register_task("separation")
class SeparationTask(Task):
    """Train separation models (multi-head MulCat or baselines) on mixtures of 1..C talkers."""

    def __init__(self, **loss_options: Any):
        try:
            self.loss_config = SeparationLossConfig(**loss_options)
        except TypeError as err:
            raise VoxsepError(f"separation task_options: {err}") from None

    def build_datasets(self, data_config: Mapping[str, Any], sample_rate: int):
        if "train" not in data_config:
            raise VoxsepError("separation data: a 'train' dataset spec is required")
        train = build_dataset(data_config["train"], sample_rate)
        valid = build_dataset(data_config["valid"], sample_rate) if data_config.get("valid") else None
        return train, valid

    def collate(self, batch: list) -> dict:
        return collate_mixtures(batch)

    def loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        heads = sorted({int(k) for k in batch["n_src"].tolist() if k > 0})
        if getattr(model, "has_count_head", False):
            heads = [k for k in heads if k <= model.max_speakers]
        else:
            heads = None  # baselines: their single max-count head
        output = model(batch["mix"], lengths=batch["lengths"], heads=heads)
        return separation_loss(output, batch["sources"], batch["n_src"], batch["mix"], batch["lengths"],
                               config=self.loss_config, count_offset=getattr(model, "count_offset", 1))

    @torch.no_grad()
    def validation_metrics(self, model: nn.Module, batch: dict) -> dict[str, float]:
        """Loss, SI-SNRi with the true count (over items of 2+ talkers), and count accuracy
        (estimated count)."""
        loss, logs = self.loss(model, batch)
        mix, sources, n_src, lengths = batch["mix"], batch["sources"], batch["n_src"], batch["lengths"]
        improvements, correct = [], 0
        for b in range(mix.shape[0]):
            # item by item, without the batch's zero padding: what `separate` sees on a file
            k, n = int(n_src[b]), int(lengths[b])
            est_list, probs = model.separate_and_count(mix[b:b + 1, :n], [max(1, k)])
            correct += int(probs[0].argmax()) == k
            if k <= 1:  # one talker: the mixture is the source, an improvement is meaningless
                continue
            improvements.append(float(si_snr_improvement(est_list[0][None], sources[b:b + 1, :k, :n],
                                                         mix[b:b + 1, :n])[0]))
        metrics = {**logs, "loss": float(loss), "count_acc_est": correct / mix.shape[0]}
        if improvements:
            metrics["si_snri"] = sum(improvements) / len(improvements)
        return metrics


@register_task("counting")
class CountingTask(SeparationTask):
    """Train only the counter of a :class:`~separation.model.MultiHeadSeparator` (``count_logits``):
    cross-entropy on the talker count, no decoder, no separation loss. With the ``crnn`` counter the
    trunk does not run, so a step costs a fraction of a separation step and the counter sees far
    more mixtures per CPU-minute. The data section is the separation task's.

    ``task_options``: ``label_smoothing`` (cross-entropy label smoothing, default 0.0); ``freeze``
    (parts of the model that keep their weights, e.g. ``[encoder, trunk, heads]`` to train a counter
    that reads the trunk of a separator given by ``init_from`` without changing it; frozen parts
    also stay in eval mode).
    """

    #: its checkpoints are separation models (the counter inside a MultiHeadSeparator)
    checkpoint_task = "separation"

    def __init__(self, label_smoothing: float = 0.0, freeze: Sequence[str] = ()):
        self.label_smoothing = float(label_smoothing)
        self.freeze = [str(name) for name in (freeze or ())]

    def build_model(self, model_name: str, model_config: Mapping[str, Any]) -> nn.Module:
        model = super().build_model(model_name, model_config)
        if not callable(getattr(model, "count_logits", None)):
            raise VoxsepError(f"counting task: model {model_name!r} has no counter (use model 'multihead')")
        for name in self.freeze:
            part = getattr(model, name, None)
            if not isinstance(part, nn.Module) or name == "counter":
                raise VoxsepError(f"counting task: cannot freeze {name!r} (parts: encoder, trunk, heads)")
            part.requires_grad_(False)
        return model

    def loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        for name in self.freeze:  # Lightning puts the whole model in train mode each epoch
            getattr(model, name).eval()
        logits = model.count_logits(batch["mix"], batch["lengths"])
        target = batch["n_src"].to(logits.device) - model.count_offset
        loss = torch.nn.functional.cross_entropy(logits, target, label_smoothing=self.label_smoothing)
        acc = float((logits.argmax(-1) == target).float().mean())
        return loss, {"count_ce": float(loss.detach()), "count_acc": acc}

    @torch.no_grad()
    def validation_metrics(self, model: nn.Module, batch: dict) -> dict[str, float]:
        """Cross-entropy and count accuracy (each item without the batch's padding), plus the mean
        absolute count error."""
        loss, logs = self.loss(model, batch)
        mix, n_src, lengths = batch["mix"], batch["n_src"], batch["lengths"]
        estimates = [int(model.count_probabilities(mix[b, :int(lengths[b])]).argmax()) for b in range(mix.shape[0])]
        truth = [int(k) for k in n_src]
        return {"loss": float(loss), "count_ce": logs["count_ce"],
                "count_acc": sum(e == t for e, t in zip(estimates, truth)) / len(truth),
                "count_abs_error": sum(abs(e - t) for e, t in zip(estimates, truth)) / len(truth)}
