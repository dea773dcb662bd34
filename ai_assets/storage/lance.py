"""LanceDB: one table per asset with ``_partition`` and a vector column.

A partition is replaced in one versioned commit: ``merge_insert`` on ``(_partition, _row)`` updates matching rows,
inserts new ones and deletes the partition's rows missing from the new data. A vector index is built once the table
passes ``index_after_rows``. Partition keys reach filters only as escaped SQL literals.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from ai_assets.runtime.errors import MissingExtraError
from ai_assets.storage.base import PARTITION_COLUMN, WriteResult, partition_filter, split_partitions

ROW_COLUMN = "_row"


def _lancedb() -> Any:
    try:
        import lancedb
    except ImportError as exc:
        raise MissingExtraError("lancedb", "lancedb") from exc
    return lancedb


class LanceStore:
    def __init__(self, uri: str, table_name: str, *, vector_column: str | None = None,
                 index_after_rows: int | None = None, storage_options: dict[str, str] | None = None) -> None:
        self.root = uri.rstrip("/")
        self.table_name = table_name
        self.uri = f"{self.root}/{table_name}.lance"
        self.vector_column = vector_column
        self.index_after_rows = index_after_rows
        self._db = _lancedb().connect(self.root, storage_options=storage_options)

    def _open(self) -> Any:
        try:
            return self._db.open_table(self.table_name)
        except (FileNotFoundError, ValueError):
            return None

    def write(self, table: pa.Table, partitions: Sequence[str] | None) -> WriteResult:
        if partitions is None:
            handle = self._db.create_table(self.table_name, table, mode="overwrite", on_bad_vectors="null")
        else:
            data = _with_row_ids(table)
            handle = self._open() or self._create(data.schema)
            missing = [c for c in data.column_names if c not in handle.schema.names]
            if missing:
                handle.add_columns(pa.schema([data.schema.field(c) for c in missing]))
            (handle.merge_insert([PARTITION_COLUMN, ROW_COLUMN]).when_matched_update_all()
             .when_not_matched_insert_all().when_not_matched_by_source_delete(partition_filter(partitions))
             .execute(data, on_bad_vectors="null"))
        self._maybe_index(handle)
        return WriteResult(self.uri, int(handle.version), table.num_rows)

    def _create(self, schema: pa.Schema) -> Any:
        """Create the table empty (see DeltaStore._create): a concurrent creator's table is used, not replaced."""
        try:
            return self._db.create_table(self.table_name, schema=schema, exist_ok=True)
        except (OSError, ValueError, RuntimeError):
            handle = self._open()
            if handle is None:
                raise
            return handle

    def _maybe_index(self, handle: Any) -> None:
        if not self.vector_column or self.index_after_rows is None:
            return
        if handle.count_rows() < self.index_after_rows:
            return
        if any(self.vector_column in index.columns for index in handle.list_indices()):
            return
        from lancedb.index import IvfPq

        handle.create_index(self.vector_column, config=IvfPq(distance_type="cosine"))

    def read(self, partitions: Sequence[str] | None = None) -> pa.Table:
        handle = self._open()
        if handle is None:
            raise FileNotFoundError(f"no LanceDB table {self.table_name!r} under {self.root}")
        if partitions is None:
            table = handle.to_arrow()
        else:
            table = handle.search().where(partition_filter(partitions)).limit(None).to_arrow()
        if ROW_COLUMN in table.column_names:
            table = table.sort_by([(PARTITION_COLUMN, "ascending"), (ROW_COLUMN, "ascending")])
            table = table.drop_columns([ROW_COLUMN])
        return table

    def partitions(self) -> list[str]:
        handle = self._open()
        if handle is None or PARTITION_COLUMN not in handle.schema.names:
            return []
        return sorted(set(handle.to_arrow().column(PARTITION_COLUMN).to_pylist()))


def _with_row_ids(table: pa.Table) -> pa.Table:
    """A row number within each partition, the merge key beside ``_partition``."""
    groups = split_partitions(table) if table.num_rows else {}
    parts = [g.append_column(ROW_COLUMN, pa.array(range(g.num_rows), pa.int64())) for g in groups.values()]
    if not parts:
        return table.append_column(ROW_COLUMN, pa.array([], pa.int64()))
    return pa.concat_tables(parts)
