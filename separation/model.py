"""Multi-head dual-path MulCat separator for an unknown number of talkers.

The trunk follows SVoice (Nachmani, Adi, Wolf, ICML 2020, arXiv:2003.01531): a learned conv
encoder, chunking with 50 % overlap, dual-path blocks of MulCat units (intra-chunk, then
inter-chunk, each with a residual add) and a parameter-free decoder (average groups of features
into short frames, overlap-add). The heads follow Multi-Decoder DPRNN (Zhu, Yeh,
Hasegawa-Johnson, ICASSP 2021, arXiv:2011.12022): one decoder head per talker count
``c in 1..max_speakers`` shares the trunk, and a count head classifies pooled trunk features.
Heads are shared across blocks and applied after every block, so training can use SVoice's
multi-scale loss; inference runs the trunk once, picks the count and decodes that head only.

Besides the count head, the SVoice selector is available (``count_method="power"``): the
max-count head's outputs are peak-normalised and the channels whose mean power exceeds a
threshold are counted.

Shapes: ``mix (B, T)``, ``est_sources (B, C, T)``, ``count_logits (B, n_count_classes)`` where
class ``j`` means ``j + count_offset`` talkers (``count_offset`` is 0 when the optional
"no speech" class exists, else 1).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from engine.checkpoint import config_from_dict, register_model

COUNT_METHODS = ("head", "power")


# ----------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------
@dataclass
class BlockOutput:
    """What the heads produce after one trunk block.

    Attributes:
        est_sources: talker count ``c`` -> estimates ``(B, c, T)`` of that count's head (only the
            heads that were asked for).
        count_logits: ``(B, n_count_classes)``, or ``None`` for models without a count head.
    """

    est_sources: dict[int, torch.Tensor]
    count_logits: torch.Tensor | None


@dataclass
class SeparationOutput:
    """Output of a separation model's ``forward``.

    Attributes:
        blocks: one :class:`BlockOutput` per trunk block, first to last (only the last one unless
            ``all_blocks=True``). The multi-scale loss weights them ``(i + 1) / R``.
    """

    blocks: list[BlockOutput] = field(default_factory=list)

    @property
    def final(self) -> BlockOutput:
        """The last block's output (what inference uses)."""
        return self.blocks[len(self.blocks) - 1]

    @property
    def est_sources(self) -> dict[int, torch.Tensor]:
        """Final block: talker count -> ``(B, c, T)``."""
        return self.final.est_sources

    @property
    def count_logits(self) -> torch.Tensor | None:
        """Final block: ``(B, n_count_classes)`` or ``None``."""
        return self.final.count_logits


# ----------------------------------------------------------------------------------------------
# Functions shared by every separation model
# ----------------------------------------------------------------------------------------------
def count_by_power(est_sources: torch.Tensor, threshold: float = 1e-3, min_count: int = 1) -> torch.Tensor:
    """SVoice's selector: count output channels that carry power.

    Each item's estimates are divided by their peak absolute value (over all channels and time);
    a channel is active when its mean power exceeds ``threshold``.

    Args:
        est_sources: ``(B, C, T)`` outputs of the max-count head.
        threshold: mean power of a peak-normalised channel above which it counts (SVoice: 1e-3).
        min_count: lower bound of the result (1: a file always has at least one output).

    Returns:
        ``(B,)`` long tensor of counts.
    """
    if est_sources.dim() != 3:
        raise ValueError(f"expected est_sources (B, C, T), got shape {tuple(est_sources.shape)}")
    peak = est_sources.abs().amax(dim=(1, 2), keepdim=True).clamp_min(1e-8)
    power = (est_sources / peak).pow(2).mean(dim=-1)  # (B, C)
    return (power > threshold).sum(dim=1).clamp_min(min_count)


def channel_power(est_sources: torch.Tensor) -> torch.Tensor:
    """Mean power per channel, ``(B, C, T) -> (B, C)``."""
    return est_sources.pow(2).mean(dim=-1)


def _as_batch(wav: torch.Tensor) -> tuple[torch.Tensor, bool]:
    if wav.dim() == 1:
        return wav.unsqueeze(0), True
    if wav.dim() == 2:
        return wav, False
    raise ValueError(f"expected wav (T,) or (B, T), got shape {tuple(wav.shape)}")


class SeparationModel(nn.Module):
    """Interface shared by the multi-head separator and the baselines.

    Subclasses define ``forward(mix, lengths=None, heads=None, all_blocks=None)`` returning a
    :class:`SeparationOutput`, ``max_speakers``, ``count_offset``, ``has_count_head`` and
    ``_separate_batch``. The user-facing methods are :meth:`separate`, :meth:`count` and
    :meth:`count_probabilities`.
    """

    max_speakers: int
    count_offset: int = 1
    has_count_head: bool = False
    #: "head" (classifier) or "power" (SVoice's threshold on the max-count head)
    count_method: str = "head"
    power_threshold: float = 1e-3

    def get_config(self) -> dict:
        """Plain-dict config that rebuilds this model with ``type(self)(config)``."""
        return asdict(self.config)

    @property
    def n_count_classes(self) -> int:
        return self.max_speakers + 1 - self.count_offset

    def _effective_count_method(self) -> str:
        if self.count_method not in COUNT_METHODS:
            raise ValueError(f"count_method must be one of {COUNT_METHODS}, got {self.count_method!r}")
        return self.count_method if self.has_count_head else "power"

    @torch.no_grad()
    def count_probabilities(self, wav: torch.Tensor) -> torch.Tensor:
        """Probability of each talker count.

        Args:
            wav: ``(T,)`` or ``(B, T)`` at the model's sample rate.

        Returns:
            ``(B, max_speakers + 1)`` (or ``(max_speakers + 1,)`` for a 1-D input): column ``k``
            is the probability of ``k`` talkers (column 0 is 0 without a "no speech" class). With
            the power selector the distribution is one-hot.
        """
        mix, squeeze = _as_batch(wav)
        was_training = self.training
        self.eval()
        try:
            if self._effective_count_method() == "head":
                probs = mix.new_zeros(mix.shape[0], self.max_speakers + 1)
                probs[:, self.count_offset:] = self.forward(mix, heads=()).count_logits.softmax(dim=-1)
            else:
                probs = self._probabilities_from_power(self.forward(mix, heads=(self.max_speakers,))
                                                       .est_sources[self.max_speakers])
        finally:
            self.train(was_training)
        return probs[0] if squeeze else probs

    @torch.no_grad()
    def count(self, wav: torch.Tensor) -> list[int]:
        """Estimated talker count of each item of ``wav`` (``(T,)`` or ``(B, T)``)."""
        return [int(k) for k in self.count_probabilities(_as_batch(wav)[0]).argmax(dim=-1)]

    @torch.no_grad()
    def separate(self, wav: torch.Tensor, num_speakers: int | Iterable[int] | None = None) -> list[torch.Tensor]:
        """Separate each item into its talkers.

        Args:
            wav: ``(T,)`` or ``(B, T)`` at the model's sample rate.
            num_speakers: the count to use (an int for all items, or one per item); ``None``
                estimates it (``count_method``).

        Returns:
            one ``(K_i, T)`` tensor per item (``K_i = 0`` when "no speech" is detected).
        """
        return self.separate_and_count(wav, num_speakers)[0]

    @torch.no_grad()
    def separate_and_count(self, wav: torch.Tensor, num_speakers: int | Iterable[int] | None = None
                           ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Like :meth:`separate`, running the trunk once, and also return the count probabilities
        ``(B, max_speakers + 1)`` (as :meth:`count_probabilities`; computed even when the count is
        given)."""
        mix, _ = _as_batch(wav)
        batch = mix.shape[0]
        if num_speakers is None:
            counts = None
        else:
            counts = [int(num_speakers)] * batch if isinstance(num_speakers, int) else [int(k) for k in num_speakers]
            if len(counts) != batch:
                raise ValueError(f"num_speakers has {len(counts)} entries for a batch of {batch}")
            for k in counts:
                if not 1 <= k <= self.max_speakers:
                    raise ValueError(f"num_speakers must be in 1..{self.max_speakers}, got {k}")
        was_training = self.training
        self.eval()
        try:
            return self._separate_batch(mix, counts)
        finally:
            self.train(was_training)

    def _separate_batch(self, mix: torch.Tensor, counts: list[int] | None
                        ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Eval-mode separation: ``(sources per item, count probabilities (B, max_speakers + 1))``."""
        raise NotImplementedError

    def _probabilities_from_power(self, est_max: torch.Tensor) -> torch.Tensor:
        counts = count_by_power(est_max, self.power_threshold)
        probs = est_max.new_zeros(est_max.shape[0], self.max_speakers + 1)
        probs[torch.arange(est_max.shape[0]), counts] = 1.0
        return probs


# ----------------------------------------------------------------------------------------------
# Multi-head MulCat separator
# ----------------------------------------------------------------------------------------------
@dataclass
class MulCatSeparatorConfig:
    """Sizes of :class:`MulCatSeparator` (paper symbols from SVoice in brackets).

    Attributes:
        max_speakers: largest talker count; one decoder head per count 1..max_speakers [C].
        n_filters: encoder output features [N].
        kernel_size: encoder kernel in samples [L].
        stride: encoder hop in samples (``None``: ``kernel_size // 2`` as in SVoice).
        decoder_frame_length: samples per decoded frame; the decoder averages groups of
            ``n_filters // decoder_frame_length`` features (SVoice: N / L = 16).
        hidden_size: LSTM hidden size per direction [H].
        chunk_size: frames per chunk [K]; chunks overlap by 50 %.
        n_blocks: dual-path blocks [R]; 0 gives a pointwise model (no trunk; tests, diagnostics).
        bidirectional: bidirectional LSTMs.
        count_no_speech: add a "no speech" (0 talkers) class to the count head.
        count_hidden_size: width of the count head's hidden layer.
        sample_rate: rate the model works at, in Hz.
    """

    max_speakers: int = 5
    n_filters: int = 128
    kernel_size: int = 8
    stride: int | None = None
    decoder_frame_length: int = 16
    hidden_size: int = 128
    chunk_size: int = 126
    n_blocks: int = 6
    bidirectional: bool = True
    count_no_speech: bool = False
    count_hidden_size: int = 128
    sample_rate: int = 8000

    def __post_init__(self):
        if self.stride is None:
            self.stride = self.kernel_size // 2
        if self.max_speakers < 1:
            raise ValueError(f"max_speakers must be >= 1, got {self.max_speakers}")
        if self.n_filters % self.decoder_frame_length:
            raise ValueError(f"n_filters ({self.n_filters}) must be a multiple of decoder_frame_length "
                             f"({self.decoder_frame_length})")
        if not 1 <= self.stride <= self.decoder_frame_length:
            raise ValueError(f"stride ({self.stride}) must be in 1..decoder_frame_length "
                             f"({self.decoder_frame_length}) so decoded frames cover the signal")
        if self.chunk_size < 2 or self.chunk_size % 2:
            raise ValueError(f"chunk_size must be even and >= 2 (50 % overlap), got {self.chunk_size}")

    @classmethod
    def from_dict(cls, config: dict) -> "MulCatSeparatorConfig":
        return config_from_dict(cls, config, "MulCatSeparator")


#: CPU-sized config: stride 8 halves the frame rate, small features and hidden size, 4 blocks
CPU_CONFIG = dict(n_filters=64, kernel_size=16, stride=8, decoder_frame_length=16, hidden_size=64,
                  chunk_size=100, n_blocks=4)
#: SVoice's sizes (N=128, L=8, H=128, R=6, K=126): 7.5 M trunk parameters
PAPER_CONFIG = dict(n_filters=128, kernel_size=8, stride=4, decoder_frame_length=16, hidden_size=128,
                    chunk_size=126, n_blocks=6)


class MulCatBlock(nn.Module):
    """SVoice's MulCat unit on sequences ``(batch, seq, features)``.

    ``y = Linear(2N -> N)([Linear(LSTM_value(x)) * Linear(LSTM_gate(x)), x])``.
    """

    def __init__(self, feature_size: int, hidden_size: int, bidirectional: bool = True):
        super().__init__()
        directions = 2 if bidirectional else 1
        self.value_rnn = nn.LSTM(feature_size, hidden_size, batch_first=True, bidirectional=bidirectional)
        self.value_proj = nn.Linear(hidden_size * directions, feature_size)
        self.gate_rnn = nn.LSTM(feature_size, hidden_size, batch_first=True, bidirectional=bidirectional)
        self.gate_proj = nn.Linear(hidden_size * directions, feature_size)
        self.output_proj = nn.Linear(2 * feature_size, feature_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value = self.value_proj(self.value_rnn(x)[0])
        gate = self.gate_proj(self.gate_rnn(x)[0])
        return self.output_proj(torch.cat([value * gate, x], dim=-1))


class GlobalLayerNorm(nn.Module):
    """Normalise over all but the batch axis, per-feature gain and bias (gLN, channel-last)."""

    def __init__(self, feature_size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(feature_size))
        self.bias = nn.Parameter(torch.zeros(feature_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[1:], eps=1e-8) * self.weight + self.bias


class DualPathBlock(nn.Module):
    """Intra-chunk MulCat then inter-chunk MulCat, each normalised and added to its input."""

    def __init__(self, feature_size: int, hidden_size: int, bidirectional: bool = True):
        super().__init__()
        self.intra_chunk = MulCatBlock(feature_size, hidden_size, bidirectional)
        self.intra_norm = GlobalLayerNorm(feature_size)
        self.inter_chunk = MulCatBlock(feature_size, hidden_size, bidirectional)
        self.inter_norm = GlobalLayerNorm(feature_size)

    def forward(self, chunks: torch.Tensor) -> torch.Tensor:
        """``chunks (B, n_chunks, chunk_size, N) -> same shape``."""
        batch, n_chunks, chunk_size, features = chunks.shape
        intra = self.intra_chunk(chunks.reshape(batch * n_chunks, chunk_size, features))
        chunks = chunks + self.intra_norm(intra.view(batch, n_chunks, chunk_size, features))
        across = chunks.transpose(1, 2).reshape(batch * chunk_size, n_chunks, features)
        inter = self.inter_chunk(across).view(batch, chunk_size, n_chunks, features).transpose(1, 2)
        return chunks + self.inter_norm(inter)


def split_chunks(frames: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """Cut ``(B, F, N)`` into 50 %-overlapping chunks ``(B, n_chunks, chunk_size, N)``.

    The sequence is padded by ``hop = chunk_size // 2`` in front and enough at the end that every
    frame lies in exactly two chunks (undone by :func:`merge_chunks`).
    """
    batch, n_frames, features = frames.shape
    hop = chunk_size // 2
    tail = hop + (-n_frames) % hop
    padded = F.pad(frames, (0, 0, hop, tail))
    return padded.unfold(1, chunk_size, hop).transpose(2, 3)  # (B, n_chunks, chunk_size, N)


def merge_chunks(chunks: torch.Tensor, n_frames: int) -> torch.Tensor:
    """Overlap-add chunks from :func:`split_chunks` back to ``(B, n_frames, N)`` (mean of the two)."""
    batch, n_chunks, chunk_size, features = chunks.shape
    hop = chunk_size // 2
    padded_len = (n_chunks - 1) * hop + chunk_size
    columns = chunks.permute(0, 3, 2, 1).reshape(batch, features * chunk_size, n_chunks)
    merged = F.fold(columns, (1, padded_len), kernel_size=(1, chunk_size), stride=(1, hop))
    merged = merged.view(batch, features, padded_len)[:, :, hop:hop + n_frames]
    return merged.transpose(1, 2) * 0.5


def overlap_add(frames: torch.Tensor, hop: int) -> torch.Tensor:
    """``(B, n_frames, frame_length) -> (B, (n_frames - 1) * hop + frame_length)`` by overlap-add."""
    batch, n_frames, frame_length = frames.shape
    out_len = (n_frames - 1) * hop + frame_length
    out = F.fold(frames.transpose(1, 2), (1, out_len), kernel_size=(1, frame_length), stride=(1, hop))
    return out.view(batch, out_len)


@register_model("svoice_multihead")
class MulCatSeparator(SeparationModel):
    """Shared dual-path MulCat trunk, one decoder head per talker count, a count head.

    See the module docstring for the papers. Build with a :class:`MulCatSeparatorConfig` or a
    plain dict of its fields.
    """

    def __init__(self, config: MulCatSeparatorConfig | dict | None = None):
        super().__init__()
        if config is None:
            config = MulCatSeparatorConfig()
        elif isinstance(config, dict):
            config = MulCatSeparatorConfig.from_dict(config)
        self.config = config
        self.max_speakers = config.max_speakers
        self.count_offset = 0 if config.count_no_speech else 1
        self.has_count_head = True
        self.sample_rate = config.sample_rate
        n = config.n_filters
        self.encoder = nn.Conv1d(1, n, config.kernel_size, stride=config.stride, bias=False)
        self.blocks = nn.ModuleList(
            DualPathBlock(n, config.hidden_size, config.bidirectional) for _ in range(config.n_blocks))
        # one head per count c, applied after every block: PReLU + pointwise projection to c * N
        self.heads = nn.ModuleDict({
            str(c): nn.Sequential(nn.PReLU(), nn.Linear(n, c * n)) for c in range(1, config.max_speakers + 1)})
        self.count_proj = nn.Sequential(nn.PReLU(), nn.Linear(n, config.count_hidden_size), nn.ReLU())
        self.count_classifier = nn.Linear(config.count_hidden_size, self.n_count_classes)

    @classmethod
    def from_config(cls, config: dict) -> "MulCatSeparator":
        """Build from a plain dict of :class:`MulCatSeparatorConfig` fields (checkpoints)."""
        return cls(MulCatSeparatorConfig.from_dict(config))

    # -- pieces ---------------------------------------------------------------------------------
    def _encode(self, mix: torch.Tensor) -> torch.Tensor:
        """``(B, T) -> (B, n_frames, N)``; the end is zero-padded to whole frames."""
        cfg = self.config
        length = mix.shape[-1]
        n_frames = max(1, -(-(length - cfg.kernel_size) // cfg.stride) + 1)
        padded = F.pad(mix, (0, (n_frames - 1) * cfg.stride + cfg.kernel_size - length))
        return F.relu(self.encoder(padded.unsqueeze(1))).transpose(1, 2)

    def _frame_lengths(self, lengths: torch.Tensor, n_frames: int) -> torch.Tensor:
        cfg = self.config
        frames = torch.div(lengths - cfg.kernel_size + cfg.stride - 1, cfg.stride, rounding_mode="floor") + 1
        return frames.clamp(1, n_frames)

    def _decode(self, features: torch.Tensor, n_speakers: int, length: int) -> torch.Tensor:
        """Head ``n_speakers`` on ``(B, F, N)`` features -> ``(B, n_speakers, length)``."""
        cfg = self.config
        batch, n_frames, n = features.shape
        per_source = self.heads[str(n_speakers)](features).view(batch, n_frames, n_speakers, n)
        # parameter-free decoder: average groups of features into frame samples, overlap-add
        samples = per_source.view(batch, n_frames, n_speakers, cfg.decoder_frame_length, -1).mean(-1)
        samples = samples.transpose(1, 2).reshape(batch * n_speakers, n_frames, cfg.decoder_frame_length)
        wav = overlap_add(samples, cfg.stride).view(batch, n_speakers, -1)
        if wav.shape[-1] < length:
            wav = F.pad(wav, (0, length - wav.shape[-1]))
        return wav[..., :length]

    def _count_logits(self, features: torch.Tensor, frame_mask: torch.Tensor | None) -> torch.Tensor:
        hidden = self.count_proj(features)  # (B, F, H_count)
        if frame_mask is None:
            pooled = hidden.mean(dim=1)
        else:
            pooled = (hidden * frame_mask.unsqueeze(-1)).sum(1) / frame_mask.sum(1, keepdim=True).clamp_min(1)
        return self.count_classifier(pooled)

    def trunk(self, mix: torch.Tensor, all_blocks: bool = False) -> list[torch.Tensor]:
        """Encoder + dual-path blocks: ``(B, T) ->`` list of ``(B, n_frames, N)`` features, one per
        block (only the last unless ``all_blocks``; the encoder output when ``n_blocks == 0``)."""
        frames = self._encode(mix)
        if not self.blocks:
            return [frames]
        n_frames = frames.shape[1]
        chunks = split_chunks(frames, self.config.chunk_size)
        outputs = []
        for i, block in enumerate(self.blocks):
            chunks = block(chunks)
            if all_blocks or i == len(self.blocks) - 1:
                outputs.append(merge_chunks(chunks, n_frames))
        return outputs

    # -- training contract -----------------------------------------------------------------------
    def forward(self, mix: torch.Tensor, lengths: torch.Tensor | None = None,
                heads: Iterable[int] | None = None, all_blocks: bool | None = None) -> SeparationOutput:
        """Run the trunk and the requested heads.

        Args:
            mix: ``(B, T)`` mixtures.
            lengths: ``(B,)`` valid samples per item (padding is excluded from count pooling).
            heads: talker counts whose decoder heads to run (default: all ``1..max_speakers``).
            all_blocks: outputs after every block (default: ``self.training``).

        Returns:
            :class:`SeparationOutput` with one :class:`BlockOutput` per returned block.
        """
        if mix.dim() != 2:
            raise ValueError(f"expected mix (B, T), got shape {tuple(mix.shape)}")
        heads = tuple(range(1, self.max_speakers + 1)) if heads is None else tuple(heads)
        for c in heads:
            if not 1 <= c <= self.max_speakers:
                raise ValueError(f"no head for {c} talkers (heads are 1..{self.max_speakers})")
        if all_blocks is None:
            all_blocks = self.training
        length = mix.shape[-1]
        features = self.trunk(mix, all_blocks=all_blocks)
        frame_mask = None
        if lengths is not None:
            n_frames = features[0].shape[1]
            frame_lengths = self._frame_lengths(lengths.to(mix.device), n_frames)
            frame_mask = (torch.arange(n_frames, device=mix.device) < frame_lengths[:, None]).to(mix.dtype)
        blocks = [
            BlockOutput(est_sources={c: self._decode(feat, c, length) for c in heads},
                        count_logits=self._count_logits(feat, frame_mask))
            for feat in features
        ]
        return SeparationOutput(blocks=blocks)

    # -- inference -------------------------------------------------------------------------------
    def _separate_batch(self, mix: torch.Tensor, counts: list[int] | None
                        ) -> tuple[list[torch.Tensor], torch.Tensor]:
        length = mix.shape[-1]
        features = self.trunk(mix)[0]  # the trunk runs once
        if self._effective_count_method() == "head":
            probs = mix.new_zeros(mix.shape[0], self.max_speakers + 1)
            probs[:, self.count_offset:] = self._count_logits(features, None).softmax(dim=-1)
        else:
            probs = self._probabilities_from_power(self._decode(features, self.max_speakers, length))
        if counts is None:
            counts = [int(k) for k in probs.argmax(dim=-1)]
        results: list[torch.Tensor | None] = [None] * mix.shape[0]
        for k in sorted(set(counts)):
            idx = [i for i, c in enumerate(counts) if c == k]
            if k == 0:
                for i in idx:
                    results[i] = mix.new_zeros(0, length)
                continue
            est = self._decode(features[idx], k, length)
            for j, i in enumerate(idx):
                results[i] = est[j]
        return results, probs  # type: ignore[return-value]
