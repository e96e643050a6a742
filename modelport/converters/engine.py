"""The streaming engine: plan a conversion from a reader's names through a mapping, resolve the config,
then pipe tensors one at a time reader -> mapping transforms -> writer."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from modelport.converters.base import DTYPES, Reader, TensorInfo, Writer, dtype_name, is_floating
from modelport.errors import ModelportError
from modelport.mappings import MAPPINGS
from modelport.mappings.base import CANONICAL, RANK, Mapping, Match, ModelClass, Row, evaluate


@dataclass
class Planned:
    """One canonical tensor and the source tensors (parts) it is made of."""

    canonical: str
    row: Row
    values: dict[str, int]
    sources: list[str]
    info: TensorInfo  # canonical shape, source dtype


@dataclass
class Plan:
    mapping: Mapping
    scheme: str
    reader: Reader
    tensors: dict[str, Planned] = field(default_factory=dict)
    training_state: list[str] = field(default_factory=list)
    aliases: list[tuple[str, str, str]] = field(default_factory=list)  # (source name, kind, canonical target)
    unknown: list[str] = field(default_factory=list)

    @property
    def parts(self) -> set[str]:
        return {p.row.part for p in self.tensors.values()}

    def action(self, name: str) -> str:
        """What the conversion does with a source tensor, for `inspect`."""
        for planned in self.tensors.values():
            if name in planned.sources:
                return f"-> {planned.canonical}"
        for source, kind, target in self.aliases:
            if source == name:
                return f"{kind} ({target})" if target else kind
        return "skipped (training state)" if name in self.training_state else "UNKNOWN"


def describe(reader: Reader) -> str:
    """What a checkpoint looks like, for errors when it matches no requested architecture."""
    ranked = sorted(((m.detect_scheme(reader.names()), m.arch) for m in MAPPINGS.values()), reverse=True)
    (scheme, hits), arch = ranked[0]
    if hits == 0:
        sample = ", ".join(reader.names()[:3])
        return f"no architecture modelport knows (tensors such as {sample})"
    return f"a {arch} checkpoint ({scheme} names, {hits} of {len(reader.names())} tensors recognised)"


def plan_source(mapping: Mapping, reader: Reader, schemes: list[str] | None = None) -> Plan:
    names = reader.names()
    scheme, hits = mapping.detect_scheme(names, schemes)
    weights = [n for n in names if not mapping.is_training_state(n)]
    if not weights:
        raise ModelportError(f"{reader.path}: holds no weights (only training state)")
    if hits < len(weights) / 2:
        raise ModelportError(f"{reader.path}: does not look like a {mapping.arch} checkpoint: it looks like {describe(reader)}")
    plan = Plan(mapping, scheme, reader)
    parts: dict[str, tuple[Match, dict[int, str]]] = {}
    for name in names:
        match = mapping.match(scheme, name)
        if match is not None:
            parts.setdefault(match.canonical, (match, {}))[1][match.index] = name
        elif mapping.is_training_state(name):
            plan.training_state.append(name)
        elif (alias := mapping.alias_of(scheme, name)) is not None:
            plan.aliases.append((name, *alias))
        else:
            plan.unknown.append(name)
    ranks = 1 + max((i for m, found in parts.values() if m.partitioned for i in found), default=0)
    for canonical, (match, found) in parts.items():
        patterns = match.row.names[scheme]
        expected = range(ranks) if match.partitioned else range(len(patterns))
        missing = [i for i in expected if i not in found]
        if missing:
            what = (f"model-parallel rank(s) {missing} of {ranks}" if match.partitioned else
                    ", ".join(patterns[i].format(match.values) for i in missing))
            raise ModelportError(f"{reader.path}: {canonical} needs {what}, which is missing")
        sources = [found[i] for i in expected]
        shapes = [reader.infos[s].shape for s in sources]
        for op in match.row.to_canonical(scheme):
            shapes = op.apply_shape(shapes, {})
        plan.tensors[canonical] = Planned(canonical, match.row, match.values, sources,
                                          TensorInfo(tuple(shapes[0]), reader.infos[sources[0]].dtype))
    return plan


def read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except OSError as error:
        raise ModelportError(f"{path}: cannot read {what}: {error.strerror}")
    except (ValueError, UnicodeDecodeError):
        raise ModelportError(f"{path}: {what} is not valid JSON")
    if not isinstance(data, dict):
        raise ModelportError(f"{path}: {what} is not a JSON object")
    return data


def source_directory(reader: Reader) -> Path:
    return reader.path if reader.path.is_dir() else reader.path.parent


def source_config(plan: Plan) -> tuple[dict, Path | None]:
    """The config shipped beside the checkpoint, translated to HF fields (empty when there is none)."""
    name = plan.mapping.config_files.get(plan.scheme)
    path = source_directory(plan.reader) / name if name else None
    if path is None or not path.is_file():
        return {}, None
    return plan.mapping.config_to_hf(plan.scheme, read_json(path, "config")), path


def resolve_config(plan: Plan, shipped: dict, override: dict) -> dict:
    """Config = override > shipped config > tensor shapes; then every shape is checked against it."""
    mapping = plan.mapping
    config = {**shipped, **override}
    for variable, config_field in mapping.counts.items():
        indices = [p.values[variable] for p in plan.tensors.values() if variable in p.values]
        if indices and config_field not in config:
            config[config_field] = max(indices) + 1
    for planned in plan.tensors.values():
        for expression, size in zip(planned.row.shape or (), planned.info.shape):
            if isinstance(expression, str) and expression.isidentifier() and expression not in config:
                config[expression] = size
    missing = [f for f in mapping.required_config if f not in config]
    if missing:
        example = json.dumps({f: "N" for f in missing}).replace('"N"', "N")
        raise ModelportError(f"{', '.join(missing)} cannot be read from tensor shapes and no config gives it: "
                             f"pass --config FILE with {example}")
    for constraint in mapping.constraints:
        if evaluate(constraint, config) == 0:
            values = ", ".join(f"{n}={config.get(n)}" for n in re.findall(r"[A-Za-z_]\w*", constraint))
            raise ModelportError(f"the config breaks {constraint} ({values})")
    for planned in plan.tensors.values():
        if planned.row.shape is None:
            continue
        expected = tuple(evaluate(e, config) for e in planned.row.shape)
        if len(expected) != len(planned.info.shape) or any(
                e is not None and e != s for e, s in zip(expected, planned.info.shape)):
            source = ", ".join(planned.sources)
            raise ModelportError(f"tensor {source} has shape {list(planned.info.shape)} but the config implies "
                                 f"{list(expected)} ({', '.join(map(str, planned.row.shape))})")
    return config


def check_complete(plan: Plan, config: dict) -> ModelClass:
    """Every row of every part the checkpoint holds is present for every layer; the parts name a class."""
    mapping = plan.mapping
    present = set(plan.tensors)
    missing = []
    for row in mapping.rows:
        if row.part not in plan.parts:
            continue
        for values in _index_space(set(row.hf.variables), mapping.counts, config):
            name = row.hf.format(values)
            if name not in present:
                missing.append(name)
    if missing:
        raise ModelportError(f"{plan.reader.path}: incomplete {mapping.arch} checkpoint, missing "
                             f"{len(missing)} tensors: {', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}")
    model_class = mapping.model_class(plan.parts)
    if model_class is None:
        raise ModelportError(f"{plan.reader.path}: holds the parts {sorted(plan.parts)}, which match no "
                             f"transformers class modelport knows for {mapping.arch}")
    return model_class


def _index_space(variables: set[str], counts: dict[str, str], config: dict) -> Iterator[dict[str, int]]:
    if not variables:
        yield {}
        return
    variable, *rest = sorted(variables)
    for index in range(int(config[counts[variable]])):
        for tail in _index_space(set(rest), counts, config):
            yield {variable: index, **tail}


def build(plan: Plan, planned: Planned, context: dict) -> np.ndarray:
    """One canonical tensor, made from its source parts."""
    parts = [plan.reader.read(s) for s in planned.sources]
    for op in planned.row.to_canonical(plan.scheme):
        parts = op.apply(parts, context)
    return parts[0]


def check_ties(plan: Plan) -> None:
    """A tied alias in the source must equal its target: an untied head cannot be dropped silently."""
    for source, kind, target in plan.aliases:
        if kind != "tied":
            continue
        planned = plan.tensors.get(target)
        if planned is None or len(planned.sources) != 1:
            raise ModelportError(f"{plan.reader.path}: {source} is tied to {target}, which the checkpoint lacks")
        if not np.array_equal(plan.reader.read(source), plan.reader.read(planned.sources[0])):
            raise ModelportError(f"{plan.reader.path}: {source} differs from {target}: an untied head, which the "
                                 f"{plan.mapping.arch} mapping ties")


def output_dtype(plan: Plan, requested: str | None) -> np.dtype:
    """The requested dtype, else the dtype holding most floating-point parameters of the source."""
    if requested:
        if requested not in ("float32", "float16", "bfloat16"):
            raise ModelportError(f"--dtype {requested}: choose float32, float16 or bfloat16")
        return DTYPES[requested]
    sizes: dict[np.dtype, int] = {}
    for planned in plan.tensors.values():
        if is_floating(planned.info.dtype):
            sizes[planned.info.dtype] = sizes.get(planned.info.dtype, 0) + planned.info.numel
    return max(sizes, key=sizes.get) if sizes else DTYPES["float32"]


def cast(array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    return array.astype(dtype) if is_floating(array.dtype) and array.dtype != dtype else array


@dataclass
class Step:
    planned: Planned
    targets: list[str]


def target_layout(plan: Plan, scheme: str, model_class: ModelClass, dtype: np.dtype,
                  context: dict) -> tuple[list[Step], dict[str, TensorInfo]]:
    """Names, shapes and dtypes of every tensor the writer will get, in writing order."""
    steps, specs = [], {}
    strip = plan.mapping.base_prefix if scheme == CANONICAL and model_class.bare else ""
    for planned in plan.tensors.values():
        patterns = planned.row.names.get(scheme)
        if not patterns:
            raise ModelportError(f"{planned.canonical} has no name in the {scheme} layout")
        targets = [p.format({**planned.values, RANK: rank}) for p in patterns
                   for rank in (range(context["ranks"]) if RANK in p.variables else [0])]
        if strip:
            targets = [t[len(strip):] if t.startswith(strip) else t for t in targets]
        shapes = [planned.info.shape]
        for op in planned.row.from_canonical(scheme):
            shapes = op.apply_shape(shapes, context)
        kept = dtype if is_floating(planned.info.dtype) else planned.info.dtype
        for target, shape in zip(targets, shapes, strict=True):
            specs[target] = TensorInfo(tuple(shape), kept)
        steps.append(Step(planned, targets))
    return steps, specs


def stream(plan: Plan, steps: list[Step], writer: Writer, scheme: str, dtype: np.dtype, context: dict,
           advance: Callable[[int], None] = lambda n: None) -> None:
    for step in steps:
        parts = [cast(build(plan, step.planned, context), dtype)]
        for op in step.planned.row.from_canonical(scheme):
            parts = op.apply(parts, context)
        for target, part in zip(step.targets, parts, strict=True):
            writer.write(target, part)
            advance(part.nbytes)


RECOMPUTED_FIELDS = {"architectures", "model_type", "dtype", "torch_dtype", "transformers_version"}


def hf_config(mapping: Mapping, config: dict, model_class: ModelClass, dtype: np.dtype) -> dict:
    """config.json for transformers' Auto classes."""
    fields = {k: v for k, v in config.items() if k not in RECOMPUTED_FIELDS}
    return {"architectures": [model_class.name], "model_type": mapping.model_type, **fields, "dtype": dtype_name(dtype)}


def parameter_count(plan: Plan) -> int:
    return sum(p.info.numel for p in plan.tensors.values())
