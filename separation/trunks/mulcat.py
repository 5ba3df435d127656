"""SVoice's MulCat dual-path trunk (Nachmani, Adi, Wolf, ICML 2020, arXiv:2003.01531)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from separation.trunks import register_trunk
from separation.trunks.dualpath import DualPathTrunk


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


@register_trunk("mulcat")
class MulCatTrunk(DualPathTrunk):
    """Dual-path blocks of MulCat units (SVoice: N=128, H=128, K=126, R=6).

    ``feature_size`` ``None`` keeps the encoder's width (no input projection).
    """

    @dataclass
    class Config:
        feature_size: int | None = None
        hidden_size: int = 128
        chunk_size: int = 126
        n_blocks: int = 6
        bidirectional: bool = True

    def make_unit(self, width: int) -> nn.Module:
        return MulCatBlock(width, self.config.hidden_size, self.config.bidirectional)
