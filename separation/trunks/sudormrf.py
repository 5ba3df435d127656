"""asteroid's SuDO-RM-RF as a trunk (Tzinis, Wang, Smaragdis, MLSP 2020, arXiv:2007.06833):
successive U-ConvBlocks that down- and up-sample along time, cheap per frame.

asteroid is a training extra: building this trunk without it fails with one line naming the extra.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from frontend.errors import VoxsepError
from separation.trunks import register_trunk


@register_trunk("sudormrf")
class SuDORMRFTrunk(nn.Module):
    """asteroid's ``SuDORMRF`` masker with one "source" and a linear output: its
    ``(B, 1, input_size, F)`` output are the trunk features (``output_size == input_size``)."""

    @dataclass
    class Config:
        bottleneck_size: int = 128
        n_blocks: int = 16
        upsampling_depth: int = 4

    def __init__(self, input_size: int, config: "SuDORMRFTrunk.Config"):
        super().__init__()
        try:
            from asteroid.masknn import SuDORMRF
        except ImportError:
            raise VoxsepError("the sudormrf trunk needs asteroid: pip install 'voxsep[train]'") from None
        self.config = config
        self.output_size = input_size
        self.net = SuDORMRF(input_size, n_src=1, bn_chan=config.bottleneck_size, num_blocks=config.n_blocks,
                            upsampling_depth=config.upsampling_depth, mask_act="linear")
        self._multiple = 2 ** config.upsampling_depth

    def forward(self, features: torch.Tensor, all_blocks: bool = False) -> list[torch.Tensor]:
        n_frames = features.shape[1]
        x = features.transpose(1, 2)  # (B, N, F)
        pad = (-n_frames) % self._multiple  # the U-blocks halve the length upsampling_depth times
        if pad:
            x = nn.functional.pad(x, (0, pad))
        # asteroid's final Conv2d pads one row too many for an odd width: keep the first N rows
        y = self.net(x)[:, 0, :self.output_size, :n_frames]  # (B, N, F)
        return [y.transpose(1, 2)]
