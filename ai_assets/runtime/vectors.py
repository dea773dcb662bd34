"""Vectors between the wire, the journal and Arrow: base64 float32 and ``fixed_size_list<float32>[d]``."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

Vector = np.ndarray[Any, np.dtype[np.float32]]


def encode_vector(vector: Any) -> str:
    """A vector as base64 of little-endian float32 (what the journal stores: a quarter of JSON's size)."""
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()


def decode_vector(value: str | Sequence[float]) -> Vector:
    """A vector from base64 float32 (``encoding_format="base64"``, the journal) or a JSON list of numbers."""
    if isinstance(value, str):
        return np.frombuffer(base64.b64decode(value), dtype="<f4").astype(np.float32)
    return np.asarray(value, dtype=np.float32)


def vectors_to_arrow(values: Sequence[Any], dim: int) -> pa.FixedSizeListArray:
    """Rows of ``dim``-long vectors (None for missing) as ``fixed_size_list<float32>[dim]``."""
    flat = np.zeros((len(values), dim), dtype=np.float32)
    for i, v in enumerate(values):
        if v is not None:
            flat[i] = v
    mask = pa.array([v is None for v in values], pa.bool_())
    return pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), dim, mask=mask)
