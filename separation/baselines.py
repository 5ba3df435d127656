"""Baselines in the separator interface: asteroid's DPRNN-TasNet and Conv-TasNet.

Each has ``max_speakers`` outputs and no count head; the count comes from SVoice's selector
(:func:`separation.model.count_by_power`: peak-normalised mean power of each output above a
threshold), and ``separate`` returns the ``K`` most powerful outputs. They train through the same
task and loss: the references are matched to the best ``n_src`` outputs and the other outputs are
pushed towards silence (:func:`separation.losses.separation_loss`).

References: DPRNN, Luo, Chen, Yoshioka 2020 (arXiv:1910.06379); Conv-TasNet, Luo, Mesgarani 2019
(arXiv:1809.07454); both as implemented in asteroid 0.7.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Iterable

import torch
from asteroid.models import ConvTasNet, DPRNNTasNet

from engine.checkpoint import config_from_dict, register_model
from separation.model import BlockOutput, SeparationModel, SeparationOutput, channel_power


@dataclass
class AsteroidBaselineConfig:
    """Config of an asteroid baseline.

    Attributes:
        max_speakers: number of outputs (``n_src`` of the asteroid model).
        sample_rate: rate in Hz.
        asteroid_options: keyword arguments of the asteroid class (``n_filters``, ``hid_size``, ...;
            asteroid's defaults otherwise).
    """

    max_speakers: int = 5
    sample_rate: int = 8000
    asteroid_options: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, config: dict) -> "AsteroidBaselineConfig":
        return config_from_dict(cls, config, "baseline")


class AsteroidBaseline(SeparationModel):
    """Wraps an asteroid ``BaseEncoderMaskerDecoder`` with ``max_speakers`` outputs."""

    asteroid_class: type = DPRNNTasNet

    def __init__(self, config: AsteroidBaselineConfig | dict | None = None):
        super().__init__()
        if config is None:
            config = AsteroidBaselineConfig()
        elif isinstance(config, dict):
            config = AsteroidBaselineConfig.from_dict(config)
        self.config = config
        self.max_speakers = config.max_speakers
        self.sample_rate = config.sample_rate
        self.count_offset = 1
        self.has_count_head = False
        self.count_method = "power"
        self.network = self.asteroid_class(n_src=config.max_speakers, sample_rate=config.sample_rate,
                                           **config.asteroid_options)

    @classmethod
    def from_config(cls, config: dict) -> "AsteroidBaseline":
        return cls(AsteroidBaselineConfig.from_dict(config))

    def get_config(self) -> dict:
        return asdict(self.config)

    @property
    def hop(self) -> int:
        """Samples per frame of the asteroid encoder."""
        return int(getattr(self.network.encoder.filterbank, "stride", 1) or 1)

    def forward(self, mix: torch.Tensor, lengths: torch.Tensor | None = None,
                heads: Iterable[int] | None = None, all_blocks: bool | None = None) -> SeparationOutput:
        """``mix (B, T)`` -> one block whose only head is ``max_speakers`` (``heads`` and
        ``all_blocks`` are accepted for interface compatibility; ``heads=()`` skips decoding)."""
        if mix.dim() != 2:
            raise ValueError(f"expected mix (B, T), got shape {tuple(mix.shape)}")
        heads = None if heads is None else tuple(heads)
        if heads is not None and any(c != self.max_speakers for c in heads):
            raise ValueError(f"a baseline has only the {self.max_speakers}-output head, asked for {heads}")
        est = self._network(mix)  # (B, C_max, T)
        return SeparationOutput(blocks=[BlockOutput(est_sources={self.max_speakers: est}, count_logits=None)])

    def _network(self, mix: torch.Tensor) -> torch.Tensor:
        """The asteroid model on ``(B, T)``; inputs shorter than its encoder kernel are zero-padded."""
        kernel = int(getattr(self.network.encoder.filterbank, "kernel_size", 1))
        length = mix.shape[-1]
        if length < kernel:
            return self.network(torch.nn.functional.pad(mix, (0, kernel - length)))[..., :length]
        return self.network(mix)

    def _separate_batch(self, mix: torch.Tensor, counts: list[int] | None
                        ) -> tuple[list[torch.Tensor], torch.Tensor]:
        est = self._network(mix)
        probs = self._probabilities_from_power(est)
        if counts is None:
            counts = [int(k) for k in probs.argmax(dim=-1)]
        power = channel_power(est)
        results = []
        for b, k in enumerate(counts):
            keep = power[b].topk(k).indices.sort().values  # the k most powerful, in output order
            results.append(est[b, keep])
        return results, probs


@register_model("dprnn_tasnet")
class DPRNNBaseline(AsteroidBaseline):
    """asteroid ``DPRNNTasNet`` with ``max_speakers`` outputs and the power selector."""

    asteroid_class = DPRNNTasNet


@register_model("conv_tasnet")
class ConvTasNetBaseline(AsteroidBaseline):
    """asteroid ``ConvTasNet`` with ``max_speakers`` outputs and the power selector."""

    asteroid_class = ConvTasNet
