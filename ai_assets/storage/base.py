"""What every table store shares: the partition column, safe key handling, and the store protocol.

A partitioned table carries its partition key in the column ``_partition``: a write replaces exactly the
partitions present in that column and nothing else; a read returns the column so downstream assets keep it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc

from ai_assets.runtime.errors import ConfigError

PARTITION_COLUMN = "_partition"
_SAFE = re.compile(r"[A-Za-z0-9_-]")


def encode_key(key: str) -> str:
    """A partition key as a file-name part: every character but ``[A-Za-z0-9_-]`` as ``~XX`` (UTF-8 bytes).

    ``.`` and ``/`` are encoded too, so ``..`` or a path separator can never appear; the encoding is injective,
    so two keys never share a file.
    """
    if not key:
        raise ConfigError("partition key must not be empty")
    return "".join(ch if _SAFE.fullmatch(ch) else "".join(f"~{b:02X}" for b in ch.encode()) for ch in key)


def decode_key(encoded: str) -> str:
    raw = bytearray()
    i = 0
    while i < len(encoded):
        if encoded[i] == "~":
            raw.append(int(encoded[i + 1:i + 3], 16))
            i += 3
        else:
            raw.extend(encoded[i].encode())
            i += 1
    return raw.decode()


def sql_literal(value: str) -> str:
    """A SQL string literal (single quotes doubled) for Delta / LanceDB predicates; NUL bytes are refused."""
    if "\x00" in value:
        raise ConfigError(f"partition key {value!r} contains a NUL byte")
    return "'" + value.replace("'", "''") + "'"


def partition_filter(keys: Sequence[str]) -> str:
    return f"{PARTITION_COLUMN} IN ({', '.join(sql_literal(k) for k in keys)})"


def split_partitions(table: pa.Table) -> dict[str, pa.Table]:
    """Rows grouped by ``_partition`` (the order of first appearance)."""
    if PARTITION_COLUMN not in table.column_names:
        raise ConfigError(f"a partitioned write needs the column {PARTITION_COLUMN!r}; columns: {table.column_names}")
    column = table.column(PARTITION_COLUMN)
    if column.null_count:
        raise ConfigError(f"column {PARTITION_COLUMN!r} has {column.null_count} null value(s)")
    keys = list(dict.fromkeys(column.to_pylist()))
    return {key: table.filter(pc.equal(column, key)) for key in keys}


def with_partition(table: pa.Table, key: str) -> pa.Table:
    """``table`` with ``_partition`` set to ``key`` on every row (added or replaced)."""
    values = pa.array([key] * table.num_rows, pa.string())
    if PARTITION_COLUMN in table.column_names:
        return table.set_column(table.column_names.index(PARTITION_COLUMN), PARTITION_COLUMN, values)
    return table.append_column(PARTITION_COLUMN, values)


@dataclass(frozen=True)
class WriteResult:
    """Where a write landed: the table's URI, its version after the write (None where unversioned), row count."""

    uri: str
    version: int | None
    rows: int


class TableStore(Protocol):
    """One asset's table. ``partitions=None`` means unpartitioned (write) or everything (read)."""

    uri: str

    def write(self, table: pa.Table, partitions: Sequence[str] | None) -> WriteResult:
        """Replace ``partitions`` (each must appear in ``_partition``; a missing one becomes empty)."""
        ...

    def read(self, partitions: Sequence[str] | None = None) -> pa.Table: ...

    def partitions(self) -> list[str]: ...
