"""Trunks of the composed multi-head separator: a registry and one contract.

A trunk maps encoder features ``(B, F, input_size)`` (``F`` frames) to trunk features
``(B, F, output_size)``; the per-count decoder heads and the count head of
:class:`separation.model.MultiHeadSeparator` sit on top of it, written once for every trunk.

Contract (checked for every registered trunk by ``tests/separation/test_trunks.py``):

* a class decorated with :func:`register_trunk` ``("name")`` with a dataclass ``Config`` of its
  sizes (plain types only: it is stored in checkpoints);
* ``__init__(input_size: int, config: Config)``; attribute ``output_size``;
* ``forward(features (B, F, input_size), all_blocks: bool) -> list[(B, F, output_size)]``: the
  output after every block when ``all_blocks`` (SVoice's multi-scale loss), else only the last;
* the number of frames is kept, any ``F >= 1`` works.

Adding a trunk is one file in this package that registers itself; import it below.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, TypeVar

from torch import nn

from separation.parts import PartRegistry

T = TypeVar("T", bound=type)

TRUNKS = PartRegistry("trunk")


def register_trunk(name: str) -> Callable[[T], T]:
    """Class decorator: make a trunk buildable by :func:`build_trunk` under ``name``."""
    def decorator(cls: T) -> T:
        cls.args_first = True  # trunks are built as cls(input_size, config)
        return TRUNKS.register(name)(cls)
    return decorator


def trunk_config(config: Mapping[str, Any]) -> dict:
    """A trunk spec ``{type: NAME, **sizes}`` with every default filled in (what checkpoints store)."""
    return TRUNKS.full_config(config)


def build_trunk(config: Mapping[str, Any], input_size: int) -> nn.Module:
    """Build the trunk ``config["type"]`` for ``input_size`` features per frame."""
    return TRUNKS.build(config, input_size)


# the built-in trunks register themselves
from separation.trunks import blstm, dprnn, mulcat, sudormrf  # noqa: E402,F401
