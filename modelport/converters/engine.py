"""The streaming engine: plan a conversion from a reader's names through a mapping, resolve the config,
then pipe tensors one at a time reader -> mapping transforms -> writer."""

from __future__ import annotations

import collections
import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from modelport.converters.base import DTYPES, Reader, TensorInfo, Writer, dtype_name, is_floating
from modelport.converters.configs import read_config
from modelport.converters.positions import check_extension, describe as describe_extension, extend_table
from modelport.errors import ModelportError
from modelport.mappings import MAPPINGS
from modelport.mappings.base import (CANONICAL, FILLED, RANK, Filler, Mapping, Match, ModelClass, RankMismatch, Row,
                                     evaluate, files_scheme)


@dataclass
class Planned:
    """One canonical tensor and the source tensors (parts) it is made of."""

    canonical: str
    row: Row
    values: dict[str, int]
    sources: list[str]
    info: TensorInfo  # canonical shape, source dtype
    rewrite: Callable[[np.ndarray], np.ndarray] | None = None  # a canonical-stage transform (position extension)
    inward: tuple | None = None  # the ops making it from no source tensor, where the scheme stores none


@dataclass
class Plan:
    mapping: Mapping
    scheme: str
    reader: Reader
    tensors: dict[str, Planned] = field(default_factory=dict)
    training_state: list[str] = field(default_factory=list)
    aliases: list[tuple[str, str, str]] = field(default_factory=list)  # (source name, kind, canonical target)
    unknown: list[str] = field(default_factory=list)
    elsewhere: list[tuple[str, str]] = field(default_factory=list)  # (source name, the other variant it belongs to)
    ranks: int = 0  # model-parallel ranks of a partitioned source (0: not partitioned)

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
        for source, variant in self.elsewhere:
            if source == name:
                return f"skipped ({variant}: --part {variant})"
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
    hint = source_config(plan)[0] if mapping.needs_config(scheme) else None  # names that depend on the config
    parts: dict[str, tuple[Match, dict[int, str]]] = {}
    for name in names:
        match = mapping.match(scheme, name, hint)
        if match is not None:
            parts.setdefault(match.canonical, (match, {}))[1][match.index] = name
        elif mapping.is_training_state(name):
            plan.training_state.append(name)
        elif (alias := mapping.alias_of(scheme, name)) is not None:
            plan.aliases.append((name, *alias))
        elif (variant := mapping.variant_of(scheme, name)) is not None:
            plan.elsewhere.append((name, variant))
        else:
            plan.unknown.append(name)
    ranks = 1 + max((i for m, found in parts.values() if m.partitioned for i in found), default=0)
    plan.ranks = ranks if any(m.partitioned for m, _ in parts.values()) else 0
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
    _drop_saved_ties(plan)
    if hint is not None:
        _drop_fillers(plan, hint)
    return plan


def _drop_saved_ties(plan: Plan) -> None:
    """An HF checkpoint may save a tie twice (PyTorch pickles hold lm_head.weight beside the embedding it is):
    a copy equal to the tensor it may be tied to is a tied alias, not a tensor of its own."""
    if plan.scheme != CANONICAL:
        return
    for name, target in plan.mapping.optional_ties.items():
        copy, original = plan.tensors.get(name), plan.tensors.get(target)
        if copy and original and copy.info == original.info and np.array_equal(
                plan.reader.read(copy.sources[0]), plan.reader.read(original.sources[0])):
            del plan.tensors[name]
            plan.aliases.append((copy.sources[0], "tied", target))


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
    """The config shipped beside the checkpoint, translated to HF fields (empty when there is none). The
    name may be a glob: albert_zh releases call it albert_config_<size>.json."""
    scheme = files_scheme(plan.scheme)
    name = plan.mapping.config_files.get(scheme)
    found = sorted(p for p in source_directory(plan.reader).glob(name) if p.is_file()) if name else []
    if len(found) > 1:
        raise ModelportError(f"{source_directory(plan.reader)}: several config files "
                             f"({', '.join(p.name for p in found)}): keep the one of this checkpoint")
    if not found:
        return {}, None
    return plan.mapping.config_to_hf(scheme, read_config(found[0])), found[0]


def resolve_config(plan: Plan, shipped: dict, override: dict) -> dict:
    """Config = override > shipped config > what the scheme's code hard-codes > tensor shapes > what the
    mapping computes from those (heads from the hidden size); then every shape is checked against it, and the
    tensors the scheme leaves implicit join the plan."""
    mapping = plan.mapping
    config = {**mapping.defaults.get(plan.scheme, {}), **shipped, **override}
    for variable, config_field in mapping.counts.items():
        indices = [p.values[variable] for p in plan.tensors.values() if variable in p.values]
        if indices and config_field not in config:
            config[config_field] = max(indices) + 1
    for planned in plan.tensors.values():
        for expression, size in zip(planned.row.shape or (), planned.info.shape):
            if isinstance(expression, str) and expression.isidentifier() and expression not in config:
                config[expression] = size
    _solve_products(plan, config)
    if mapping.structure_config:
        config.update(mapping.structure_config(plan.parts, config))
    for key, value in (mapping.computed_defaults(config) if mapping.computed_defaults else {}).items():
        config.setdefault(key, value)
    missing = [f for f in mapping.required_config if f not in config]
    if missing:
        example = json.dumps({f: "N" for f in missing}).replace('"N"', "N")
        raise ModelportError(f"{', '.join(missing)} cannot be read from tensor shapes and no config gives it: "
                             f"pass --config FILE with {example}")
    for constraint in mapping.constraints:
        if evaluate(constraint, config) == 0:
            values = ", ".join(f"{n}={config.get(n)}" for n in re.findall(r"[A-Za-z_]\w*", constraint))
            hint = mapping.constraint_hints.get(constraint)
            raise ModelportError(f"the config breaks {constraint} ({values}){f': {hint}' if hint else ''}")
    for planned in plan.tensors.values():
        if planned.row.shape is None:
            continue
        expected = tuple(evaluate(e, config) for e in planned.row.shape)
        if len(expected) != len(planned.info.shape) or any(
                e is not None and e != s for e, s in zip(expected, planned.info.shape)):
            source = ", ".join(planned.sources)
            raise ModelportError(f"tensor {source} has shape {list(planned.info.shape)} but the config implies "
                                 f"{list(expected)} ({', '.join(map(str, planned.row.shape))})")
    _plan_constants(plan, config)
    return config


def _drop_fillers(plan: Plan, config: dict) -> None:
    """A filler that a row's name also matches is the filler when the config names it so: KerasHub ELECTRA's
    pooled_dense is `dense`, the name of the embedding projection, in a backbone without one."""
    for filler in plan.mapping.fillers.get(plan.scheme, ()):
        target = filler.target(config)
        for canonical, planned in list(plan.tensors.items()):
            if target in planned.sources:
                del plan.tensors[canonical]
                plan.aliases.append((target, FILLED, ""))


def _plan_constants(plan: Plan, config: dict) -> None:
    """Tensors the scheme does not store, made from the config: a row naming no pattern there, by its ops
    (albert_zh's identity embedding projection), and a row absent from this checkpoint where the scheme's
    network has none under this config, by the ops of Row.absent (Google's ALBERT with E == H)."""
    for row in plan.mapping.rows:
        if row.part not in plan.parts:
            continue
        stores_none = row.names.get(plan.scheme) == ()
        ops = row.to_canonical(plan.scheme) if stores_none else row.implied(plan.scheme, config)
        if ops is None:
            continue
        for values in _index_space(set(row.hf.variables), plan.mapping.counts, config):
            canonical = row.hf.format(values)
            if canonical in plan.tensors:
                continue
            shapes: list[tuple] = []
            for op in ops:
                shapes = op.apply_shape(shapes, {"config": config})
            plan.tensors[canonical] = Planned(canonical, row, values, [], TensorInfo(tuple(shapes[0]),
                                                                                     DTYPES["float32"]), inward=ops)


def _solve_products(plan: Plan, config: dict) -> None:
    """A shape entry `a*b` with one unknown factor tells it: the size over the known factors (T5's attention
    width num_heads*d_kv gives d_kv once num_heads is known)."""
    for planned in plan.tensors.values():
        for expression, size in zip(planned.row.shape or (), planned.info.shape):
            factors = expression.split("*") if isinstance(expression, str) else []
            unknown = [f for f in factors if f.isidentifier() and f not in config]
            known = [evaluate(f, config) for f in factors if f not in unknown]
            if len(factors) > 1 and len(unknown) == 1 and None not in known:
                divisor = int(np.prod(known))
                if divisor and size % divisor == 0:
                    config[unknown[0]] = size // divisor


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
    return target_parts(plan, planned, context, CANONICAL)[0]


def target_parts(plan: Plan, planned: Planned, context: dict, scheme: str,
                 dtype: np.dtype | None = None) -> list[np.ndarray]:
    """One planned tensor in the target scheme (its parts there), cast to `dtype` on the way. The ops into the
    canonical form and back out meet in the middle; pairs there that undo each other are skipped unless a
    rewrite needs the canonical tensor (extend's TF1 -> TF1 transposes no kernel twice)."""
    inward = planned.inward if planned.inward is not None else planned.row.to_canonical(plan.scheme)
    outward = planned.row.from_canonical(scheme)
    while planned.rewrite is None and inward and outward and inward[-1].undone_by(outward[0]):
        inward, outward = inward[:-1], outward[1:]
    parts = [plan.reader.read(s) for s in planned.sources]
    try:
        for op in inward:
            parts = op.apply(parts, context)
    except RankMismatch as mismatch:
        raise ModelportError(f"{plan.reader.path}: {planned.sources[mismatch.rank]} differs from {planned.sources[0]}, "
                             "which every model-parallel rank must hold identically (rank files from different "
                             "checkpoints?)") from None
    if planned.rewrite:
        parts = [planned.rewrite(parts[0])]
    parts = [cast(part, dtype) for part in parts] if dtype is not None else parts  # elementwise: any stage will do
    for op in outward:
        parts = op.apply(parts, context)
    return parts


def extend_positions(plan: Plan, config: dict, positions: int, method: str, alpha: float) -> tuple[dict, str]:
    """Plan the mapping's learned position table at `positions` rows (plus its reserved ones): the writer is
    announced the new shape and `build` computes the rows. Returns the config stating the new length and a
    note saying what changed."""
    table = plan.mapping.positions
    if table is None:
        raise ModelportError(f"{plan.reader.path}: {plan.mapping.arch} has no learned absolute position table "
                             "to extend")
    planned = plan.tensors.get(table.tensor)
    if planned is None:
        raise ModelportError(f"{plan.reader.path}: holds no position table ({table.tensor}) to extend")
    rows, *rest = planned.info.shape
    trained = rows - table.reserved
    check_extension(trained, positions, method, alpha)
    planned.info = TensorInfo((table.reserved + positions, *rest), planned.info.dtype)
    planned.rewrite = lambda array: extend_table(array, positions, method, alpha, table.reserved)
    length = table.reserved + positions
    extended = {**config, table.config_field: length, **{alias: length for alias in table.aliases if alias in config}}
    return extended, describe_extension(trained, positions, method, alpha)


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
    planned: Planned | None
    targets: list[str]
    filler: Filler | None = None  # a tensor only the target scheme holds, made from the config (no planned one)
    implied: tuple | None = None  # the ops making what the target scheme implies here (Row.absent): the planned
    # tensor is checked against them and not written


def target_layout(plan: Plan, scheme: str, model_class: ModelClass, dtype: np.dtype,
                  context: dict) -> tuple[list[Step], dict[str, TensorInfo]]:
    """Names, shapes and dtypes of every tensor the writer will get, in writing order."""
    for row in plan.mapping.rows:
        if scheme in row.names:
            row.from_canonical(scheme)  # a layout that cannot be written (a one-way op) refuses here, first
    steps, specs = [], {}
    strip = plan.mapping.base_prefix if scheme == CANONICAL and model_class.bare else ""
    omitted = plan.mapping.omitted.get(scheme, ())
    for planned in plan.tensors.values():
        if planned.row.part in omitted:
            continue
        implied = planned.row.implied(scheme, context["config"])
        if implied is not None:
            steps.append(Step(planned, [], implied=implied))
            continue
        patterns = planned.row.names.get(scheme)
        if not patterns:
            raise ModelportError(f"{planned.canonical} has no name in the {scheme} layout")
        targets = [p.format({**context["config"], **planned.values, RANK: rank}) for p in patterns
                   for rank in (range(context["ranks"]) if RANK in p.variables else [0])]
        if strip:
            targets = [t[len(strip):] if t.startswith(strip) else t for t in targets]
        shapes = [planned.info.shape]
        for op in planned.row.from_canonical(scheme):
            shapes = op.apply_shape(shapes, context)
        kept = dtype if is_floating(planned.info.dtype) else planned.info.dtype
        for target, shape in zip(targets, shapes, strict=True):
            if target in specs:
                raise ModelportError(f"{planned.canonical} and another tensor are both {target} in the {scheme} layout")
            specs[target] = TensorInfo(tuple(shape), kept)
        steps.append(Step(planned, targets))
    for filler in plan.mapping.fillers.get(scheme, ()):
        target = filler.target(context["config"])
        if target in specs:
            raise ModelportError(f"{target} is both a tensor of the model and one only the {scheme} layout holds")
        specs[target] = TensorInfo(tuple(evaluate(e, context["config"]) for e in filler.shape), dtype)
        steps.append(Step(None, [target], filler))
    return steps, specs


def select_part(mapping: Mapping, reader: Reader, part: str | None) -> Mapping:
    """The variant of a several-network mapping to convert: the part asked for, else the one the checkpoint
    holds alone, else the default (the registered mapping). A part the checkpoint lacks is an error."""
    if not mapping.variants:
        if part:
            raise ModelportError(f"--part {part}: a {mapping.arch} checkpoint holds a single network")
        return mapping
    if part and part not in mapping.variants:
        raise ModelportError(f"--part {part}: {mapping.arch} has the parts {', '.join(mapping.variants)}")
    explainers = mapping.explainers(reader.names())
    held = mapping.held_variants(explainers)
    if part and held and part not in held:
        raise ModelportError(f"{reader.path}: holds no {mapping.arch} {part}, only the {' and '.join(held)}")
    chosen = mapping.variants[part or (held[0] if len(held) == 1 else mapping.variant)]
    return max(chosen.layouts(), key=lambda layout: layout.own_names(explainers))


def combine(parts: list[tuple[Plan, list[Step], dict[str, TensorInfo], dict]]
            ) -> tuple[list[tuple[Plan, list[Step], dict]], dict[str, TensorInfo]]:
    """Several networks written into one checkpoint, each as (plan, steps, specs, context): a tensor two of
    them name alike (the embeddings ELECTRA's generator shares) must be equal in both and is written once.
    Returns what each part still writes, and the specs of the whole checkpoint."""
    specs: dict[str, TensorInfo] = {}
    owners: dict[str, tuple[Plan, Step, dict]] = {}
    jobs = []
    for plan, steps, part_specs, context in parts:
        kept = []
        for step in steps:
            owner = owners.get(step.targets[0]) if step.targets else None
            if owner is None:
                kept.append(step)
                owners.update(dict.fromkeys(step.targets, (plan, step, context)))
                specs.update({t: part_specs[t] for t in step.targets})
                continue
            other, other_step, other_context = owner
            if not np.array_equal(build(plan, step.planned, context), build(other, other_step.planned, other_context)):
                raise ModelportError(f"{plan.reader.path}: {step.planned.canonical} differs from the one in "
                                     f"{other.reader.path}, but the checkpoint holds one {step.targets[0]} for both")
        jobs.append((plan, kept, context))
    return jobs, specs


def check_implied(plan: Plan, planned: Planned, implied: tuple, scheme: str, context: dict) -> None:
    """A tensor the target scheme's network lacks (Row.absent) may be left out only when it is what that
    network computes instead: Google's ALBERT without a projection is the identity."""
    expected: list[np.ndarray] = []
    for op in implied:
        expected = op.apply(expected, context)
    actual = build(plan, planned, context)
    if actual.shape != expected[0].shape or not np.array_equal(actual, expected[0].astype(actual.dtype)):
        raise ModelportError(f"{planned.canonical}: {implied[-1].reason}, and this model's is not the one implied "
                             f"there: in the {scheme} layout it would compute something else")


AHEAD_BYTES = 64 << 20  # how far (in prepared, unwritten bytes) reading may run ahead of writing
PREPARE_THREADS = 2  # reading, checksums and transposes take more time than writing: two threads share them


def stream(plan: Plan, steps: list[Step], writer: Writer, scheme: str, dtype: np.dtype, context: dict,
           advance: Callable[[int], None] = lambda n: None) -> None:
    """Write every step's tensors in order, while PREPARE_THREADS threads prepare (read, check, transform) the
    next ones: as many as fit in AHEAD_BYTES, and always the next one. (A layer's large kernels alternate with
    tiny biases, so a lookahead of one tensor would leave reading and writing taking turns.)"""
    def prepare(step: Step) -> list[np.ndarray]:
        if step.filler:
            return [cast(step.filler.make(context["config"]), dtype)]
        if step.implied is not None:
            check_implied(plan, step.planned, step.implied, scheme, context)
            return []
        return target_parts(plan, step.planned, context, scheme, dtype)

    sizes = [sum(writer.specs[target].nbytes for target in step.targets) for step in steps]
    preparer = ThreadPoolExecutor(max_workers=PREPARE_THREADS)
    pending: collections.deque = collections.deque()  # futures of steps submitted and not yet written
    submitted = ahead = 0
    try:
        for index, step in enumerate(steps):
            while submitted < len(steps) and (not pending or ahead + sizes[submitted] <= AHEAD_BYTES):
                pending.append(preparer.submit(prepare, steps[submitted]))
                ahead += sizes[submitted]
                submitted += 1
            parts = pending.popleft().result()
            for target, part in zip(step.targets, parts, strict=True):
                writer.write(target, part)
                advance(part.nbytes)
            ahead -= sizes[index]
            del parts
            if step.planned is not None:
                plan.reader.release(step.planned.sources)
    finally:
        preparer.shutdown(cancel_futures=True)


RECOMPUTED_FIELDS = {"architectures", "model_type", "dtype", "torch_dtype", "transformers_version"}


def hf_config(mapping: Mapping, config: dict, model_class: ModelClass, dtype: np.dtype) -> dict:
    """config.json for transformers' Auto classes."""
    fields = {k: v for k, v in config.items() if k not in RECOMPUTED_FIELDS}
    return {"architectures": [model_class.name], "model_type": mapping.model_type, **fields, "dtype": dtype_name(dtype)}


def parameter_count(plan: Plan) -> int:
    return sum(p.info.numel for p in plan.tensors.values())
