"""What the asset checks measure, computed as rows stream by (no Dagster here: the Dagster layer only reports)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from ai_assets.runtime.usage import Usage


def error_rate(usage: Usage) -> float:
    """Failed rows over rows that were meant to get a value (skipped rows do not count)."""
    return usage.errors / usage.attempted if usage.attempted else 0.0


def valid_share(usage: Usage) -> float:
    """Rows with a value (an answer that validated, sent now or read from the journal) over rows attempted."""
    return usage.answered / usage.attempted if usage.attempted else 1.0


@dataclass
class VectorStats:
    """Dimension, finiteness and all-zero vectors of a ``fixed_size_list<float32>`` column, batch by batch."""

    dimension: int | None = None
    vectors: int = 0
    all_finite: bool = True
    zero_vectors: int = 0
    mixed_dimensions: bool = False
    unit_sum: np.ndarray | None = None
    """Sum of the unit-length vectors: their direction is the partition's centroid (for drift checks)."""

    def update(self, column: pa.Array | pa.ChunkedArray) -> None:
        chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
        for chunk in chunks:
            if not pa.types.is_fixed_size_list(chunk.type):
                self.mixed_dimensions = True
                continue
            dim = chunk.type.list_size
            if self.dimension is None:
                self.dimension = dim
            self.mixed_dimensions |= dim != self.dimension
            # The child values of every slot, null slots included (flatten() would drop them).
            raw = chunk.values.slice(chunk.offset * dim, len(chunk) * dim)
            flat = np.asarray(raw.to_numpy(zero_copy_only=False), dtype=np.float32)
            valid = np.asarray(chunk.is_valid().to_numpy(zero_copy_only=False))
            vectors = flat.reshape(-1, dim)[valid] if dim else flat.reshape(0, 0)
            self.vectors += len(vectors)
            self.all_finite &= bool(np.isfinite(vectors).all())
            self.zero_vectors += int((np.abs(vectors).sum(axis=1) == 0).sum()) if vectors.size else 0
            if vectors.size and not self.mixed_dimensions:
                norms = np.linalg.norm(vectors, axis=1, keepdims=True)
                units = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0).sum(axis=0)
                self.unit_sum = units if self.unit_sum is None else self.unit_sum + units

    def centroid(self) -> list[float] | None:
        """The mean direction of the vectors (unit length), or None without any."""
        if self.unit_sum is None:
            return None
        norm = float(np.linalg.norm(self.unit_sum))
        return [float(v) for v in self.unit_sum / norm] if norm > 0 else None

    @property
    def passed(self) -> bool:
        return bool(self.dimension) and not self.mixed_dimensions and self.all_finite and self.zero_vectors == 0


def cosine_distance(a: list[float], b: list[float]) -> float:
    """1 - cos(a, b); 1.0 for vectors of different sizes or of zero length."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or not np.linalg.norm(x) or not np.linalg.norm(y):
        return 1.0
    return float(1.0 - x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))


def matches(answer: Any, expected: Any) -> bool:
    """Whether an answer agrees with a golden expectation: every field the expectation names (a dict: the fields
    it gives, nested), text compared without case and surrounding space, numbers by value."""
    if isinstance(expected, dict):
        return isinstance(answer, dict) and all(matches(answer.get(k), v) for k, v in expected.items())
    if isinstance(expected, str):
        return isinstance(answer, str) and answer.strip().casefold() == expected.strip().casefold()
    if isinstance(expected, list):
        return isinstance(answer, list) and len(answer) == len(expected) and all(
            matches(a, e) for a, e in zip(answer, expected, strict=True))
    return bool(answer == expected)


@dataclass
class Reservoir:
    """A uniform sample of at most ``size`` items from a stream of unknown length, reproducible by ``seed``."""

    size: int
    seed: str = ""
    items: list[Any] = field(default_factory=list)
    seen: int = 0

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    def add(self, item: Any) -> None:
        self.seen += 1
        if len(self.items) < self.size:
            self.items.append(item)
            return
        slot = self._random.randrange(self.seen)
        if slot < self.size:
            self.items[slot] = item
