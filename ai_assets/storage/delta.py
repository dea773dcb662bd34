"""Delta Lake: one table per asset; a partition is replaced with a predicate overwrite on ``_partition``.

Rows are not physically partitioned by directory: keys may hold any character, and every write adds its own files,
so replacing one partition rewrites no other partition's files. New columns merge into the schema. ``merge_on``
turns the write into a MERGE upsert by key columns within the partition. A commit is atomic (files first, then
one log entry); files left by a killed write are never referenced and go with ``vacuum()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from ai_assets.runtime.errors import MissingExtraError
from ai_assets.storage.base import PARTITION_COLUMN, WriteResult, partition_filter, split_partitions


def _deltalake() -> Any:
    try:
        import deltalake
    except ImportError as exc:
        raise MissingExtraError("deltalake", "delta") from exc
    return deltalake


def restore_vectors(table: pa.Table) -> pa.Table:
    """Delta has no fixed-size list type: give ``list<float32>`` columns whose lists all have one length back
    their ``fixed_size_list<float32>[d]`` type, so embeddings read back as they were written."""
    import pyarrow.compute as pc

    for index, field in enumerate(table.schema):
        if not (pa.types.is_list(field.type) or pa.types.is_large_list(field.type)):
            continue
        if field.type.value_type != pa.float32() or table.num_rows == 0:
            continue
        lengths = pc.unique(pc.drop_null(pc.list_value_length(table.column(index)))).to_pylist()
        if len(lengths) == 1 and lengths[0] > 0:
            fixed = pa.list_(pa.field("item", pa.float32()), lengths[0])
            table = table.set_column(index, field.name, table.column(index).cast(fixed))
    return table


class DeltaStore:
    def __init__(self, uri: str, storage_options: dict[str, str] | None = None,
                 merge_on: Sequence[str] | None = None) -> None:
        self.uri = uri.rstrip("/")
        self.storage_options = storage_options
        self.merge_on = list(merge_on or [])

    def _table(self) -> Any:
        dl = _deltalake()
        if not dl.DeltaTable.is_deltatable(self.uri, storage_options=self.storage_options):
            return None
        return dl.DeltaTable(self.uri, storage_options=self.storage_options)

    def write(self, table: pa.Table, partitions: Sequence[str] | None) -> WriteResult:
        dl = _deltalake()
        if partitions is None:
            existing = self._table()
            dl.write_deltalake(self.uri, table, mode="overwrite", schema_mode="overwrite" if existing else None,
                               storage_options=self.storage_options)
            return WriteResult(self.uri, dl.DeltaTable(self.uri, storage_options=self.storage_options).version(),
                               table.num_rows)
        if table.num_rows:
            split_partitions(table)  # validates the partition column
        existing = self._table() or self._create(table.schema)
        if self.merge_on:
            keys = [*self.merge_on, PARTITION_COLUMN]
            (existing.merge(table, " AND ".join(f"t.{k} = s.{k}" for k in keys), source_alias="s",
                            target_alias="t", merge_schema=True)
             .when_matched_update_all().when_not_matched_insert_all().execute())
        else:
            dl.write_deltalake(existing, table, mode="overwrite", predicate=partition_filter(partitions),
                               schema_mode="merge", storage_options=self.storage_options)
        version = dl.DeltaTable(self.uri, storage_options=self.storage_options).version()
        return WriteResult(self.uri, version, table.num_rows)

    def _create(self, schema: pa.Schema) -> Any:
        """Create the table empty, so that concurrent first writers of different partitions cannot overwrite
        each other: the loser of the race to version 0 finds the winner's table and writes into it."""
        dl = _deltalake()
        try:
            dl.write_deltalake(self.uri, schema.empty_table(), mode="ignore", storage_options=self.storage_options)
        except dl.exceptions.DeltaError:
            if self._table() is None:
                raise
        return self._table()

    def read(self, partitions: Sequence[str] | None = None) -> pa.Table:
        table = self._table()
        if table is None:
            raise FileNotFoundError(f"no Delta table at {self.uri}")
        dataset = table.to_pyarrow_dataset()
        if partitions is None:
            return restore_vectors(dataset.to_table())
        import pyarrow.compute as pc

        return restore_vectors(dataset.to_table(filter=pc.field(PARTITION_COLUMN).isin(list(partitions))))

    def partitions(self) -> list[str]:
        table = self._table()
        if table is None or PARTITION_COLUMN not in table.schema().to_arrow().names:
            return []
        column = table.to_pyarrow_dataset().to_table(columns=[PARTITION_COLUMN]).column(PARTITION_COLUMN)
        return sorted(set(column.to_pylist()))

    def vacuum(self, retention_hours: int = 168) -> list[str]:
        """Delete files no version within ``retention_hours`` references (e.g. left by a killed write)."""
        table = self._table()
        if table is None:
            return []
        removed: list[str] = table.vacuum(retention_hours=retention_hours, enforce_retention_duration=False,
                                          dry_run=False)
        return removed
