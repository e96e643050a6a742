"""The architecture registry: one module per architecture, each exporting MAPPING (or MAPPINGS when
several architectures share one table)."""

from __future__ import annotations

from modelport.errors import ModelportError
from modelport.mappings import albert, bert, cpm, electra, t5
from modelport.mappings.base import Mapping

MAPPINGS: dict[str, Mapping] = {m.arch: m for m in (bert.MAPPING, cpm.MAPPING, *t5.MAPPINGS, albert.MAPPING,
                                                     electra.MAPPING)}


def get_mapping(arch: str) -> Mapping:
    try:
        return MAPPINGS[arch.lower()]
    except KeyError:
        raise ModelportError(f"unknown architecture {arch!r}: choose one of {', '.join(MAPPINGS)}") from None
