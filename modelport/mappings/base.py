"""Declarative weight mappings: each row is one canonical tensor (its Hugging Face name) with all its known
names in other naming schemes, and the transforms that turn each scheme's layout into the canonical one.
Every transform knows its reverse, so one table converts in both directions; layer indices are pattern
variables (`{layer}`, or `{block:03}` for zero-padded ones), never loops in code.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from modelport.errors import ModelportError

CANONICAL = "hf"
RANK = "rank"  # the pattern variable of model-parallel partitions: one source tensor per rank, in rank order


class RankMismatch(ModelportError):
    """A rank's part disagrees with rank 0's where they must be equal; the engine names both tensors."""

    def __init__(self, rank: int):
        super().__init__(f"model-parallel rank {rank} differs from rank 0")
        self.rank = rank


# Training state written next to the weights: skipped and reported, never converted.
OPTIMIZER_PATTERNS = [
    r".*/(adam_m|adam_v|Adam|Adam_1|lamb_m|lamb_v|Momentum|RMSProp|RMSProp_1|Adagrad|AdagradDA)$",
    r".*_slot_(vc|vr|v|m)$",
    r"(.*/)?(global_step|current_loss_scale|good_steps|loss_scale|beta1_power|beta2_power)$",
]

_VARIABLE = re.compile(r"\{(\w+)(?:\+(\w+))?(?::(0\d+|_))?\}")
KERAS_SUFFIX = "_"  # `{layer:_}`: Keras's unique-name suffix, nothing for 0, `_1`, `_2`, ... after


class Pattern:
    """A name with integer variables: `bert/encoder/layer_{layer}/...` matches and formats names (`{layer:03}`
    zero-pads, `{layer:_}` is Keras's suffix of repeated layer names: `dense`, `dense_1`, ...).
    `{layer+field}` stores the variable offset by a config field (KerasHub numbers T5's decoder layers after
    its encoder layers): formatting takes the field from the values, matching from `config`, and a variable the
    values lack counts as 0. `when` (config -> bool) limits the name to some configs (KerasHub's T5 calls both
    a plain FFN's wi and a gated one's wi_0 `input_projector`): matching with a config checks it."""

    def __init__(self, text: str, when: Callable[[dict], bool] | None = None):
        self.text = text
        self.when = when
        self.variables = tuple(found.group(1) for found in _VARIABLE.finditer(text))
        self.offsets = {found.group(1): found.group(2) for found in _VARIABLE.finditer(text) if found.group(2)}

    @functools.cached_property
    def regex(self) -> re.Pattern:
        """Compiled on first match: a conversion matches one mapping's patterns of one scheme, and compiling
        every table's would cost each run a good part of its start-up."""
        regex, last = [], 0
        for found in _VARIABLE.finditer(self.text):
            regex.append(re.escape(self.text[last:found.start()]))
            width = found.group(3)
            if width == KERAS_SUFFIX:
                regex.append(f"(?:_(?P<{found.group(1)}>[1-9]\\d*))?")
            else:
                regex.append(f"(?P<{found.group(1)}>\\d{{{int(width)}}})" if width else
                             f"(?P<{found.group(1)}>0|[1-9]\\d*)")
            last = found.end()
        regex.append(re.escape(self.text[last:]))
        return re.compile("".join(regex))

    def match(self, name: str, config: dict | None = None) -> dict[str, int] | None:
        found = self.regex.fullmatch(name)
        if found is None or (self.when and config is not None and not self.when(config)):
            return None
        values = {k: int(v or 0) for k, v in found.groupdict().items()}
        for variable, offset in self.offsets.items():
            start = (config or {}).get(offset)
            if not isinstance(start, int) or values[variable] < start:
                return None
            values[variable] -= start
        return values

    def format(self, values: dict[str, int]) -> str:
        def value(m: re.Match) -> str:
            number = values.get(m.group(1), 0) + values[m.group(2)] if m.group(2) else values[m.group(1)]
            if m.group(3) == KERAS_SUFFIX:
                return f"_{number}" if number else ""
            return format(number, m.group(3) or "d")
        return _VARIABLE.sub(value, self.text)


class Op:
    """A transform from one scheme's tensors (a list of parts) to the next form; `reverse_op` undoes it."""

    def apply(self, parts: list[np.ndarray], context: dict) -> list[np.ndarray]:
        raise NotImplementedError

    def apply_shape(self, shapes: list[tuple], context: dict) -> list[tuple]:
        raise NotImplementedError

    @property
    def reverse_op(self) -> "Op":
        raise NotImplementedError

    def undone_by(self, following: "Op") -> bool:
        """Whether `following`, applied right after this op, restores its input whatever the context, so a
        conversion between two layouts that both hold the tensor this way can skip the pair."""
        return False


def transposed(array: np.ndarray, band: int = 64) -> np.ndarray:
    """A contiguous copy of array.T, written in bands of rows: numpy's plain strided copy reads a large matrix
    column by column, 3 to 6 times slower (a 2.6B-parameter model spends most of its conversion there)."""
    if array.ndim != 2:
        return np.ascontiguousarray(array.T)
    out = np.empty(array.shape[::-1], array.dtype)
    for start in range(0, array.shape[0], band):
        out[:, start:start + band] = array[start:start + band].T
    return out


class Transpose(Op):
    """TF/Conv1D kernels are [in, out]; torch Linear weights are [out, in]."""

    def apply(self, parts, context):
        return [transposed(p) for p in parts]

    def apply_shape(self, shapes, context):
        return [tuple(reversed(s)) for s in shapes]

    @property
    def reverse_op(self):
        return self

    def undone_by(self, following):
        return isinstance(following, Transpose)


TRANSPOSE = Transpose()


class MergeAxes(Op):
    """A tensor a scheme stores with one canonical axis split in several (GPT-2's TF biases [1, n], Keras's
    attention kernels [in, heads, head size]): axes `axis`... of the scheme's tensor merge into one. The
    reverse splits it again into `sizes`, config expressions with at most one -1 (what follows from the
    length)."""

    def __init__(self, axis: int, *sizes: str | int):
        self.axis, self.sizes = axis, sizes

    def apply(self, parts, context):
        return [np.ascontiguousarray(p).reshape(self._merged(p.shape)) for p in parts]

    def apply_shape(self, shapes, context):
        return [self._merged(s) for s in shapes]

    def _merged(self, shape: tuple) -> tuple:
        end = self.axis + len(self.sizes)
        return (*shape[:self.axis], int(np.prod(shape[self.axis:end], dtype=np.int64)), *shape[end:])

    @property
    def reverse_op(self):
        return _SplitAxis(self)


class _SplitAxis(Op):
    def __init__(self, merge: MergeAxes):
        self.merge = merge

    def apply(self, parts, context):
        return [np.ascontiguousarray(p).reshape(self._split(p.shape, context)) for p in parts]

    def apply_shape(self, shapes, context):
        return [self._split(s, context) for s in shapes]

    def _split(self, shape: tuple, context: dict) -> tuple:
        axis, length = self.merge.axis, shape[self.merge.axis]
        sizes = [evaluate(e, context.get("config", {})) if e != -1 else -1 for e in self.merge.sizes]
        known = int(np.prod([s for s in sizes if s not in (-1, None)], dtype=np.int64))
        if None in sizes or not known or length % known or (-1 not in sizes and known != length):
            raise ModelportError(f"cannot split an axis of {length} into ({', '.join(map(str, self.merge.sizes))})")
        sizes = [length // known if s == -1 else s for s in sizes]
        return (*shape[:axis], *sizes, *shape[axis + 1:])

    @property
    def reverse_op(self):
        return self.merge


class Copies(Op):
    """A tensor a scheme stores several times (transformers' TF ALBERT keeps the MLM bias as `bias` and
    `decoder/bias`): read from the copy its code computes with, the first; written to all `count`."""

    def __init__(self, count: int):
        self.count = count

    def apply(self, parts, context):
        return [parts[0]]

    def apply_shape(self, shapes, context):
        return [shapes[0]]

    @property
    def reverse_op(self):
        return _Copy(self)


class _Copy(Op):
    def __init__(self, copies: Copies):
        self.copies = copies

    def apply(self, parts, context):
        return parts * self.copies.count

    def apply_shape(self, shapes, context):
        return shapes * self.copies.count

    @property
    def reverse_op(self):
        return self.copies


class OneWay(Op):
    """A transform that has no reverse: writing the scheme it belongs to is refused with `reason`."""

    reason = ""

    @property
    def reverse_op(self):
        raise ModelportError(self.reason)


class Product(OneWay):
    """Two factors of one matrix (a factorized embedding W [rows, k] and its projection [k, width]) folded into
    their product, computed in float64 and stored in the first factor's dtype."""

    def __init__(self, reason: str):
        self.reason = reason

    def apply(self, parts, context):
        first, second = parts
        return [(first.astype(np.float64) @ second.astype(np.float64)).astype(first.dtype)]

    def apply_shape(self, shapes, context):
        (rows, _), (_, width) = shapes
        return [(rows, width)]


class Constant(OneWay):
    """A tensor a scheme does not store because its network has none there (an identity projection, a zero
    bias): made from no parts, as `fill(shape)` in float32 with the shape given by config expressions."""

    def __init__(self, fill: Callable[[tuple[int, ...]], np.ndarray], *shape: str | int, reason: str):
        self.fill, self.shape, self.reason = fill, shape, reason

    def apply(self, parts, context):
        return [self.fill(self.apply_shape([], context)[0]).astype(np.float32)]

    def apply_shape(self, shapes, context):
        return [tuple(evaluate(e, context["config"]) for e in self.shape)]


class Row:
    """One canonical tensor: `Row(hf_name, shape=(config expressions), part=..., tf1=name, ops={...})`.

    `shape` gives the canonical shape as config field names or small expressions ("3*n_embd"); it lets the
    config be inferred from tensors and checked against them. `part` groups rows that exist together
    (embeddings and encoder, pooler, a head): a checkpoint holds whole parts or it is an error. `ops[scheme]`
    turns that scheme's tensor(s) into the canonical one. A scheme name may be a tuple of patterns when
    several of its tensors make one canonical tensor, or an empty tuple when the scheme stores nothing
    there (its ops then make the tensor from the config, see Constant). A scheme pattern lacking one of
    the canonical pattern's variables holds index 0 of it only (one shared layer for all).
    `absent[scheme] = (condition, ops)`: where the condition (a config expression) holds, the scheme's network
    has no such tensor, and a checkpoint lacking it gets the one the ops make from the config (Google's ALBERT
    has no embedding projection when its embeddings are as wide as its hidden states: the identity).
    """

    def __init__(self, hf: str, *, shape: Sequence[str | int] | None = None, part: str = "base",
                 ops: dict[str, Sequence[Op]] | None = None,
                 absent: dict[str, tuple[str, Sequence[Op]]] | None = None, **names: str | tuple[str, ...]):
        self.hf = Pattern(hf)
        self.shape = tuple(shape) if shape is not None else None
        self.part = part
        self.ops = {scheme: tuple(chain) for scheme, chain in (ops or {}).items()}
        self.absent = {scheme: (condition, tuple(chain)) for scheme, (condition, chain) in (absent or {}).items()}
        self.names = {CANONICAL: (self.hf,)}
        for scheme, value in names.items():
            patterns = (value,) if isinstance(value, str) else tuple(value)
            self.names[scheme] = tuple(Pattern(p) for p in patterns)

    def to_canonical(self, scheme: str) -> tuple[Op, ...]:
        return self.ops.get(scheme, ())

    def from_canonical(self, scheme: str) -> tuple[Op, ...]:
        return tuple(op.reverse_op for op in reversed(self.ops.get(scheme, ())))

    def implied(self, scheme: str, config: dict) -> tuple[Op, ...] | None:
        """The ops making this tensor where the scheme's network has none under this config (see `absent`)."""
        condition, ops = self.absent.get(scheme, (None, None))
        return ops if condition is not None and evaluate(condition, config) else None

    def __repr__(self):
        return f"Row({self.hf.text})"


# Layouts that ship another layout's config and tokenizer files: transformers' TF weights (tf_model.h5) come
# with the same config.json and tokenizer files as its PyTorch weights.
SIDE_FILES = {"keras_h5": CANONICAL}


def files_scheme(scheme: str) -> str:
    """The scheme whose config and tokenizer files a layout ships."""
    return SIDE_FILES.get(scheme, scheme)


def add_scheme(rows: list[Row], scheme: str, names: dict[str, str | tuple]) -> None:
    """Give rows their names in one more scheme, from a table kept apart from the rows (a whole other layout,
    KerasHub's): canonical pattern text -> the name, or (the name, the ops from that scheme to canonical), or
    (the name, the ops, the condition its Pattern takes as `when`); the name may be a tuple of names when
    several tensors of the scheme make the canonical one."""
    by_canonical = {row.hf.text: row for row in rows}
    for canonical, entry in names.items():
        name, ops, when = (entry, (), None) if isinstance(entry, str) else (*entry, None)[:3]
        row = by_canonical[canonical]
        row.names[scheme] = tuple(Pattern(n, when) for n in ((name,) if isinstance(name, str) else name))
        if ops:
            row.ops[scheme] = tuple(ops)


def _tf_names(tf: str | dict[str, str], scheme: str) -> dict[str, str]:
    return dict(tf) if isinstance(tf, dict) else {scheme: tf}


def dense(hf: str, tf: str | dict[str, str], n_in: str, n_out: str, part: str = "base",
          scheme: str = "tf1") -> list[Row]:
    """A TF dense layer: `kernel` [in, out] is torch's `weight` [out, in] transposed, and its `bias`. `tf` is
    its name in `scheme`, or {scheme: name} for a layer that several schemes name."""
    names = _tf_names(tf, scheme)
    return [
        Row(f"{hf}.weight", shape=(n_out, n_in), part=part, ops={s: [TRANSPOSE] for s in names},
            **{s: f"{name}/kernel" for s, name in names.items()}),
        Row(f"{hf}.bias", shape=(n_out,), part=part, **{s: f"{name}/bias" for s, name in names.items()}),
    ]


def layer_norm(hf: str, tf: str | dict[str, str], width: str, part: str = "base", scheme: str = "tf1") -> list[Row]:
    """TF's LayerNorm `gamma`/`beta` are torch's `weight`/`bias` (`tf` as for dense)."""
    names = _tf_names(tf, scheme)
    return [
        Row(f"{hf}.weight", shape=(width,), part=part, **{s: f"{name}/gamma" for s, name in names.items()}),
        Row(f"{hf}.bias", shape=(width,), part=part, **{s: f"{name}/beta" for s, name in names.items()}),
    ]


@dataclass(frozen=True)
class ModelClass:
    """A transformers class and the parts a checkpoint must hold to be that class exactly."""

    name: str
    parts: frozenset[str]
    bare: bool = False  # a base model: its HF names drop the base prefix
    optional: frozenset[str] = frozenset()  # parts that exist only for some configs (a projection)

    @classmethod
    def of(cls, name: str, *parts: str, bare: bool = False, optional: Sequence[str] = ()) -> "ModelClass":
        return cls(name, frozenset(parts), bare, frozenset(optional))


@dataclass(frozen=True)
class PositionTable:
    """A learned absolute position embedding: which canonical tensor, which config field states its length,
    and how many leading rows are reserved (RoBERTa-style padding offset) and must not be extended; `aliases`
    are other fields stating the same length (GPT-2's legacy n_ctx), updated where a config has them."""

    tensor: str
    config_field: str
    reserved: int = 0
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class KerasTask:
    """A KerasHub task whose head holds a part of the checkpoint (BERT's MLM head: BertMaskedLM), written as the
    preset's task.json and task.weights.h5 (its names in the keras scheme start with `task/`): the task and
    preprocessor classes (dotted paths), modelport's task for the exact backbone, what its head hard-codes
    (under transformers' names), and the transformers outputs its output is (at the masked positions; the first
    the transformers class has)."""

    task: str
    exact: str
    preprocessor: str
    part: str
    defaults: dict
    output: tuple[str, ...]


@dataclass(frozen=True)
class KerasHub:
    """How KerasHub holds an architecture (--to keras): its backbone and tokenizer classes (dotted paths), the
    modelport subclass of the backbone that computes what the config says (--exact), and the backbone's inputs
    and outputs under the names transformers' base model gives them (to measure what the backbone computes)."""

    backbone: str
    exact: str
    tokenizer: str
    inputs: dict[str, str]  # KerasHub input -> transformers input (input_ids, token_type_ids, attention_mask,
    # decoder_input_ids, decoder_attention_mask)
    outputs: dict[str, str]  # KerasHub output -> transformers base-model output (one entry: a single output; a
    # tuple of hidden states: the last)
    constraints: tuple[str, ...] = ()  # config expressions the mapping's keras names need to hold
    parts: tuple[str, ...] = ("base",)  # the parts the backbone holds, which a checkpoint must have
    task: KerasTask | None = None  # the task holding a head, when the checkpoint has its part


FILLED = "not in the model"  # the kind of a filler read from a checkpoint (see Filler)


@dataclass(frozen=True)
class Filler:
    """A tensor a scheme's network holds and the canonical model lacks (KerasHub ELECTRA's pooled_dense): written
    as `fill(shape)` (float32, shape from config expressions), left out when read. Its name's variables are
    config expressions (`variables`): Keras numbers a layer after the layers of its class made before it."""

    name: str
    shape: tuple[str | int, ...]
    fill: Callable[[tuple[int, ...]], np.ndarray]
    note: str  # what the written tensor means, for the conversion's notes
    variables: dict[str, str] = field(default_factory=dict)

    @property
    def pattern(self) -> Pattern:
        return Pattern(self.name)

    def target(self, config: dict) -> str | None:
        """Its name for this config (None when the config cannot tell)."""
        values = {variable: evaluate(expression, config) for variable, expression in self.variables.items()}
        return None if None in values.values() else self.pattern.format(values)

    def make(self, config: dict) -> np.ndarray:
        return self.fill(tuple(evaluate(e, config) for e in self.shape)).astype(np.float32)


@dataclass
class Match:
    row: Row
    values: dict[str, int]
    index: int  # which part: the rank for partitioned names, else which of the scheme's patterns
    partitioned: bool = False

    @property
    def canonical(self) -> str:
        return self.row.hf.format(self.values)


@dataclass
class Mapping:
    """Everything modelport knows about one architecture."""

    arch: str
    model_type: str
    rows: list[Row]
    classes: list[ModelClass]
    base_prefix: str = ""
    counts: dict[str, str] = field(default_factory=dict)  # pattern variable -> config field it counts
    tied: dict[str, str] = field(default_factory=dict)  # canonical alias -> the canonical tensor it equals
    buffers: list[str] = field(default_factory=list)  # canonical names of derived buffers, dropped
    skip: list[str] = field(default_factory=list)  # training state beyond OPTIMIZER_PATTERNS
    formats: dict[str, tuple[str, str]] = field(default_factory=dict)  # --to value -> (file format, scheme)
    config_files: dict[str, str] = field(default_factory=dict)  # scheme -> config file name
    checkpoint_names: dict[str, str] = field(default_factory=dict)  # scheme -> checkpoint prefix (tf1)
    config_to_hf: Callable[[str, dict], dict] | None = None  # (scheme, raw config) -> HF config fields
    config_from_hf: Callable[[str, dict], tuple[dict, list[str]]] | None = None  # -> (raw config, warnings)
    required_config: tuple[str, ...] = ()  # HF fields that shapes cannot tell
    constraints: tuple[str, ...] = ()  # config expressions that must hold, e.g. "hidden_size % heads == 0"
    constraint_hints: dict[str, str] = field(default_factory=dict)  # constraint -> what to do when it fails
    tokenizer: str = ""  # tokenizer kind, see converters/tokenizers.py
    positions: PositionTable | None = None  # learned absolute positions, for `extend`
    computed_defaults: Callable[[dict], dict] | None = None  # config so far -> fields computed from it (heads
    # from the hidden size), filled in where missing
    # Several networks in one checkpoint (ELECTRA's discriminator and generator): each is a Mapping over the
    # same file, named by `variant`; `variants` (one dict shared by all of them) holds every one by name.
    variant: str = ""
    variants: dict[str, "Mapping"] = field(default_factory=dict)
    merge_configs: Callable[[str, dict[str, dict]], tuple[dict, list[str]]] | None = None  # parts written together
    defaults: dict[str, dict] = field(default_factory=dict)  # scheme -> HF config fields its code hard-codes
    ranks: int = 1  # default --ranks of model-parallel outputs: the release's
    structure_config: Callable[[set[str], dict], dict] | None = None  # (present parts, config) -> the HF fields
    # those parts fix (e.g. a gated FFN, an untied head): the tensors decide them, whatever a config file says
    optional_ties: dict[str, str] = field(default_factory=dict)  # canonical tensor -> the tensor it equals when
    # the model ties them: an HF checkpoint saving the tie twice holds it equal (dropped), an untied one differs
    vocab_tensors: dict[str, int] = field(default_factory=dict)  # canonical tensor -> its vocabulary axis
    h5_copies: dict[str, str] = field(default_factory=dict)  # tf_model.h5: layer -> the name prefix of another
    # layer's variables it holds copies of (Keras 2 saves a tied head with the embeddings it reads)
    keras: KerasHub | None = None  # the KerasHub backbone of this architecture (--to keras)
    omitted: dict[str, tuple[str, ...]] = field(default_factory=dict)  # scheme -> parts that layout has no place
    # for (a KerasHub backbone has no pretraining heads): left out, with a note
    fillers: dict[str, tuple[Filler, ...]] = field(default_factory=dict)  # scheme -> tensors only it holds
    alternatives: list["Mapping"] = field(default_factory=list)  # the same network under other names (ELECTRA's
    # generator with embeddings of its own): the one explaining more of a checkpoint is read with, this one written

    def __post_init__(self):
        self._skip = [re.compile(p) for p in OPTIMIZER_PATTERNS + self.skip]
        self._tied = {Pattern(k): Pattern(v) for k, v in self.tied.items()}
        self._buffers = [Pattern(b) for b in self.buffers]
        self._ordered: dict[str, list[tuple[Row, int, Pattern]]] = {}

    @property
    def schemes(self) -> list[str]:
        seen: dict[str, None] = {}
        for row in self.rows:
            seen.update(dict.fromkeys(row.names))
        return list(seen)

    def is_training_state(self, name: str) -> bool:
        return any(p.fullmatch(name) for p in self._skip)

    def _canonical_candidates(self, scheme: str, name: str) -> list[str]:
        if scheme == CANONICAL and self.base_prefix and not name.startswith(self.base_prefix):
            return [name, self.base_prefix + name]
        return [name]

    def needs_config(self, scheme: str) -> bool:
        """Whether telling this scheme's names apart needs the config: offsets or conditions (see Pattern), or
        fillers (whose names depend on it)."""
        return bool(self.fillers.get(scheme)) or any(pattern.offsets or pattern.when for row in self.rows
                                                     for pattern in row.names.get(scheme, ()))

    def _patterns(self, scheme: str) -> list[tuple[Row, int, Pattern]]:
        """The scheme's patterns, offset ones first: they claim their range of indices before a plain pattern
        matching the same names does (KerasHub's T5 layers past num_layers are decoder layers)."""
        if scheme not in self._ordered:
            found = [(row, index, pattern) for row in self.rows
                     for index, pattern in enumerate(row.names.get(scheme, ()))]
            self._ordered[scheme] = sorted(found, key=lambda entry: not entry[2].offsets)
        return self._ordered[scheme]

    def match(self, scheme: str, name: str, config: dict | None = None) -> Match | None:
        """The row a name of `scheme` is, with its variables (`config`: for patterns with offsets)."""
        for candidate in self._canonical_candidates(scheme, name):
            for row, index, pattern in self._patterns(scheme):
                values = pattern.match(candidate, config)
                if values is not None:
                    if RANK in values:
                        return Match(row, values, values.pop(RANK), partitioned=True)
                    return Match(row, {**dict.fromkeys(row.hf.variables, 0), **values}, index)
        return None

    def layouts(self) -> list["Mapping"]:
        return [self, *self.alternatives]

    def explains(self, scheme: str, name: str) -> bool:
        return bool(self.match(scheme, name) or self.alias_of(scheme, name))

    def variant_of(self, scheme: str, name: str) -> str | None:
        """The other variant whose tensor this is (a generator tensor seen from the discriminator)."""
        for other in self.variants.values():
            if other.variant != self.variant and any(layout.explains(scheme, name) for layout in other.layouts()):
                return other.variant
        return None

    def explainers(self, names: list[str]) -> dict[str, list["Mapping"]]:
        """Each of a checkpoint's names (training state aside) -> the layouts, of every variant, explaining it:
        matched once, for held_variants and own_names both."""
        layouts = [layout for variant in self.variants.values() for layout in variant.layouts()]
        return {name: [layout for layout in layouts if any(layout.explains(s, name) for s in layout.schemes)]
                for name in names if not self.is_training_state(name)}

    def held_variants(self, explainers: dict[str, list["Mapping"]]) -> list[str]:
        """The variants a checkpoint holds: those explaining a tensor that no other variant explains."""
        held = {found[0].variant for found in explainers.values() if len({layout.variant for layout in found}) == 1}
        return [v for v in self.variants if v in held]

    def own_names(self, explainers: dict[str, list["Mapping"]]) -> int:
        """How many of a checkpoint's names this layout explains that no other variant does."""
        return sum(1 for found in explainers.values()
                   if self in found and all(layout.variant == self.variant for layout in found))

    def alias_of(self, scheme: str, name: str) -> tuple[str, str] | None:
        """For a tied alias or a derived buffer (canonical scheme), or a filler (other schemes): (kind, the tensor
        it equals or '')."""
        if scheme != CANONICAL:
            return (FILLED, "") if any(f.pattern.match(name) for f in self.fillers.get(scheme, ())) else None
        for candidate in self._canonical_candidates(scheme, name):
            for alias, target in self._tied.items():
                values = alias.match(candidate)
                if values is not None:
                    return "tied", target.format(values)
            if any(b.match(candidate) is not None for b in self._buffers):
                return "buffer", ""
        return None

    def coverage(self, scheme: str, names: list[str]) -> int:
        """How many names this scheme explains (mapped, tied, buffers, training state, another variant's)."""
        return sum(1 for n in names if self.match(scheme, n) or self.alias_of(scheme, n) or self.is_training_state(n)
                   or self.variant_of(scheme, n))

    def detect_scheme(self, names: list[str], schemes: list[str] | None = None) -> tuple[str, int]:
        """The naming scheme that explains most names, and how many it explains (ignoring training state)."""
        weights = [n for n in names if not self.is_training_state(n)]
        best = max(schemes or self.schemes, key=lambda s: self.coverage(s, weights))
        return best, self.coverage(best, weights)

    def model_class(self, parts: set[str]) -> ModelClass | None:
        for candidate in self.classes:
            if candidate.parts <= parts <= candidate.parts | candidate.optional:
                return candidate
        return None


def evaluate(expression: str | int, config: dict) -> int | None:
    """A shape entry: an int, a config field, or a small arithmetic expression of fields."""
    if isinstance(expression, int):
        return expression
    if expression in config:
        return config[expression]
    names = re.findall(r"[A-Za-z_]\w*", expression)
    if not all(isinstance(config.get(n), int) for n in names):
        return None
    return int(eval(expression, {"__builtins__": {}}, {n: config[n] for n in names}))  # mapping-table text only
