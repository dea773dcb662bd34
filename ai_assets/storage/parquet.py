"""Parquet: one file per partition, ``part=<key>.parquet``, written batch by batch to a temp file then renamed.

Key names are encoded so that ``..``, ``/`` and quotes can neither escape nor collide; a key too long for a file
name gets a readable prefix and a digest, and its exact value is kept in the file's metadata.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ai_assets.runtime.errors import ConfigError
from ai_assets.storage.base import (
    DIGEST_MARK,
    PARTITION_COLUMN,
    Data,
    WriteResult,
    as_reader,
    chain_readers,
    check_columns,
    decode_key,
    file_key,
    split_partitions,
    stream_with_partition,
)

UNPARTITIONED = "data.parquet"
KEY_METADATA = b"ai_assets.partition"
READ_BATCH_ROWS = 65_536


class ParquetStore:
    """``uri`` is a folder (local path or fsspec URL); ``storage_options`` go to fsspec. With a real
    ``partition_column`` (Dagster's ``partition_expr``) the column stays in each partition's file with its own type;
    the synthetic ``_partition`` is kept in the file name only and added back on read."""

    def __init__(self, uri: str, storage_options: dict[str, Any] | None = None, *,
                 partition_column: str = PARTITION_COLUMN) -> None:
        import fsspec  # here, not at import: loading definitions that name this store costs no fsspec

        self.uri = uri.rstrip("/")
        self.partition_column = partition_column
        self._synthetic = partition_column == PARTITION_COLUMN
        self.fs, self.root = fsspec.core.url_to_fs(self.uri, **(storage_options or {}))

    def path_for(self, key: str | None) -> str:
        name = UNPARTITIONED if key is None else f"part={file_key(key)}.parquet"
        return f"{self.root}/{name}"

    def write(self, data: Data, partitions: Sequence[str] | None) -> WriteResult:
        reader = as_reader(data)
        self.fs.makedirs(self.root, exist_ok=True)
        if partitions is None:
            writer = _Part(self, None, reader.schema)
            with reader:
                try:
                    rows = writer.write_all(reader)
                except BaseException:
                    writer.abort()
                    raise
            writer.commit()
            return WriteResult(self.uri, None, rows)
        wanted = set(partitions)
        names = reader.schema.names
        column = self.partition_column
        drop = [PARTITION_COLUMN] if self._synthetic and PARTITION_COLUMN in names else []
        schema = reader.schema.remove(names.index(PARTITION_COLUMN)) if drop else reader.schema
        parts = {key: _Part(self, key, schema) for key in partitions}
        rows = 0
        try:
            with reader:
                for batch in reader:
                    for key, part in split_partitions(batch, column, first_row=rows).items():
                        if key not in wanted:
                            raise ConfigError(f"a row of partition {key!r} is not among this write's partitions "
                                              f"{sorted(wanted)}")
                        parts[key].write(part.drop_columns(drop))
                        rows += part.num_rows
            for part in parts.values():
                part.close()
        except BaseException:
            for part in parts.values():
                part.abort()
            raise
        for part in parts.values():
            part.commit()  # rename(2) locally; object stores replace whole objects
        return WriteResult(self.uri, None, rows)

    def partitions(self) -> list[str]:
        if not self.fs.exists(self.root):
            return []
        names = [p.rsplit("/", 1)[-1] for p in self.fs.ls(self.root, detail=False)]
        keys = []
        for name in names:
            if not (name.startswith("part=") and name.endswith(".parquet")):
                continue
            encoded = name[len("part="):-len(".parquet")]
            keys.append(self._stored_key(f"{self.root}/{name}") if DIGEST_MARK in encoded else decode_key(encoded))
        return sorted(keys)

    def _stored_key(self, path: str) -> str:
        with self.fs.open(path, "rb") as handle:
            metadata = pq.read_schema(handle).metadata or {}
        return str(metadata[KEY_METADATA].decode())

    def read(self, partitions: Sequence[str] | None = None, *, columns: Sequence[str] | None = None) -> pa.Table:
        return self.read_stream(partitions, columns=columns).read_all()

    def read_stream(self, partitions: Sequence[str] | None = None, *, columns: Sequence[str] | None = None
                    ) -> pa.RecordBatchReader:
        if partitions is None and self.fs.exists(self.path_for(None)):
            whole = self.path_for(None)
            return self._open(whole, check_columns(columns, self._schema(whole).names, whole))
        keys = self.partitions() if partitions is None else list(partitions)
        paths = {}
        for key in keys:
            path = self.path_for(key)
            if not self.fs.exists(path):
                raise FileNotFoundError(f"partition {key!r} of {self.uri} has not been written ({path})")
            paths[key] = path
        if not paths:
            raise FileNotFoundError(f"no data under {self.uri}")
        schema = pa.unify_schemas([self._schema(path) for path in paths.values()], promote_options="default")
        if self._synthetic:
            schema = schema.append(pa.field(PARTITION_COLUMN, pa.string()))
        chosen = check_columns(columns, schema.names, self.uri)
        if chosen is not None:
            schema = pa.schema([schema.field(name) for name in chosen])

        def readers() -> Iterator[pa.RecordBatchReader]:
            for key, path in paths.items():
                stored = None if chosen is None else [c for c in chosen if c in self._schema(path).names]
                reader = self._open(path, stored)
                yield stream_with_partition(reader, key) if self._synthetic else reader

        return chain_readers(schema, readers())

    def _schema(self, path: str) -> pa.Schema:
        with self.fs.open(path, "rb") as handle:
            return pq.read_schema(handle).remove_metadata()

    def _open(self, path: str, columns: Sequence[str] | None = None) -> pa.RecordBatchReader:
        handle = self.fs.open(path, "rb")
        parquet = pq.ParquetFile(handle)
        schema = parquet.schema_arrow.remove_metadata()
        if columns is not None:
            schema = pa.schema([schema.field(name) for name in columns])

        def batches() -> Iterator[pa.RecordBatch]:
            try:
                for batch in parquet.iter_batches(batch_size=READ_BATCH_ROWS, columns=columns):
                    yield batch.replace_schema_metadata(None)
            finally:
                handle.close()

        return pa.RecordBatchReader.from_batches(schema, batches())


class _Part:
    """One partition's file while it is written: a temp file until ``commit`` renames it into place."""

    def __init__(self, store: ParquetStore, key: str | None, schema: pa.Schema) -> None:
        self.store = store
        self.key = key
        self.temp = f"{store.root}/.tmp-{uuid.uuid4().hex}.parquet"
        metadata = {KEY_METADATA: key.encode()} if key is not None else {}
        self.schema = schema.with_metadata({**(schema.metadata or {}), **metadata})
        self._handle: Any = None
        self._writer: pq.ParquetWriter | None = None

    def _open(self) -> pq.ParquetWriter:
        if self._writer is None:
            self._handle = self.store.fs.open(self.temp, "wb")
            self._writer = pq.ParquetWriter(self._handle, self.schema)
        return self._writer

    def write(self, rows: pa.Table | pa.RecordBatch) -> None:
        table = rows if isinstance(rows, pa.Table) else pa.Table.from_batches([rows])
        self._open().write_table(table.replace_schema_metadata(self.schema.metadata))

    def write_all(self, reader: pa.RecordBatchReader) -> int:
        rows = 0
        for batch in reader:
            self.write(batch)
            rows += batch.num_rows
        self.close()
        return rows

    def close(self) -> None:
        self._open().close()  # a partition with no rows still gets its (empty) file
        self._handle.close()

    def commit(self) -> None:
        self.store.fs.mv(self.temp, self.store.path_for(self.key))

    def abort(self) -> None:
        try:
            if self._writer is not None and self._handle is not None and not self._handle.closed:
                with contextlib.suppress(OSError, ValueError, pa.ArrowException):  # the file is removed anyway
                    self._writer.close()  # else its finalizer writes to the closed handle
            if self._handle is not None and not self._handle.closed:
                self._handle.close()
        finally:
            if self.store.fs.exists(self.temp):
                self.store.fs.rm(self.temp)
