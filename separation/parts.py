"""One registry for the parts of the composed separator (encoders, trunks, counters).

A part is a class with a dataclass ``Config`` of plain-typed sizes. A spec is a dict
``{type: NAME, **sizes}``; :meth:`PartRegistry.full_config` fills in every default (what checkpoints
store, so a checkpoint rebuilds exactly the same part) and names unknown types and keys in one
line; :meth:`PartRegistry.build` constructs the part.
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Any, Callable, Mapping, TypeVar

from engine.checkpoint import config_from_dict
from frontend.errors import VoxsepError

T = TypeVar("T", bound=type)


class PartRegistry:
    """Name -> class for one kind of part (``kind`` is used in messages, e.g. "trunk")."""

    def __init__(self, kind: str, plural: str | None = None):
        self.kind = kind
        self.plural = plural or f"{kind}s"
        self.classes: dict[str, type] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Class decorator: register a part under ``name``."""
        def decorator(cls: T) -> T:
            old = self.classes.get(name)
            if old is not None and old.__qualname__ != cls.__qualname__:
                raise ValueError(f"{self.kind} name {name!r} is already registered to {old.__qualname__}")
            self.classes[name] = cls
            cls.part_name = name
            return cls
        return decorator

    def full_config(self, config: Mapping[str, Any]) -> dict:
        """The spec with every default filled in (tuples as lists: plain YAML/checkpoint data)."""
        config = dict(config)
        name = config.pop("type", None)
        if name not in self.classes:
            raise VoxsepError(f"unknown {self.kind} {name!r} (known {self.plural}: {', '.join(sorted(self.classes))})")
        try:
            sizes = config_from_dict(self.classes[name].Config, config, f"{self.kind} {name}")
        except TypeError as err:
            raise VoxsepError(str(err)) from None
        return {"type": name, **{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(sizes).items()}}

    def build(self, config: Mapping[str, Any], *args: Any) -> Any:
        """``cls(cls.Config(**sizes), *args)`` (``*args`` first when the part asks for it, see
        ``args_first``)."""
        full = self.full_config(config)
        cls = self.classes[full.pop("type")]
        sizes = cls.Config(**full)
        return cls(*args, sizes) if getattr(cls, "args_first", False) else cls(sizes, *args)
