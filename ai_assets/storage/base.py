"""What every table store shares: the partition column, safe key handling, streams, and the store protocol.

A partitioned table carries its partition key in the column ``_partition``: a write replaces exactly the
partitions of the run and nothing else; a read returns the column so downstream assets keep it. Every store
writes a ``RecordBatchReader`` batch by batch and commits once at the end, and reads as a reader, so a partition
never has to fit in memory.
"""

from __future__ import annotations

import atexit
import hashlib
import re
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeAlias

import pyarrow as pa

from ai_assets.runtime.columns import conform
from ai_assets.runtime.errors import ConfigError

PARTITION_COLUMN = "_partition"
_SAFE = re.compile(r"[A-Za-z0-9_-]")
MAX_NAME_CHARS = 160  # encoded key length in a file name; longer keys get a readable prefix and a digest
DIGEST_MARK = "~~"
Data: TypeAlias = "pa.Table | pa.RecordBatchReader"


def encode_key(key: str) -> str:
    """A partition key as a file-name part: every character but ``[A-Za-z0-9_-]`` as ``~XX`` (UTF-8 bytes).

    ``.`` and ``/`` are encoded too, so ``..`` or a path separator can never appear; the encoding is injective,
    so two keys never share a file.
    """
    if not key:
        raise ConfigError("partition key must not be empty")
    return "".join(ch if _SAFE.fullmatch(ch) else "".join(f"~{b:02X}" for b in ch.encode()) for ch in key)


def file_key(key: str) -> str:
    """A partition key as a bounded file-name part: ``encode_key`` when it is short enough, else a readable prefix
    and a SHA-256 digest (the exact key is then kept inside the file). Always at most about 200 bytes."""
    encoded = encode_key(key)
    if len(encoded) <= MAX_NAME_CHARS:
        return encoded
    prefix = ""
    for ch in key:
        piece = encode_key(ch)
        if len(prefix) + len(piece) > 96:
            break
        prefix += piece
    return f"{prefix}{DIGEST_MARK}{hashlib.sha256(key.encode()).hexdigest()[:40]}"


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


def sql_value(value: pa.Scalar) -> str:
    """A typed scalar as a SQL literal for Delta / LanceDB filters (a date or timestamp as a CAST)."""
    if pa.types.is_date(value.type):
        return f"CAST({sql_literal(str(value))} AS DATE)"
    if pa.types.is_timestamp(value.type):
        return f"CAST({sql_literal(str(value))} AS TIMESTAMP)"
    if pa.types.is_integer(value.type) or pa.types.is_floating(value.type) or pa.types.is_boolean(value.type):
        return str(value.as_py())
    return sql_literal(str(value))


def partition_filter(keys: Sequence[str], column: str = PARTITION_COLUMN, kind: pa.DataType | None = None) -> str:
    """``column IN (...)`` for partition keys; with the column's type ``kind`` the keys are typed literals."""
    if kind is None or pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return f"{column} IN ({', '.join(sql_literal(k) for k in keys)})"
    values = [pa.scalar(v, kind) for v in typed_keys(keys, kind, column)]
    return f"{column} IN ({', '.join(sql_value(v) for v in values)})"


def partition_keys(batch: pa.RecordBatch | pa.Table, name: str = PARTITION_COLUMN, first_row: int = 0) -> set[str]:
    """The distinct values of the partition column ``name`` of a batch, as partition keys (strings); the batch
    must have the column and no nulls in it (a null is named by its row: ``first_row`` is the batch's first)."""
    if name not in batch.column_names:
        raise ConfigError(f"a partitioned write needs the column {name!r}; columns: {batch.column_names}")
    column = batch.column(name)
    import pyarrow.compute as pc  # ~30-80 ms to import: here, not when the stores are imported

    if column.null_count:
        at = pc.index(pc.is_null(column), True).as_py()
        raise ConfigError(f"partition column {name!r} has {column.null_count} null value(s), the first at row "
                          f"{first_row + at}: no partition key names a null, so the row could never be replaced")

    return {str(v) for v in pc.unique(column).to_pylist()}


def split_partitions(table: pa.Table | pa.RecordBatch, name: str = PARTITION_COLUMN, first_row: int = 0
                     ) -> dict[str, pa.Table | pa.RecordBatch]:
    """Rows grouped by the partition column ``name`` (the order of first appearance), keyed by partition key."""
    keys = partition_keys(table, name, first_row)
    if len(keys) == 1:
        return {keys.pop(): table}
    column = table.column(name)
    ordered = list(dict.fromkeys(column.to_pylist()))
    import pyarrow.compute as pc

    return {str(value): table.filter(pc.equal(column, pa.scalar(value, column.type))) for value in ordered}


def typed_keys(keys: Sequence[str], kind: pa.DataType, name: str) -> list[object]:
    """Partition keys (Dagster's strings) as values of the partition column's type (a ``date`` column gets dates)."""
    try:
        return [pa.scalar(key).cast(kind).as_py() for key in keys]
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ConfigError(f"partition keys {list(keys)[:5]} cannot be read as column {name!r}'s type {kind}") from exc


def check_columns(columns: Sequence[str] | None, available: Sequence[str], where: str) -> list[str] | None:
    """``columns`` (Dagster's ``columns`` input metadata) as a list, or an error naming the ones ``where`` lacks.
    An empty list selects nothing, so every column is read, as Dagster's own IO managers read it
    (dagster-duckdb: ``", ".join(columns) if columns else "*"``)."""
    if columns is None:
        return None
    if isinstance(columns, str) or not all(isinstance(c, str) for c in columns):
        raise ConfigError(f"{where}: the 'columns' input metadata must be a list of column names, got {columns!r}")
    if not columns:
        return None
    missing = [c for c in columns if c not in available]
    if missing:
        raise ConfigError(f"{where}: no column(s) {missing} (asked for in the input's 'columns' metadata); "
                          f"it has {list(available)}")
    return list(columns)


def with_partition(table: pa.Table, key: str) -> pa.Table:
    """``table`` with ``_partition`` set to ``key`` on every row (added or replaced)."""
    values = pa.array([key] * table.num_rows, pa.string())
    if PARTITION_COLUMN in table.column_names:
        return table.set_column(table.column_names.index(PARTITION_COLUMN), PARTITION_COLUMN, values)
    return table.append_column(PARTITION_COLUMN, values)


def as_reader(data: Data) -> pa.RecordBatchReader:
    return data.to_reader() if isinstance(data, pa.Table) else data


def map_reader(reader: pa.RecordBatchReader, schema: pa.Schema,
               change: Callable[[pa.RecordBatch], pa.RecordBatch]) -> pa.RecordBatchReader:
    """A reader whose batches are ``change(batch)``; the source reader is closed when this one ends or is closed."""

    def batches() -> Iterator[pa.RecordBatch]:
        with reader:
            for batch in reader:
                yield change(batch)

    return pa.RecordBatchReader.from_batches(schema, batches())


def stream_with_partition(reader: pa.RecordBatchReader, key: str, name: str = PARTITION_COLUMN
                          ) -> pa.RecordBatchReader:
    """Every batch of ``reader`` with the partition column ``name`` set to ``key``."""
    names = reader.schema.names
    if name in names:
        schema = reader.schema.set(names.index(name), pa.field(name, pa.string()))
    else:
        schema = reader.schema.append(pa.field(name, pa.string()))

    def change(batch: pa.RecordBatch) -> pa.RecordBatch:
        values = pa.array([key] * batch.num_rows, pa.string())
        if name in batch.schema.names:
            return batch.set_column(batch.schema.names.index(name), name, values)
        return batch.append_column(name, values)

    return map_reader(reader, schema, change)


def chain_readers(schema: pa.Schema, readers: Iterator[pa.RecordBatchReader]) -> pa.RecordBatchReader:
    """One reader over several, each batch conformed to ``schema``."""

    def batches() -> Iterator[pa.RecordBatch]:
        for reader in readers:
            with reader:
                for batch in reader:
                    yield conform(batch, schema)

    return pa.RecordBatchReader.from_batches(schema, batches())


_OPEN: weakref.WeakSet[pa.RecordBatchReader] = weakref.WeakSet()
_OPEN_LOCK = threading.Lock()


def closed_at_exit(reader: pa.RecordBatchReader) -> pa.RecordBatchReader:
    """Remember a reader backed by a native library's threads (delta-rs) and close it at interpreter exit if its
    consumer never did: an open one can hang the exit (delta-rs #2184)."""
    with _OPEN_LOCK:
        _OPEN.add(reader)
    return reader


@atexit.register
def _close_open_readers() -> None:
    with _OPEN_LOCK:
        readers = list(_OPEN)
    for reader in readers:
        reader.close()


@dataclass(frozen=True)
class WriteResult:
    """Where a write landed: the table's URI, its version after the write (None where unversioned), row count."""

    uri: str
    version: int | None
    rows: int


class TableStore(Protocol):
    """One asset's table. ``partitions=None`` means unpartitioned (write) or everything (read).

    ``partition_column`` holds each row's partition key: ``_partition`` by default, or a real column of the data
    (Dagster's ``partition_expr``). ``columns`` on a read reads only those (Dagster's ``columns`` input metadata);
    a name the table lacks is an error naming it."""

    uri: str
    partition_column: str

    def write(self, data: Data, partitions: Sequence[str] | None) -> WriteResult:
        """Replace ``partitions`` with ``data`` (a table or a reader, written batch by batch and committed once;
        every row's ``_partition`` must be one of them, and one with no rows becomes empty)."""
        ...

    def read(self, partitions: Sequence[str] | None = None, *, columns: Sequence[str] | None = None) -> pa.Table: ...

    def read_stream(self, partitions: Sequence[str] | None = None, *, columns: Sequence[str] | None = None
                    ) -> pa.RecordBatchReader:
        """The same rows as ``read``, in the same order, batch by batch."""
        ...

    def partitions(self) -> list[str]: ...
