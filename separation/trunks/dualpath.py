"""Dual-path processing shared by the MulCat and DPRNN trunks (Luo, Chen, Yoshioka, ICASSP 2020,
arXiv:1910.06379): frames are cut into 50 %-overlapping chunks; each block runs a sequence model
along every chunk (intra-chunk) and across chunks (inter-chunk), each normalised and added to its
input; chunks are overlap-added back to frames after the blocks that are returned."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


class GlobalLayerNorm(nn.Module):
    """Normalise over all but the batch axis, per-feature gain and bias (gLN, channel-last)."""

    def __init__(self, feature_size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(feature_size))
        self.bias = nn.Parameter(torch.zeros(feature_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[1:], eps=1e-8) * self.weight + self.bias


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


class DualPathBlock(nn.Module):
    """An intra-chunk unit then an inter-chunk unit, each normalised and added to its input.

    Args:
        make_unit: builds one sequence unit ``(batch, seq, N) -> (batch, seq, N)``.
        feature_size: ``N``.
    """

    def __init__(self, make_unit: Callable[[], nn.Module], feature_size: int):
        super().__init__()
        self.intra_chunk = make_unit()
        self.intra_norm = GlobalLayerNorm(feature_size)
        self.inter_chunk = make_unit()
        self.inter_norm = GlobalLayerNorm(feature_size)

    def forward(self, chunks: torch.Tensor) -> torch.Tensor:
        """``chunks (B, n_chunks, chunk_size, N) -> same shape``."""
        batch, n_chunks, chunk_size, features = chunks.shape
        intra = self.intra_chunk(chunks.reshape(batch * n_chunks, chunk_size, features))
        chunks = chunks + self.intra_norm(intra.view(batch, n_chunks, chunk_size, features))
        across = chunks.transpose(1, 2).reshape(batch * chunk_size, n_chunks, features)
        inter = self.inter_chunk(across).view(batch, chunk_size, n_chunks, features).transpose(1, 2)
        return chunks + self.inter_norm(inter)


class DualPathTrunk(nn.Module):
    """Input projection (only when the encoder's width differs), dual-path blocks, chunk merge.

    Subclasses set ``Config`` (with ``feature_size``, ``chunk_size``, ``n_blocks``) and implement
    :meth:`make_unit`.
    """

    def __init__(self, input_size: int, config):
        super().__init__()
        if config.chunk_size < 2 or config.chunk_size % 2:
            raise ValueError(f"chunk_size must be even and >= 2 (50 % overlap), got {config.chunk_size}")
        self.config = config
        width = config.feature_size or input_size
        self.output_size = width
        # no projection when the widths match: the SVoice layout (and its checkpoints) has none
        self.input_proj = nn.Linear(input_size, width) if width != input_size else None
        self.blocks = nn.ModuleList(DualPathBlock(lambda: self.make_unit(width), width)
                                    for _ in range(config.n_blocks))

    def make_unit(self, width: int) -> nn.Module:
        raise NotImplementedError

    def forward(self, features: torch.Tensor, all_blocks: bool = False) -> list[torch.Tensor]:
        frames = self.input_proj(features) if self.input_proj is not None else features
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
