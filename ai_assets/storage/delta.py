"""Delta Lake: one table per asset; a partition is replaced with a predicate overwrite on ``_partition``.

Rows are not physically partitioned by directory: keys may hold any character, and every write adds its own files,
so replacing one partition rewrites no other partition's files. New columns merge into the schema. ``merge_on``
turns the write into a MERGE upsert by key columns within the partition; ``delete_missing`` also deletes the rows
of the partition that the new data no longer has. A write streams a reader into one commit (files first, then one
log entry); files left by a killed write are never referenced and go with ``vacuum()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa

from ai_assets.runtime.errors import ConfigError, MissingExtraError
from ai_assets.storage.base import (
    PARTITION_COLUMN,
    Data,
    WriteResult,
    as_reader,
    check_columns,
    closed_at_exit,
    map_reader,
    partition_filter,
    partition_keys,
    typed_keys,
)

READ_BATCH_ROWS = 65_536


def _deltalake() -> Any:
    try:
        import deltalake
    except ImportError as exc:
        raise MissingExtraError("deltalake", "delta") from exc
    return deltalake


def vector_types(dataset: Any) -> dict[str, pa.DataType]:
    """Delta has no fixed-size list type: the ``fixed_size_list<float32>[d]`` type of every ``list<float32>``
    column whose first stored value has length ``d``, so embeddings read back as they were written."""
    import pyarrow.compute as pc  # loaded with deltalake's pyarrow.dataset anyway; not when definitions load

    types = {}
    for field in dataset.schema:
        if not (pa.types.is_list(field.type) or pa.types.is_large_list(field.type)):
            continue
        if field.type.value_type != pa.float32():
            continue
        first = dataset.scanner(columns=[field.name], filter=pc.field(field.name).is_valid()).head(1)
        if first.num_rows and len(first.column(0)[0]) > 0:
            types[field.name] = pa.list_(pa.field("item", pa.float32()), len(first.column(0)[0]))
    return types


def as_lists(reader: pa.RecordBatchReader) -> pa.RecordBatchReader:
    """``fixed_size_list`` columns as plain lists. Delta has no fixed-size type; given one, delta-rs (1.6) keeps it
    in the Parquet files' Arrow schema but writes a null vector as an empty list, which no reader can then read
    back ("expected all lists to be of size=d"). ``vector_types`` restores the fixed size on read."""
    fixed = {f.name: pa.list_(f.type.value_field) for f in reader.schema if pa.types.is_fixed_size_list(f.type)}
    if not fixed:
        return reader
    schema = pa.schema([f.with_type(fixed[f.name]) if f.name in fixed else f for f in reader.schema],
                       metadata=reader.schema.metadata)
    return map_reader(reader, schema, lambda batch: batch.cast(schema))


def safe_commits(uri: str, storage_options: dict[str, str] | None) -> dict[str, str] | None:
    """On S3 and S3-compatible stores, commits by conditional put (``If-None-Match``/``If-Match``), so that
    workers writing partitions of one table at once all land: the loser of a race to a log version retries on the
    next one. AWS S3, MinIO, R2 and moto support it; no DynamoDB lock is needed (delta-rs >= 1.0). An explicit
    ``conditional_put`` (or ``AWS_S3_ALLOW_UNSAFE_RENAME``) from the user is kept."""
    if urlsplit(uri).scheme not in ("s3", "s3a"):
        return storage_options
    options = dict(storage_options or {})
    chosen = {k.lower() for k in options}
    if not chosen & {"conditional_put", "aws_conditional_put", "aws_s3_allow_unsafe_rename"}:
        options["aws_conditional_put"] = "etag"
    return options


class DeltaStore:
    def __init__(self, uri: str, storage_options: dict[str, str] | None = None,
                 merge_on: Sequence[str] | None = None, delete_missing: bool = False, *,
                 partition_column: str = PARTITION_COLUMN) -> None:
        self.uri = uri.rstrip("/")
        self.partition_column = partition_column
        self.storage_options = safe_commits(self.uri, storage_options)
        self.merge_on = list(merge_on or [])
        self.delete_missing = delete_missing

    def _table(self) -> Any:
        dl = _deltalake()
        if not dl.DeltaTable.is_deltatable(self.uri, storage_options=self.storage_options):
            return None
        return dl.DeltaTable(self.uri, storage_options=self.storage_options)

    def write(self, data: Data, partitions: Sequence[str] | None) -> WriteResult:
        dl = _deltalake()
        reader = as_lists(as_reader(data))
        rows = [0]
        if partitions is None:
            existing = self._table()
            dl.write_deltalake(self.uri, _counted(reader, rows, None), mode="overwrite",
                               schema_mode="overwrite" if existing else None, storage_options=self.storage_options)
            return WriteResult(self.uri, self._table().version(), rows[0])
        column = self.partition_column
        if column not in reader.schema.names:
            raise ConfigError(f"a partitioned write needs the column {column!r}; columns: {reader.schema.names}")
        existing = self._table() or self._create(reader.schema)
        refused: list[ConfigError] = []
        source = _counted(reader, rows, set(partitions), column, refused)
        try:
            self._replace(existing, source, partitions, reader.schema.field(column).type)
        except Exception:
            if refused:  # delta-rs returns an error raised in the stream as its own DeltaError text: ours, as is
                raise refused[0] from None
            raise
        return WriteResult(self.uri, self._table().version(), rows[0])

    def _replace(self, existing: Any, source: pa.RecordBatchReader, partitions: Sequence[str], kind: pa.DataType
                 ) -> None:
        column = self.partition_column
        if self.merge_on:
            keys = [*self.merge_on, column]
            merge = (existing.merge(source, " AND ".join(f"t.{k} = s.{k}" for k in keys), source_alias="s",
                                    target_alias="t", merge_schema=True)
                     .when_matched_update_all().when_not_matched_insert_all())
            if self.delete_missing:
                merge = merge.when_not_matched_by_source_delete(
                    predicate=partition_filter(partitions, f"t.{column}", kind))
            merge.execute()
        else:
            # Merge the schema only when there are new columns: a merge writes a metadata action, and two
            # concurrent commits that both change metadata conflict, where two that only add data do not.
            known = set(existing.schema().to_arrow().names)
            evolve = any(name not in known for name in source.schema.names)
            _deltalake().write_deltalake(existing, source, mode="overwrite",
                                         predicate=partition_filter(partitions, column, kind),
                                         schema_mode="merge" if evolve else None,
                                         storage_options=self.storage_options)

    def _create(self, schema: pa.Schema) -> Any:
        """Create the table empty, so that concurrent first writers of different partitions cannot overwrite
        each other: the loser of the race to version 0 finds the winner's table and writes into it."""
        dl = _deltalake()
        try:
            # No commit retries: a create that lost the race to version 0 must not be rebased onto version 1, where
            # its metadata action would fail every write that began against version 0.
            dl.write_deltalake(self.uri, schema.empty_table(), mode="ignore", storage_options=self.storage_options,
                               commit_properties=dl.CommitProperties(max_commit_retries=0))
        except dl.exceptions.DeltaError:
            if self._table() is None:
                raise
        return self._table()

    def read(self, partitions: Sequence[str] | None = None, *, columns: Sequence[str] | None = None) -> pa.Table:
        with self.read_stream(partitions, columns=columns) as reader:
            return reader.read_all()

    def read_stream(self, partitions: Sequence[str] | None = None, *, columns: Sequence[str] | None = None,
                    where: Any = None) -> pa.RecordBatchReader:
        """Rows of ``partitions`` (all when None), optionally only ``columns`` and rows matching ``where`` (a
        ``pyarrow.compute`` expression)."""
        table = self._table()
        if table is None:
            raise FileNotFoundError(f"no Delta table at {self.uri}")
        dataset = table.to_pyarrow_dataset()
        chosen = check_columns(columns, dataset.schema.names, f"Delta table {self.uri}")
        condition = where
        if partitions is not None:
            import pyarrow.compute as pc

            column = self.partition_column
            kind = dataset.schema.field(column).type if column in dataset.schema.names else pa.string()
            wanted = pc.field(column).isin(typed_keys(list(partitions), kind, column))
            condition = wanted if condition is None else condition & wanted
        vectors = vector_types(dataset)
        scanner = dataset.scanner(columns=chosen, filter=condition,
                                  batch_size=READ_BATCH_ROWS)
        inner = closed_at_exit(scanner.to_reader())
        fields = [pa.field(f.name, vectors.get(f.name, f.type)) for f in inner.schema]
        schema = pa.schema(fields)

        def restore(batch: pa.RecordBatch) -> pa.RecordBatch:
            if not vectors:
                return batch
            return pa.RecordBatch.from_arrays(
                [c.cast(vectors[n]) if n in vectors else c for n, c in zip(batch.schema.names, batch.columns,
                                                                            strict=True)], schema=schema)

        return map_reader(inner, schema, restore)

    def partitions(self) -> list[str]:
        table = self._table()
        name = self.partition_column
        if table is None or name not in table.schema().to_arrow().names:
            return []
        column = table.to_pyarrow_dataset().to_table(columns=[name]).column(name)
        return sorted({str(v) for v in column.to_pylist() if v is not None})

    def vacuum(self, retention_hours: int = 168) -> list[str]:
        """Delete files no version within ``retention_hours`` references (e.g. left by a killed write)."""
        table = self._table()
        if table is None:
            return []
        removed: list[str] = table.vacuum(retention_hours=retention_hours, enforce_retention_duration=False,
                                          dry_run=False)
        return removed


def _counted(reader: pa.RecordBatchReader, rows: list[int], allowed: set[str] | None,
             column: str = PARTITION_COLUMN, refused: list[ConfigError] | None = None) -> pa.RecordBatchReader:
    """``reader`` counting its rows into ``rows[0]`` and refusing rows of partitions outside ``allowed`` (the
    refusal also kept in ``refused``)."""

    def check(batch: pa.RecordBatch) -> pa.RecordBatch:
        if allowed is not None and batch.num_rows:
            try:
                stray = partition_keys(batch, column, first_row=rows[0]) - allowed
                if stray:
                    raise ConfigError(f"rows of partition(s) {sorted(stray)} are not among this write's partitions "
                                      f"{sorted(allowed)}")
            except ConfigError as error:
                if refused is not None:
                    refused.append(error)
                raise
        rows[0] += batch.num_rows
        return batch

    return map_reader(reader, reader.schema, check)
