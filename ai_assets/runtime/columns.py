"""Adding result columns to Arrow tables and record batches."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

import pyarrow as pa

Rows = TypeVar("Rows", pa.Table, pa.RecordBatch)


def set_columns(rows: Rows, columns: Mapping[str, pa.Array | pa.ChunkedArray]) -> Rows:
    """Each column replaced where it already stands, appended after the others otherwise."""
    for name, values in columns.items():
        if name in rows.column_names:
            rows = rows.set_column(rows.column_names.index(name), name, values)
        else:
            rows = rows.append_column(name, values)
    return rows
