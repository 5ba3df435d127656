"""Separation models for an unknown number of talkers: the composed multi-head separator.

:class:`MultiHeadSeparator` is built from parts (``model.name: multihead``): an encoder/decoder pair
(:mod:`separation.encoders`: SVoice's learned conv encoder, or an STFT with masks), a registered
trunk (:mod:`separation.trunks`: ``mulcat``, ``dprnn``, ``blstm``, ``sudormrf``, ...), one decoder
head per talker count ``c in 1..max_speakers`` and a count estimator (:mod:`separation.counters`:
a head on the trunk's features, or a dedicated log-mel CRNN). The heads follow Multi-Decoder DPRNN
(Zhu, Yeh, Hasegawa-Johnson, ICASSP 2021, arXiv:2011.12022); the MulCat trunk and the multi-scale
loss follow SVoice (Nachmani, Adi, Wolf, ICML 2020, arXiv:2003.01531). The per-count heads, the
counter and the count selection are written once here, for every trunk.

Besides the counter, the SVoice selector is available (``count_method="power"``): the max-count
head's outputs are peak-normalised and the channels whose mean power exceeds a threshold are
counted.

:class:`MulCatSeparator` (``svoice_multihead``) is the conv + MulCat composition with the flat
config of earlier checkpoints, which still load (their state-dict keys are renamed on load).

Shapes: ``mix (B, T)``, ``est_sources (B, C, T)``, ``count_logits (B, n_count_classes)`` where
class ``j`` means ``j + count_offset`` talkers (``count_offset`` is 0 when the optional
"no speech" class exists, else 1).
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

import torch
from torch import nn

from engine.checkpoint import config_from_dict, register_model
from separation.counters import counter_config, build_counter
from separation.encoders import build_encoder, encoder_config, overlap_add  # noqa: F401  (overlap_add: re-export)
from separation.trunks import build_trunk, trunk_config
from separation.trunks.dualpath import GlobalLayerNorm, merge_chunks, split_chunks  # noqa: F401  (re-exports)
from separation.trunks.mulcat import MulCatBlock  # noqa: F401  (re-export)

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
    #: samples per frame; long-file windows are aligned to it
    hop: int = 1

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
# The composed multi-head separator
# ----------------------------------------------------------------------------------------------
@dataclass
class MultiHeadConfig:
    """What :class:`MultiHeadSeparator` is built from: one spec per part.

    Attributes:
        max_speakers: largest talker count; one decoder head per count 1..max_speakers [C].
        encoder: ``{type: conv|stft, ...}`` (:mod:`separation.encoders`).
        trunk: ``{type: NAME, ...}``, a registered trunk (:mod:`separation.trunks`).
        counter: ``{type: head|head_rnn|crnn|fusion, ...}`` (:mod:`separation.counters`).
        count_no_speech: add a "no speech" (0 talkers) class to the counter.
        count_method: ``head`` (the counter) or ``power`` (SVoice's threshold on the max-count
            head's output powers).
        power_threshold: mean power of a peak-normalised channel above which it counts (``power``).
        normalize_input: divide each mixture by its RMS before encoding and give the estimates
            the mixture's scale back (level-independent features; exact scale kept).
        sample_rate: rate the model works at, in Hz.
        head_rnn: units per direction of a BLSTM block of each count's own before its head
            (:class:`HeadBlock`); 0: the heads read the shared trunk's features directly.
    """

    max_speakers: int = 5
    encoder: dict = field(default_factory=lambda: {"type": "stft"})
    trunk: dict = field(default_factory=lambda: {"type": "blstm"})
    counter: dict = field(default_factory=lambda: {"type": "head"})
    count_no_speech: bool = False
    count_method: str = "head"
    power_threshold: float = 1e-3
    normalize_input: bool = True
    sample_rate: int = 8000
    head_rnn: int = 0

    def __post_init__(self):
        if self.max_speakers < 1:
            raise ValueError(f"max_speakers must be >= 1, got {self.max_speakers}")
        if self.head_rnn < 0:
            raise ValueError(f"head_rnn must be >= 0, got {self.head_rnn}")
        if self.count_method not in COUNT_METHODS:
            raise ValueError(f"count_method must be one of {COUNT_METHODS}, got {self.count_method!r}")
        # every default filled in: a checkpoint rebuilds exactly this architecture
        self.encoder = encoder_config(self.encoder)
        self.trunk = trunk_config(self.trunk)
        self.counter = counter_config(self.counter)

    @classmethod
    def from_dict(cls, config: dict) -> "MultiHeadConfig":
        return config_from_dict(cls, config, "MultiHeadSeparator")


class HeadBlock(nn.Module):
    """A residual BLSTM block of one talker count's own, between the shared trunk and that count's
    head: ``x + proj(BLSTM(x))`` on ``(B, N, W)`` features. The shared trunk's last layer has to
    serve five heads at once; this gives each count capacity of its own at the cost of one layer
    for the head that runs. ``proj`` starts at zero, so a new block passes the trunk's features
    through unchanged (a model grown from a checkpoint without blocks computes what it did) and
    learns from the first step (``proj``'s gradients are not zero)."""

    def __init__(self, width: int, hidden_size: int):
        super().__init__()
        self.rnn = nn.LSTM(width, hidden_size, batch_first=True, bidirectional=True)
        self.proj = nn.Linear(2 * hidden_size, width)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.proj(self.rnn(x)[0])


@register_model("multihead")
class MultiHeadSeparator(SeparationModel):
    """Count and separate: encoder -> trunk -> one decoder head per talker count, plus a counter.

    The heads follow Multi-Decoder DPRNN (Zhu, Yeh, Hasegawa-Johnson, ICASSP 2021,
    arXiv:2011.12022): every head shares the trunk and is applied after every returned trunk block
    (SVoice's multi-scale loss); inference runs the trunk once, picks the count and decodes that
    head only. Head ``c`` is PReLU + a pointwise projection to ``c`` times the encoder's
    ``head_size`` per frame, after a residual BLSTM block of its own with ``head_rnn``
    (:class:`HeadBlock`). Parts are chosen by :class:`MultiHeadConfig`.
    """

    def __init__(self, config: MultiHeadConfig | dict | None = None):
        super().__init__()
        if config is None:
            config = MultiHeadConfig()
        elif isinstance(config, dict):
            config = MultiHeadConfig.from_dict(config)
        self.config = config
        self.max_speakers = config.max_speakers
        self.count_offset = 0 if config.count_no_speech else 1
        self.has_count_head = True
        self.count_method = config.count_method
        self.power_threshold = config.power_threshold
        self.sample_rate = config.sample_rate
        self.encoder = build_encoder(config.encoder)
        self.trunk = build_trunk(config.trunk, self.encoder.feature_size)
        width = self.trunk.output_size
        self.heads = nn.ModuleDict({
            str(c): nn.Sequential(nn.PReLU(), nn.Linear(width, c * self.encoder.head_size))
            for c in range(1, config.max_speakers + 1)})
        self.head_blocks = nn.ModuleDict({
            str(c): HeadBlock(width, config.head_rnn) for c in range(1, config.max_speakers + 1)
        }) if config.head_rnn else None
        self.counter = build_counter(config.counter, self.n_count_classes, width, config.sample_rate)

    @classmethod
    def from_config(cls, config: dict) -> "MultiHeadSeparator":
        return cls(MultiHeadConfig.from_dict(config))

    def init_missing(self, missing: set[str]) -> dict[str, Any]:
        """After ``init_from``: let the trunk initialise the parts no checkpoint gave (a BLSTM
        trunk deepened beyond its checkpoint keeps the checkpoint's function). Returns what it did."""
        grow = getattr(self.trunk, "init_new_layers", None)
        if not callable(grow):
            return {}
        grown = grow({k[len("trunk."):] for k in missing if k.startswith("trunk.")})
        return {"trunk_layers_grown": grown} if grown else {}

    @property
    def hop(self) -> int:
        """Samples per encoder frame (long-file windows are aligned to it)."""
        return int(self.encoder.hop)

    def upgrade_state_dict(self, state_dict: dict) -> dict:
        """A state dict of any earlier layout in this class's layout (``init_from`` uses it). A
        fused counter (``counter.members.N.*``, e.g. of the bundled model) gives this model's
        single counter the first member with the same weight names and shapes, so that
        ``init_from=[counter=BUNDLED]`` continues that member's training. A BLSTM trunk trained on
        fewer input features reads the new ones through zero weights (:meth:`_grow_input`), and a
        narrower BLSTM trunk's weights are widened to this model's ``hidden_size``
        (:meth:`_widen_state_dict`), and a ``sigmoid`` mask head grows into ``sigmoid+phase``
        (:meth:`_grow_phase`), all with the same function."""
        state = self._grow_input(upgrade_svoice_state_dict(state_dict))
        return self._grow_phase(self._single_counter_state(self._widen_state_dict(state)))

    def _grow_phase(self, state: dict) -> dict:
        """A head of ``sigmoid`` masks (``n_bins`` rows per talker) into this model's
        ``sigmoid+phase`` head (``2 n_bins`` per talker, the magnitude's rows first): each talker's
        magnitude rows are copied and its phase rows start at zero, i.e. no rotation."""
        if getattr(self.encoder.config, "mask", None) != "sigmoid+phase":
            return state
        bins, out = self.encoder.n_bins, dict(state)
        for key, value in state.items():
            head = re.fullmatch(r"heads\.(\d+)\.1\.(weight|bias)", key)
            if head and value.shape[0] == int(head[1]) * bins:  # a sigmoid head: phase rows of zeros after each talker's
                old = value.reshape(int(head[1]), bins, *value.shape[1:])
                out[key] = torch.cat([old, torch.zeros_like(old)], dim=1).reshape(-1, *value.shape[1:])
        return out

    def _grow_input(self, state: dict) -> dict:
        """A trunk trained on the ``log1p`` features of an STFT encoder that now gives ``log1p+log``:
        the trunk pads its first layer with zero weights for the new ones (``grow_input_state``)."""
        grow = getattr(self.trunk, "grow_input_state", None)
        if not callable(grow) or getattr(self.encoder.config, "features", None) != "log1p+log":
            return state
        trunk = grow({k[len("trunk."):]: v for k, v in state.items() if k.startswith("trunk.")},
                     old_input=self.encoder.n_bins)
        return {k: trunk[k[len("trunk."):]] if k.startswith("trunk.") else v for k, v in state.items()}

    def _single_counter_state(self, state: dict) -> dict:
        own = {k: v for k, v in self.state_dict().items() if k.startswith("counter.")}
        if any(k.startswith("counter.members.") for k in own) or not any(k.startswith("counter.members.") for k in state):
            return state
        others = {k: v for k, v in state.items() if not k.startswith("counter.")}
        for i in range(len({k.split(".")[2] for k in state if k.startswith("counter.members.")})):
            prefix = f"counter.members.{i}."
            member = {"counter." + k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            if member.keys() == own.keys() and all(member[k].shape == own[k].shape for k in own):
                return {**others, **member}
        return state

    def _widen_state_dict(self, state: dict) -> dict:
        """A narrower trunk's weights into this wider one (a trunk with ``widen_state``: BLSTM),
        keeping the function: the trunk widens its own weights, and every consumer of its
        features (the heads, a count head on the trunk) gets zero weights on the new features."""
        widen = getattr(self.trunk, "widen_state", None)
        if not callable(widen):
            return state
        trunk_state, index = widen({k[len("trunk."):]: v for k, v in state.items() if k.startswith("trunk.")})
        if index is None:
            return state
        own = self.state_dict()
        out = {k: v for k, v in state.items() if not k.startswith("trunk.")}
        out.update({"trunk." + k: v for k, v in trunk_state.items()})
        old_width, new_width = len(index), self.trunk.output_size
        for key, value in state.items():
            # a fused counter's member may go into this model's single counter (_single_counter_state)
            mine = own.get(key, own.get(re.sub(r"^counter\.members\.\d+\.", "counter.", key)))
            reads_features = (key.startswith("heads.") or key.startswith("counter.")) and key.endswith(".weight")
            if (reads_features and mine is not None and value.dim() == 2 and mine.dim() == 2
                    and value.shape == (mine.shape[0], old_width) and mine.shape[1] == new_width):
                out[key] = self.trunk.widen_columns(value, mine, index)
        return out

    # -- pieces ---------------------------------------------------------------------------------
    def _scale(self, mix: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        """``(B, 1)`` RMS of each item over its valid samples (1 without ``normalize_input``)."""
        if not self.config.normalize_input:
            return mix.new_ones(mix.shape[0], 1)
        if lengths is None:
            power = mix.pow(2).mean(-1, keepdim=True)
        else:
            power = mix.pow(2).sum(-1, keepdim=True) / lengths.to(mix.device).clamp_min(1)[:, None].to(mix.dtype)
        return power.sqrt().clamp_min(1e-5)

    def _decode(self, features: torch.Tensor, context, n_speakers: int, length: int,
                scale: torch.Tensor) -> torch.Tensor:
        """Head ``n_speakers`` on ``(B, F, W)`` trunk features -> ``(B, n_speakers, length)``."""
        batch, n_frames, _ = features.shape
        if self.head_blocks is not None:
            features = self.head_blocks[str(n_speakers)](features)
        out = self.heads[str(n_speakers)](features).view(batch, n_frames, n_speakers, self.encoder.head_size)
        return self.encoder.decode(out, context, length) * scale.unsqueeze(-1)

    def _frame_mask(self, lengths: torch.Tensor | None, n_frames: int, mix: torch.Tensor) -> torch.Tensor | None:
        if lengths is None:
            return None
        frame_lengths = self.encoder.frame_lengths(lengths.to(mix.device), n_frames)
        return (torch.arange(n_frames, device=mix.device) < frame_lengths[:, None]).to(mix.dtype)

    def _encode(self, mix: torch.Tensor, lengths: torch.Tensor | None, all_blocks: bool):
        scale = self._scale(mix, lengths)
        frames, context = self.encoder.encode(mix / scale)
        return self.trunk(frames, all_blocks=all_blocks), context, scale

    def count_inputs(self, mix: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple:
        """What the counter reads: ``(mix / scale, lengths, trunk features or None, frame mask or
        None)`` for ``(B, T)`` mixtures (the trunk runs only if the counter needs it)."""
        if mix.dim() != 2:
            raise ValueError(f"expected mix (B, T), got shape {tuple(mix.shape)}")
        if not self.counter.needs_trunk:
            return mix / self._scale(mix, lengths), lengths, None, None
        features, _, scale = self._encode(mix, lengths, all_blocks=False)
        feat = features[-1]
        return mix / scale, lengths, feat, self._frame_mask(lengths, feat.shape[1], mix)

    def count_logits(self, mix: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, T) -> (B, n_count_classes)``: the counter alone (the trunk runs only if the counter
        reads it). What the ``counting`` task trains."""
        return self.counter(*self.count_inputs(mix, lengths))

    # -- training contract -----------------------------------------------------------------------
    def forward(self, mix: torch.Tensor, lengths: torch.Tensor | None = None,
                heads: Iterable[int] | None = None, all_blocks: bool | None = None) -> SeparationOutput:
        """Run the trunk, the requested heads and the counter.

        Args:
            mix: ``(B, T)`` mixtures.
            lengths: ``(B,)`` valid samples per item (padding is excluded from count pooling and
                from the input scale).
            heads: talker counts whose decoder heads to run (default: all ``1..max_speakers``).
            all_blocks: outputs after every trunk block (default: ``self.training``).

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
        features, context, scale = self._encode(mix, lengths, all_blocks)
        frame_mask = self._frame_mask(lengths, features[0].shape[1], mix)
        shared_logits = None if self.counter.needs_trunk else self.counter(mix / scale, lengths, None, None)
        blocks = [
            BlockOutput(est_sources={c: self._decode(feat, context, c, length, scale) for c in heads},
                        count_logits=self.counter(mix / scale, lengths, feat, frame_mask) if shared_logits is None
                        else shared_logits)
            for feat in features
        ]
        return SeparationOutput(blocks=blocks)

    # -- inference -------------------------------------------------------------------------------
    def _separate_batch(self, mix: torch.Tensor, counts: list[int] | None
                        ) -> tuple[list[torch.Tensor], torch.Tensor]:
        length = mix.shape[-1]
        features, context, scale = self._encode(mix, None, all_blocks=False)  # the trunk runs once
        features = features[0]
        if self._effective_count_method() == "head":
            logits = self.counter(mix / scale, None, features if self.counter.needs_trunk else None, None)
            probs = mix.new_zeros(mix.shape[0], self.max_speakers + 1)
            probs[:, self.count_offset:] = logits.softmax(dim=-1)
        else:
            probs = self._probabilities_from_power(self._decode(features, context, self.max_speakers, length, scale))
        if counts is None:
            counts = [int(k) for k in probs.argmax(dim=-1)]
        results: list[torch.Tensor | None] = [None] * mix.shape[0]
        for k in sorted(set(counts)):
            idx = [i for i, c in enumerate(counts) if c == k]
            if k == 0:
                for i in idx:
                    results[i] = mix.new_zeros(0, length)
                continue
            ctx = context[idx] if context is not None else None
            est = self._decode(features[idx], ctx, k, length, scale[idx])
            for j, i in enumerate(idx):
                results[i] = est[j]
        return results, probs  # type: ignore[return-value]

    @torch.no_grad()
    def count_probabilities(self, wav: torch.Tensor) -> torch.Tensor:
        """Probability of each talker count, ``(B, max_speakers + 1)`` (see the base class); the
        ``crnn`` counter runs without the trunk."""
        mix, squeeze = _as_batch(wav)
        if self._effective_count_method() != "head":
            return super().count_probabilities(wav)
        was_training = self.training
        self.eval()
        try:
            probs = mix.new_zeros(mix.shape[0], self.max_speakers + 1)
            probs[:, self.count_offset:] = self.count_logits(mix).softmax(dim=-1)
        finally:
            self.train(was_training)
        return probs[0] if squeeze else probs


# ----------------------------------------------------------------------------------------------
# The SVoice-layout model of earlier checkpoints ("svoice_multihead")
# ----------------------------------------------------------------------------------------------
@dataclass
class MulCatSeparatorConfig:
    """Sizes of :class:`MulCatSeparator`, the conv-encoder + MulCat-trunk composition with the
    flat config of ``svoice_multihead`` checkpoints (paper symbols from SVoice in brackets).

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
        if self.chunk_size < 2 or self.chunk_size % 2:
            raise ValueError(f"chunk_size must be even and >= 2 (50 % overlap), got {self.chunk_size}")

    @classmethod
    def from_dict(cls, config: dict) -> "MulCatSeparatorConfig":
        return config_from_dict(cls, config, "MulCatSeparator")

    def composed(self) -> MultiHeadConfig:
        """The same model as a :class:`MultiHeadConfig`."""
        return MultiHeadConfig(
            max_speakers=self.max_speakers,
            encoder={"type": "conv", "n_filters": self.n_filters, "kernel_size": self.kernel_size,
                     "stride": self.stride, "decoder_frame_length": self.decoder_frame_length},
            trunk={"type": "mulcat", "feature_size": None, "hidden_size": self.hidden_size,
                   "chunk_size": self.chunk_size, "n_blocks": self.n_blocks, "bidirectional": self.bidirectional},
            counter={"type": "head", "hidden_size": self.count_hidden_size},
            count_no_speech=self.count_no_speech, normalize_input=False, sample_rate=self.sample_rate)


#: CPU-sized config: stride 8 halves the frame rate, small features and hidden size, 4 blocks
CPU_CONFIG = dict(n_filters=64, kernel_size=16, stride=8, decoder_frame_length=16, hidden_size=64,
                  chunk_size=100, n_blocks=4)
#: SVoice's sizes (N=128, L=8, H=128, R=6, K=126): 7.5 M trunk parameters
PAPER_CONFIG = dict(n_filters=128, kernel_size=8, stride=4, decoder_frame_length=16, hidden_size=128,
                    chunk_size=126, n_blocks=6)

#: state-dict key prefixes of the SVoice-layout checkpoints -> the composed layout
_SVOICE_KEYS = (("blocks.", "trunk.blocks."), ("count_proj.", "counter.proj."),
                ("count_classifier.", "counter.classifier."))


def upgrade_svoice_state_dict(state_dict: dict) -> dict:
    """Rename the keys of an SVoice-layout (``svoice_multihead``, voxsep <= 0.1 stop 8) state dict to
    the composed layout; keys already in the composed layout are kept."""
    out = {}
    for key, value in state_dict.items():
        for old, new in _SVOICE_KEYS:
            if key.startswith(old):
                key = new + key[len(old):]
                break
        out[key] = value
    return out


@register_model("svoice_multihead")
class MulCatSeparator(MultiHeadSeparator):
    """Conv encoder, MulCat dual-path trunk (SVoice, arXiv:2003.01531), heads and a trunk count
    head, configured by the flat :class:`MulCatSeparatorConfig`. Loads checkpoints of the
    SVoice-layout model (their keys are renamed on load: :func:`upgrade_svoice_state_dict`)."""

    def __init__(self, config: MulCatSeparatorConfig | dict | None = None):
        if config is None:
            config = MulCatSeparatorConfig()
        elif isinstance(config, dict):
            config = MulCatSeparatorConfig.from_dict(config)
        super().__init__(config.composed())
        self.flat_config = config
        self._register_load_state_dict_pre_hook(self._upgrade_keys)

    @classmethod
    def from_config(cls, config: dict) -> "MulCatSeparator":
        return cls(MulCatSeparatorConfig.from_dict(config))

    def get_config(self) -> dict:
        return asdict(self.flat_config)

    @staticmethod
    def _upgrade_keys(state_dict, prefix, *args):
        for key in [k for k in state_dict if k.startswith(prefix)]:
            rest = key[len(prefix):]
            for old, new in _SVOICE_KEYS:
                if rest.startswith(old):
                    state_dict[prefix + new + rest[len(old):]] = state_dict.pop(key)
                    break
