"""What the asset checks measure, computed as rows stream by (no Dagster here: the Dagster layer only reports)."""

from __future__ import annotations

from dataclasses import dataclass

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

    @property
    def passed(self) -> bool:
        return bool(self.dimension) and not self.mixed_dimensions and self.all_finite and self.zero_vectors == 0
