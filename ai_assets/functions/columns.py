"""Adding result columns to Arrow tables."""

from __future__ import annotations

from collections.abc import Mapping

import pyarrow as pa


def set_columns(table: pa.Table, columns: Mapping[str, pa.Array | pa.ChunkedArray]) -> pa.Table:
    """Each column replaced where it already stands, appended after the others otherwise."""
    for name, values in columns.items():
        if name in table.column_names:
            table = table.set_column(table.column_names.index(name), name, values)
        else:
            table = table.append_column(name, values)
    return table
