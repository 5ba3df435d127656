"""A stack of bidirectional LSTMs over frames: the trunk of uPIT-style TF-domain maskers (Kolbaek,
Yu, Tan, Jensen, 2017, arXiv:1703.06284), which at 125 frames/s (STFT hop 64 at 8 kHz) learns far
faster per CPU-minute than time-domain trunks at 1000 frames/s (``../shared/REFERENCES.md``)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from separation.trunks import register_trunk


@register_trunk("blstm")
class BLSTMTrunk(nn.Module):
    """``n_layers`` (bi)LSTM layers; with ``residual`` every layer after the first adds its input
    (projected back to ``2 * hidden_size``), which trains deeper stacks faster. Outputs
    ``2 * hidden_size`` features (``hidden_size`` when unidirectional); the output of every layer
    is returned with ``all_blocks``."""

    @dataclass
    class Config:
        hidden_size: int = 256
        n_layers: int = 3
        bidirectional: bool = True
        residual: bool = True
        dropout: float = 0.0

    def __init__(self, input_size: int, config: "BLSTMTrunk.Config"):
        super().__init__()
        if config.n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {config.n_layers}")
        self.config = config
        width = config.hidden_size * (2 if config.bidirectional else 1)
        self.output_size = width
        self.layers = nn.ModuleList(
            nn.LSTM(input_size if i == 0 else width, config.hidden_size, batch_first=True,
                    bidirectional=config.bidirectional) for i in range(config.n_layers))
        self.dropout = nn.Dropout(config.dropout)

    def init_new_layers(self, missing: set[str], gate_bias: float = -4.0) -> list[int]:
        """Deepen a trained stack without changing what it computes (``init_from`` calls this with
        the keys no checkpoint gave, relative to the trunk). Every residual layer that got no
        weights while an earlier layer did starts with its output gates nearly shut (bias
        ``gate_bias``: each new layer adds about 2 % of ``tanh(c)``), so the deeper model starts
        from the shallower one's quality and trains its new layers from there (Net2Net-style
        growth, Chen, Goodfellow, Shlens, ICLR 2016). Returns the indices of the layers set."""
        def is_new(i: int) -> bool:
            return all(f"layers.{i}.{name}" in missing for name, _ in self.layers[i].named_parameters())

        if not self.config.residual or is_new(0):
            return []
        grown = [i for i in range(1, len(self.layers)) if is_new(i)]
        hidden = self.config.hidden_size
        with torch.no_grad():
            for i in grown:
                for name, param in self.layers[i].named_parameters():
                    if name.startswith("bias_ih"):  # PyTorch's gate order: input, forget, cell, output
                        param[3 * hidden:].fill_(gate_bias)
                    elif name.startswith("bias_hh"):
                        param[3 * hidden:].zero_()
        return grown

    def forward(self, features: torch.Tensor, all_blocks: bool = False) -> list[torch.Tensor]:
        x = features
        outputs = []
        for i, layer in enumerate(self.layers):
            y = self.dropout(layer(x)[0])
            x = x + y if (self.config.residual and i > 0) else y
            if all_blocks or i == len(self.layers) - 1:
                outputs.append(x)
        return outputs
