"""DPRNN-style dual-path trunk (Luo, Chen, Yoshioka, ICASSP 2020, arXiv:1910.06379): each unit is
a (bi)LSTM followed by a linear projection back to the feature width."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from separation.trunks import register_trunk
from separation.trunks.dualpath import DualPathTrunk


class RNNProjection(nn.Module):
    """``Linear(LSTM(x))`` on ``(batch, seq, N)``: DPRNN's intra/inter-chunk unit."""

    def __init__(self, feature_size: int, hidden_size: int, bidirectional: bool = True):
        super().__init__()
        self.rnn = nn.LSTM(feature_size, hidden_size, batch_first=True, bidirectional=bidirectional)
        self.proj = nn.Linear(hidden_size * (2 if bidirectional else 1), feature_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.rnn(x)[0])


@register_trunk("dprnn")
class DPRNNTrunk(DualPathTrunk):
    """Dual-path blocks of LSTM + linear units (DPRNN: N=64, H=128, K=100 at 8 kHz, 6 blocks)."""

    @dataclass
    class Config:
        feature_size: int | None = 64
        hidden_size: int = 128
        chunk_size: int = 100
        n_blocks: int = 6
        bidirectional: bool = True

    def make_unit(self, width: int) -> nn.Module:
        return RNNProjection(width, self.config.hidden_size, self.config.bidirectional)
