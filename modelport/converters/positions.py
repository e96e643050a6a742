"""Longer learned absolute position tables without retraining: pure functions from a trained table [n, d] to
one of N rows. Each computes in float64 and returns the table's dtype; hierarchical and copy keep the n
trained rows exactly (they are copied, not recomputed), so every input of at most n tokens computes what it
computed before."""

from __future__ import annotations

import numpy as np

from modelport.errors import ModelportError

METHODS = ("hierarchical", "copy", "interpolate")
DEFAULT_ALPHA = 0.4  # Su Jianlin's choice for BERT (bert4keras `hierarchical_position=True`)


def hierarchical(trained: np.ndarray, positions: int, alpha: float = DEFAULT_ALPHA) -> np.ndarray:
    """Su Jianlin's hierarchical decomposition: with u_i = (p_i - alpha p_0) / (1 - alpha), row i*n + j is
    alpha u_i + (1 - alpha) u_j, which is p_j for i = 0. Reaches n^2 rows."""
    n = len(trained)
    table64 = trained.astype(np.float64)
    u = (table64 - alpha * table64[:1]) / (1 - alpha)
    result = np.empty((positions, *trained.shape[1:]), trained.dtype)
    result[:n] = trained
    for i in range(1, -(-positions // n)):  # one block of n rows per leading index i, to bound memory
        rows = min(n, positions - i * n)
        result[i * n:i * n + rows] = (alpha * u[i] + (1 - alpha) * u[:rows]).astype(trained.dtype)
    return result


def repeat(trained: np.ndarray, positions: int) -> np.ndarray:
    """Longformer's initialization: the trained rows again and again."""
    return trained[np.arange(positions) % len(trained)]


def interpolate(trained: np.ndarray, positions: int) -> np.ndarray:
    """Linear interpolation of the whole table to `positions` rows (first and last rows stay where they are;
    every other row moves, so outputs change even for short inputs)."""
    n = len(trained)
    where = np.arange(positions, dtype=np.float64) * (n - 1) / (positions - 1)
    below = np.minimum(np.floor(where).astype(np.int64), n - 2)
    weight = (where - below).reshape(-1, *([1] * (trained.ndim - 1)))
    table64 = trained.astype(np.float64)
    return ((1 - weight) * table64[below] + weight * table64[below + 1]).astype(trained.dtype)


def check_extension(trained: int, positions: int, method: str, alpha: float) -> None:
    """One-line errors for a request the method cannot honour, before anything is read or written."""
    if method not in METHODS:
        raise ModelportError(f"--method {method}: choose {', '.join(METHODS)}")
    if positions <= trained:
        raise ModelportError(f"--positions {positions}: the model already has {trained} positions; "
                             f"extending needs more than {trained}")
    if method == "hierarchical":
        if not 0 < alpha < 1:
            raise ModelportError(f"--alpha {alpha}: the hierarchical method needs 0 < alpha < 1")
        if positions > trained * trained:
            raise ModelportError(f"--positions {positions}: the hierarchical method reaches at most {trained}^2 = "
                                 f"{trained * trained} positions from {trained}; use --method copy or interpolate")


def extend_table(table: np.ndarray, positions: int, method: str = "hierarchical", alpha: float = DEFAULT_ALPHA,
                 reserved: int = 0) -> np.ndarray:
    """The table with `reserved` leading rows (RoBERTa-style padding offset) kept as they are and the trained
    rows after them extended to `positions` rows: reserved + positions rows in all."""
    trained = table[reserved:]
    check_extension(len(trained), positions, method, alpha)
    if method == "hierarchical":
        extended = hierarchical(trained, positions, alpha)
    elif method == "copy":
        extended = repeat(trained, positions)
    else:
        extended = interpolate(trained, positions)
    return np.concatenate([table[:reserved], extended])


def describe(trained: int, positions: int, method: str, alpha: float) -> str:
    """What the extension did, for the conversion's notes."""
    if method == "interpolate":
        return (f"positions {trained} -> {positions} by interpolation: the rows are resampled, so outputs differ "
                "from the original model even for short inputs")
    how = f"hierarchical, alpha {alpha}" if method == "hierarchical" else "copy"
    return f"positions {trained} -> {positions} ({how}): inputs of up to {trained} tokens compute what they did"
