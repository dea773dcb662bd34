"""Result columns on Arrow tables and record batches: where they go, what the error column of an output is
called, and batches conformed to a schema."""

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


def fan_out(rows: Rows, keep: list[str], parents: list[int], columns: Mapping[str, pa.Array]) -> Rows:
    """New rows, one per item of ``parents`` (an index into ``rows``): the ``keep`` columns of that parent, then
    ``columns``, also when no column is kept."""
    if keep:
        return set_columns(rows.select(keep).take(pa.array(parents, pa.int64())), columns)
    if isinstance(rows, pa.Table):
        return pa.table(dict(columns))
    return pa.RecordBatch.from_pydict(dict(columns))


ERROR_SUFFIX = "_error"


def error_column(output_column: str) -> str:
    """The column holding why a row has no value in ``output_column`` (null when it has one)."""
    return output_column + ERROR_SUFFIX


def is_error_column(name: str) -> bool:
    return name.endswith(ERROR_SUFFIX)


def conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """``batch`` in ``schema``'s column order and types; columns it lacks become nulls."""
    arrays = []
    for field in schema:
        if field.name in batch.schema.names:
            column = batch.column(field.name)
            arrays.append(column if column.type == field.type else column.cast(field.type))
        else:
            arrays.append(pa.nulls(batch.num_rows, field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)
