"""The architecture registry: one module per architecture, each exporting MAPPING."""

from __future__ import annotations

from modelport.errors import ModelportError
from modelport.mappings import bert
from modelport.mappings.base import Mapping

MAPPINGS: dict[str, Mapping] = {m.arch: m for m in (bert.MAPPING,)}


def get_mapping(arch: str) -> Mapping:
    try:
        return MAPPINGS[arch.lower()]
    except KeyError:
        raise ModelportError(f"unknown architecture {arch!r}: choose one of {', '.join(MAPPINGS)}") from None
