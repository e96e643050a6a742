"""Tensors that a checkpoint stores as several parts: model-parallel ranks (Megatron's tensor parallelism,
one part per rank in rank order) or side-by-side tensors of one scheme (bert4keras's separate q, k, v).
Each merge gives the whole tensor; its reverse cuts it again exactly as the original code partitions it."""

from __future__ import annotations

import numpy as np

from modelport.errors import ModelportError
from modelport.mappings.base import Op, RankMismatch


def _with_size(shape: tuple, axis: int, size: int) -> tuple:
    return shape[:axis] + (size,) + shape[axis + 1:]


class Concat(Op):
    """Parts side by side along `axis`: vocab-parallel embeddings and column-parallel weights are cut by rows
    (axis 0), row-parallel weights by columns (axis 1), rank 0's part first. The reverse cuts the tensor into
    `parts` equal pieces, or into context["ranks"] when the parts are ranks; `size` names the cut dimension
    in errors."""

    def __init__(self, axis: int, size: str, parts: int | None = None):
        self.axis, self.size, self.parts = axis, size, parts

    def apply(self, parts, context):
        return [np.concatenate(parts, axis=self.axis)]

    def apply_shape(self, shapes, context):
        return [_with_size(shapes[0], self.axis, sum(s[self.axis] for s in shapes))]

    @property
    def reverse_op(self):
        return Cut(self)


class Cut(Op):
    def __init__(self, concat: Concat):
        self.concat = concat

    def _count(self, context) -> int:
        return self.concat.parts or context["ranks"]

    def apply(self, parts, context):
        return np.split(parts[0], self._count(context), axis=self.concat.axis)

    def apply_shape(self, shapes, context):
        count, (shape,) = self._count(context), shapes
        length = shape[self.concat.axis]
        if length % count:
            raise ModelportError(f"--ranks {count} does not divide {self.concat.size} ({length})")
        return [_with_size(shape, self.concat.axis, length // count)] * count

    @property
    def reverse_op(self):
        return self.concat


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


class Replicated(Op):
    """Layer norms, position embeddings and row-parallel biases: every rank holds the whole tensor. Copies
    that differ mean rank files from different checkpoints, never something to pick from."""

    def apply(self, parts, context):
        for rank, part in enumerate(parts[1:], 1):
            if not _same_bits(part, parts[0]):
                raise RankMismatch(rank)
        return [parts[0]]

    def apply_shape(self, shapes, context):
        return [shapes[0]]

    @property
    def reverse_op(self):
        return Replicate()


class Replicate(Op):
    def apply(self, parts, context):
        return parts * context["ranks"]

    def apply_shape(self, shapes, context):
        return shapes * context["ranks"]

    @property
    def reverse_op(self):
        return Replicated()


def _check_heads(heads: int | None, ranks: int, field: str) -> None:
    if heads is not None and heads % ranks:
        raise ModelportError(f"{ranks} model-parallel ranks do not divide the {heads} attention heads ({field}): "
                             "each rank must hold whole heads")


class MergeFusedQKV(Op):
    """Megatron's fused query_key_value (weight or bias): rank r holds [q_r; k_r; v_r], the rows of its own
    heads of Q, K and V. The whole tensor is [Q; K; V] with Q = [q_0; q_1; ...], so it is rebuilt third by
    third: concatenating the ranks' blocks as they are would interleave q, k and v (and still load)."""

    def __init__(self, heads: str):
        self.heads = heads  # the config field counting attention heads

    def apply(self, parts, context):
        _check_heads(context.get("config", {}).get(self.heads), len(parts), self.heads)
        thirds = [np.split(part, 3, axis=0) for part in parts]
        return [np.concatenate([rank_thirds[i] for i in range(3) for rank_thirds in thirds], axis=0)]

    def apply_shape(self, shapes, context):
        rows = shapes[0][0]
        if rows % 3:
            raise ModelportError(f"a fused query_key_value part has {rows} rows, not three equal blocks q, k, v")
        return [_with_size(shapes[0], 0, rows * len(shapes))]

    @property
    def reverse_op(self):
        return SplitFusedQKV(self)


class SplitFusedQKV(Op):
    def __init__(self, merge: MergeFusedQKV):
        self.merge = merge

    def apply(self, parts, context):
        ranks = context["ranks"]
        q, k, v = (np.split(third, ranks, axis=0) for third in np.split(parts[0], 3, axis=0))
        return [np.concatenate([q[r], k[r], v[r]], axis=0) for r in range(ranks)]

    def apply_shape(self, shapes, context):
        ranks, (shape,) = context["ranks"], shapes
        _check_heads(context["config"].get(self.merge.heads), ranks, self.merge.heads)
        return [_with_size(shape, 0, shape[0] // ranks)] * ranks

    @property
    def reverse_op(self):
        return self.merge


REPLICATED = Replicated()
