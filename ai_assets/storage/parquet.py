"""Parquet: one file per partition, ``part=<encoded key>.parquet``, written to a temp file then renamed."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from ai_assets.storage.base import (
    PARTITION_COLUMN,
    WriteResult,
    decode_key,
    encode_key,
    split_partitions,
    with_partition,
)

UNPARTITIONED = "data.parquet"


class ParquetStore:
    """``uri`` is a folder (local path or fsspec URL); ``storage_options`` go to fsspec."""

    def __init__(self, uri: str, storage_options: dict[str, Any] | None = None) -> None:
        self.uri = uri.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.uri, **(storage_options or {}))

    def path_for(self, key: str | None) -> str:
        name = UNPARTITIONED if key is None else f"part={encode_key(key)}.parquet"
        return f"{self.root}/{name}"

    def write(self, table: pa.Table, partitions: Sequence[str] | None) -> WriteResult:
        self.fs.makedirs(self.root, exist_ok=True)
        if partitions is None:
            self._atomic_write(table, self.path_for(None))
            return WriteResult(self.uri, None, table.num_rows)
        groups = split_partitions(table) if table.num_rows else {}
        for key in partitions:
            part = groups.get(key, table.schema.empty_table())
            self._atomic_write(part.drop_columns([PARTITION_COLUMN]), self.path_for(key))
        return WriteResult(self.uri, None, table.num_rows)

    def _atomic_write(self, table: pa.Table, path: str) -> None:
        temp = f"{self.root}/.tmp-{uuid.uuid4().hex}.parquet"
        try:
            with self.fs.open(temp, "wb") as handle:
                pq.write_table(table, handle)
            self.fs.mv(temp, path)  # rename(2) locally; object stores replace whole objects
        finally:
            if self.fs.exists(temp):
                self.fs.rm(temp)

    def partitions(self) -> list[str]:
        if not self.fs.exists(self.root):
            return []
        names = [p.rsplit("/", 1)[-1] for p in self.fs.ls(self.root, detail=False)]
        return sorted(decode_key(n[len("part="):-len(".parquet")]) for n in names
                      if n.startswith("part=") and n.endswith(".parquet"))

    def read(self, partitions: Sequence[str] | None = None) -> pa.Table:
        if partitions is None:
            if self.fs.exists(self.path_for(None)):
                return self._read(self.path_for(None))
            partitions = self.partitions()
        tables = []
        for key in partitions:
            path = self.path_for(key)
            if not self.fs.exists(path):
                raise FileNotFoundError(f"partition {key!r} of {self.uri} has not been written ({path})")
            tables.append(with_partition(self._read(path), key))
        if not tables:
            raise FileNotFoundError(f"no data under {self.uri}")
        return pa.concat_tables(tables, promote_options="default")

    def _read(self, path: str) -> pa.Table:
        with self.fs.open(path, "rb") as handle:
            return pq.read_table(handle)
