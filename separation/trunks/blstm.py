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

    def widen_state(self, state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """Widen a narrower stack's weights (``state``: keys relative to the trunk) to this stack's
        ``hidden_size`` without changing what it computes (Net2Net-style growth in width, Chen,
        Goodfellow, Shlens, ICLR 2016, with zero outgoing weights instead of split units).

        Every old unit keeps its weights at its new place (each direction's units first, the new
        units after them); the new units start with this stack's fresh weights, and every weight
        through which an old unit, a later layer or a consumer of the output would read a new
        unit is zero. So the wide stack outputs the narrow one's features at the old places and
        nothing is read from the new ones until training makes those zero weights move (their
        gradients are not zero: the new units are active).

        Returns:
            ``(state, index)``: the widened state, and for the consumers of the output
            (:meth:`widen_columns`) the new place of every old output feature, or ``None`` (with
            ``state`` unchanged) when the state is not narrower than this stack.
        """
        key = "layers.0.weight_hh_l0"
        if key not in state or state[key].dim() != 2:
            return state, None
        old = int(state[key].shape[1])
        new = self.config.hidden_size
        if old >= new:
            return state, None
        dirs = 2 if self.config.bidirectional else 1
        # new place of each old unit of one direction block, and of the old output features
        unit = torch.arange(old)
        feature_index = torch.cat([unit + d * new for d in range(dirs)])
        gate_rows = torch.cat([unit + g * new for g in range(4)])  # PyTorch's 4 gate blocks
        own = self.state_dict()
        out = dict(state)
        for name, value in state.items():
            if not name.startswith("layers.") or name not in own:
                continue
            layer = int(name.split(".")[1])
            fresh = own[name].detach().clone()
            if name.split(".")[2].startswith("bias"):
                fresh[gate_rows] = value.to(fresh.dtype)
            else:
                if name.split(".")[2].startswith("weight_hh"):
                    cols, n_in = unit, new
                elif layer == 0:
                    cols, n_in = torch.arange(value.shape[1]), value.shape[1]
                else:
                    cols, n_in = feature_index, dirs * new
                # the old units read only what they read before: zero from every new input
                old_rows = torch.zeros(len(gate_rows), n_in, dtype=fresh.dtype)
                old_rows[:, cols] = value.to(fresh.dtype)
                fresh[gate_rows] = old_rows
            out[name] = fresh
        return out, feature_index

    def grow_input_state(self, state: dict[str, torch.Tensor], old_input: int) -> dict[str, torch.Tensor]:
        """A stack trained on ``old_input`` input features (``state``: keys relative to the trunk)
        into this one, whose extra features come after those (e.g. the STFT encoder's
        ``log1p+log``): the first layer reads the new features through zero weights, so the function
        is the same and training starts using them from there (their gradients are not zero).
        Weights of any other input width are left as they are (``init_from`` then names the mismatch)."""
        out = dict(state)
        own = self.state_dict()
        for name, value in state.items():
            if not name.startswith("layers.0.weight_ih") or name not in own or value.dim() != 2:
                continue
            mine = own[name]
            if value.shape[1] == old_input < mine.shape[1] and value.shape[0] <= mine.shape[0]:
                out[name] = nn.functional.pad(value, (0, mine.shape[1] - value.shape[1]))  # zero columns
        return out

    @staticmethod
    def widen_columns(value: torch.Tensor, own: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """A consumer's weight ``(out, old features)`` widened to ``own``'s ``(out, new features)``:
        the old columns at their new places (``index`` from :meth:`widen_state`), zero elsewhere."""
        widened = torch.zeros_like(own)
        widened[:, index] = value.to(own.dtype)
        return widened

    def forward(self, features: torch.Tensor, all_blocks: bool = False) -> list[torch.Tensor]:
        x = features
        outputs = []
        for i, layer in enumerate(self.layers):
            y = self.dropout(layer(x)[0])
            x = x + y if (self.config.residual and i > 0) else y
            if all_blocks or i == len(self.layers) - 1:
                outputs.append(x)
        return outputs
