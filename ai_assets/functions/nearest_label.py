"""The nearest label of each row's embedding and the proxy's confidence in it: pure numerics, no model.

Cosine similarity divides by the vectors' norms, so it is undefined for a zero vector, and NaN propagates through it
(IEEE 754): such rows get a reason instead of an answer, as does a row whose vector has another size than the
labels'. The confidence is ``softmax(cosine / temperature)`` at the nearest label.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

CELLS = 1 << 20
"""The most row x label cosines held at once (8 MiB of float64)."""
SHOWN_PAIRS = 5
"""How many identical label pairs a warning names before it counts the rest."""


def score(rows: Sequence[Any] | pa.Array, errors: Sequence[str | None], labels: np.ndarray,
          temperature: float) -> tuple[list[int], list[float], list[str | None]]:
    """Each row's nearest label (an index into ``labels``, unit vectors) and its softmax confidence, or why there is
    none (the embedding failed, is not finite, is zero, or has another size). ``rows``: vectors, or an Arrow list
    column of them (read as one float64 matrix, not as Python floats)."""
    size = labels.shape[1]
    sizes, matrix = _matrix(rows, size)
    nearest, confidence, why = [-1] * len(sizes), [0.0] * len(sizes), list(errors)
    finite = np.isfinite(matrix).all(axis=1)
    nonzero = np.any(matrix != 0, axis=1)
    good: list[int] = []
    for i, length in enumerate(sizes):
        if length is None or why[i] is not None:
            why[i] = f"no embedding: {why[i] or 'none returned'}"
        elif length != size:
            why[i] = f"its embedding has {length} dimensions, the labels' {size} (the embedder changed between runs?)"
        elif not finite[i]:
            why[i] = "its embedding is not finite (NaN or infinite): cosine undefined"
        elif not nonzero[i]:
            why[i] = "its embedding is a zero vector: cosine undefined"
        else:
            good.append(i)
    step = max(1, CELLS // max(1, len(labels)))  # rows x labels cosines in bounded chunks, not all at once
    for start in range(0, len(good), step):
        chunk = good[start:start + step]
        cosines = unit(matrix[chunk]) @ labels.T
        best = cosines.argmax(axis=1)
        top = cosines[np.arange(len(chunk)), best]
        cosines -= top[:, None]
        cosines /= temperature
        np.exp(cosines, out=cosines)
        share = 1.0 / cosines.sum(axis=1)  # the nearest label's weight is exp(0) = 1
        for at, i in enumerate(chunk):
            nearest[i], confidence[i] = int(best[at]), float(share[at])
    return nearest, confidence, why


def same_pairs(labels: np.ndarray, tolerance: float) -> tuple[int, list[tuple[int, int]]]:
    """How many pairs of ``labels`` (unit vectors) have a cosine within ``tolerance`` of 1, and the first
    ``SHOWN_PAIRS`` of them: label x label cosines in bounded chunks (a taxonomy of 10,000 labels is 50 million
    pairs)."""
    count = 0
    shown: list[tuple[int, int]] = []
    step = max(1, CELLS // max(1, len(labels)))
    for start in range(0, len(labels), step):
        cosines = labels[start:start + step] @ labels.T
        a, b = np.nonzero(cosines >= 1 - tolerance)
        a += start
        upper = b > a
        count += int(upper.sum())
        if len(shown) < SHOWN_PAIRS:
            shown += [(int(x), int(y)) for x, y in zip(a[upper][:SHOWN_PAIRS], b[upper][:SHOWN_PAIRS], strict=True)]
    return count, shown[:SHOWN_PAIRS]


def _matrix(rows: Sequence[Any] | pa.Array, size: int) -> tuple[list[int | None], np.ndarray]:
    """Each row's vector size (None: no vector) and a float64 matrix of the rows of ``size`` (zeros elsewhere)."""
    if isinstance(rows, pa.ChunkedArray):
        rows = rows.combine_chunks()
    if isinstance(rows, pa.Array):
        sizes: list[int | None] = pc.list_value_length(rows).to_pylist()
        fits = np.array([n == size for n in sizes], dtype=bool)
        matrix = np.zeros((len(sizes), size), np.float64)
        if fits.any():
            matrix[fits] = rows.filter(pa.array(fits)).flatten().to_numpy(zero_copy_only=False).reshape(-1, size)
        return sizes, matrix
    sizes = [None if v is None else len(v) for v in rows]
    matrix = np.zeros((len(sizes), size), np.float64)
    for i, vector in enumerate(rows):
        if vector is not None and len(vector) == size:
            matrix[i] = np.asarray(vector, np.float64)
    return sizes, matrix


def unit(matrix: np.ndarray) -> np.ndarray:
    """Each row (finite, not all zero) scaled to length 1: by its largest entry first, so a tiny (subnormal) vector
    does not underflow to a zero norm."""
    matrix = matrix / np.abs(matrix).max(axis=1, keepdims=True)
    out: np.ndarray = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    return out
