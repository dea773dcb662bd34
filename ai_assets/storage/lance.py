"""LanceDB: one table per asset with ``_partition``, a row number ``_row`` and (for embeddings) a vector column.

A partition is replaced in one versioned commit: ``merge_insert`` on ``(_partition, _row)`` streams the new rows
in, updates matching rows, inserts new ones and deletes the partition's rows missing from the new data. Reads give
each partition's rows in ``_row`` order (LanceDB scans in no fixed order, so a partition is read in ranges of
``_row``). A cosine vector index is built once the table passes ``index_after_rows``, and brought up to date
(``optimize``) once more than ``reindex_after_rows`` rows are not in it. With a ``text_column`` (the text an
embedding asset embedded) a full-text index is built on it after the first write and kept up to date the same
way, so the table answers vector, full-text and hybrid queries. Partition keys reach filters only as
escaped SQL literals.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.ipc

from ai_assets.runtime.errors import ConfigError, MissingExtraError
from ai_assets.storage.base import (
    PARTITION_COLUMN,
    Data,
    WriteResult,
    as_reader,
    check_columns,
    map_reader,
    partition_filter,
    partition_keys,
)

ROW_COLUMN = "_row"
READ_RANGE_ROWS = 65_536
MERGE_ATTEMPTS = 4


def _index_on(handle: Any, column: str) -> Any:
    return next((i for i in handle.list_indices() if column in i.columns), None)


def _lancedb() -> Any:
    try:
        import lancedb
    except ImportError as exc:
        raise MissingExtraError("lancedb", "lancedb") from exc
    return lancedb


class LanceStore:
    def __init__(self, uri: str, table_name: str, *, vector_column: str | None = None,
                 index_after_rows: int | None = None, reindex_after_rows: int = 10_000,
                 text_column: str | None = None, storage_options: dict[str, str] | None = None,
                 partition_column: str = PARTITION_COLUMN) -> None:
        self.root = uri.rstrip("/")
        self.partition_column = partition_column
        self.table_name = table_name
        self.uri = f"{self.root}/{table_name}.lance"
        self.vector_column = vector_column
        self.index_after_rows = index_after_rows
        self.reindex_after_rows = reindex_after_rows
        self.text_column = text_column
        self._db = _lancedb().connect(self.root, storage_options=storage_options)

    def _open(self) -> Any:
        try:
            return self._db.open_table(self.table_name)
        except (FileNotFoundError, ValueError):
            return None

    def write(self, data: Data, partitions: Sequence[str] | None) -> WriteResult:
        reader = as_reader(data)
        rows = [0]
        if partitions is None:
            handle = self._db.create_table(self.table_name, _numbered(reader, rows, None), mode="overwrite",
                                           on_bad_vectors="null")
        else:
            if self.partition_column not in reader.schema.names:
                raise ConfigError(f"a partitioned write needs the column {self.partition_column!r}; "
                                  f"columns: {reader.schema.names}")
            handle = self._replace(_numbered(reader, rows, set(partitions), self.partition_column), partitions)
        self._maintain_index(handle)
        self._maintain_text_index(handle)
        return WriteResult(self.uri, int(handle.version), rows[0])

    def _merge(self, handle: Any, source: pa.RecordBatchReader, partitions: Sequence[str]) -> None:
        missing = [f for f in source.schema if f.name not in handle.schema.names]
        if missing:
            handle.add_columns(pa.schema(missing))
        column = self.partition_column
        where = partition_filter(partitions, column, source.schema.field(column).type)
        (handle.merge_insert([column, ROW_COLUMN]).when_matched_update_all()
         .when_not_matched_insert_all().when_not_matched_by_source_delete(where)
         .execute(source, on_bad_vectors="null"))

    def _replace(self, source: pa.RecordBatchReader, partitions: Sequence[str]) -> Any:
        """Merge ``source`` in as ``partitions``' rows, creating the table on its first write.

        Lance rebases a merge over concurrent appends and merges, but not over an Overwrite, and on S3 a table
        created by two first writers at once can get a second, empty Overwrite commit (seen with 6 writers: a merge
        begun on version 1 failed as "incompatible with concurrent transaction Overwrite at version 2"). So the
        rows are spooled to a local Arrow file and merged again on the latest version when that happens; a merge
        replaces whole partitions, so doing it again is safe. The handle is opened afresh after a create (which
        may have merged wiped partitions back in)."""
        with tempfile.TemporaryDirectory(prefix="ai_assets-lance-") as folder:
            path = f"{folder}/rows.arrow"
            with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, source.schema) as spool:
                for batch in source:
                    spool.write_batch(batch)
            for attempt in range(1, MERGE_ATTEMPTS + 1):
                handle = self._open() or self._create(source.schema)
                with pa.memory_map(path) as mapped:
                    stored = pa.ipc.open_file(mapped)
                    spooled = pa.RecordBatchReader.from_batches(
                        stored.schema, (stored.get_batch(i) for i in range(stored.num_record_batches)))
                    try:
                        self._merge(handle, spooled, partitions)
                        return handle
                    except RuntimeError as exc:
                        if "Incompatible transaction" not in str(exc) or attempt == MERGE_ATTEMPTS:
                            raise
        raise AssertionError("unreachable")

    def _create(self, schema: pa.Schema) -> Any:
        """Create the table empty (see DeltaStore._create): a concurrent creator's table is used, not replaced.
        ``mode="create"`` fails when another writer got there first (``exist_ok`` was seen to commit a second,
        empty Overwrite over the first creator's table on S3).

        ``mode="create"`` checks for the table before it commits, and Lance rebases an Overwrite over anything:
        a creator that lost the race to commit (seen on S3: starved while 5 other writers each merged 3 times)
        still lands its empty table as a later version, over partitions others wrote. So a create that did not
        land as version 1 puts back the partitions it wiped (see ``_restore_wiped``)."""
        try:
            handle = self._db.create_table(self.table_name, schema=schema, mode="create")
        except (OSError, ValueError, RuntimeError):
            handle = self._open()
            if handle is None:
                raise
            return handle
        if int(handle.version) > 1:
            self._restore_wiped(int(handle.version) - 1)
            return self._open() or handle
        return handle

    def _restore_wiped(self, before: int) -> None:
        """Insert the rows of the partitions that version ``before`` held and the latest version lacks.

        Partitions written after the wiping create are the newer truth and stay as they are; the insert only adds
        rows whose ``(_partition, _row)`` is not there, so it cannot undo a concurrent replace that lands first."""
        previous = self._db.open_table(self.table_name)
        previous.checkout(before)
        column = self.partition_column
        if column not in previous.schema.names or ROW_COLUMN not in previous.schema.names:
            return
        for attempt in range(1, MERGE_ATTEMPTS + 1):
            latest = self._db.open_table(self.table_name)
            lost = sorted(set(_partition_column(previous, column)) - set(_partition_column(latest, column)))
            if not lost:
                return
            where = partition_filter(lost, column, previous.schema.field(column).type)
            rows = previous.search().where(where).limit(None).to_arrow()
            try:
                (latest.merge_insert([column, ROW_COLUMN]).when_not_matched_insert_all()
                 .execute(rows, on_bad_vectors="null"))
                return
            except RuntimeError as exc:
                if "Incompatible transaction" not in str(exc) or attempt == MERGE_ATTEMPTS:
                    raise

    def _maintain_index(self, handle: Any) -> None:
        """Build the vector index past ``index_after_rows``; fold new rows into it past ``reindex_after_rows``."""
        if not self.vector_column or self.index_after_rows is None:
            return
        from lancedb.index import IvfPq

        self._maintain(handle, self.vector_column, IvfPq(distance_type="cosine"), self.index_after_rows)

    def _maintain_text_index(self, handle: Any) -> None:
        """A full-text (inverted) index on ``text_column``, built on the first write (rows not yet in it are still
        searched, by a scan)."""
        if not self.text_column or self.text_column not in handle.schema.names:
            return
        from lancedb.index import FTS

        self._maintain(handle, self.text_column, FTS(), 0)

    def _maintain(self, handle: Any, column: str, config: Any, build_after_rows: int) -> None:
        """The index on ``column``: built with ``config`` once the table has ``build_after_rows`` rows, then brought
        up to date (``optimize``) once more than ``reindex_after_rows`` rows are not in it."""
        index = _index_on(handle, column)
        if index is None:
            if handle.count_rows() >= build_after_rows:
                handle.create_index(column, config=config)
            return
        stats = handle.index_stats(index.name)
        if stats is not None and stats.num_unindexed_rows > self.reindex_after_rows:
            handle.optimize()

    def unindexed_rows(self) -> int | None:
        """Rows not yet in the vector index (None when there is no index)."""
        handle = self._open()
        if handle is None or not self.vector_column:
            return None
        index = _index_on(handle, self.vector_column)
        return None if index is None else int(handle.index_stats(index.name).num_unindexed_rows)

    def read(self, partitions: Sequence[str] | None = None, *, columns: Sequence[str] | None = None) -> pa.Table:
        return self.read_stream(partitions, columns=columns).read_all()

    def read_stream(self, partitions: Sequence[str] | None = None, *, columns: Sequence[str] | None = None
                    ) -> pa.RecordBatchReader:
        handle = self._open()
        if handle is None:
            raise FileNotFoundError(f"no LanceDB table {self.table_name!r} under {self.root}")
        schema = handle.schema
        visible = [name for name in schema.names if name != ROW_COLUMN]
        chosen = check_columns(columns, visible, f"LanceDB table {self.table_name!r} under {self.root}")
        if ROW_COLUMN not in schema.names:  # an unpartitioned table, written once in order
            query = handle.search() if chosen is None else handle.search().select(chosen)
            return query.limit(None).to_batches(READ_RANGE_ROWS)
        keys = sorted(self.partitions()) if partitions is None else list(partitions)
        out_schema = schema.remove(schema.get_field_index(ROW_COLUMN))
        if chosen is not None:
            out_schema = pa.schema([out_schema.field(name) for name in chosen])
        column = self.partition_column
        kind = schema.field(column).type

        def batches() -> Iterator[pa.RecordBatch]:
            for key in keys:
                where = partition_filter([key], column, kind)
                count = handle.count_rows(where)
                for start in range(0, count, READ_RANGE_ROWS):
                    query = handle.search() if chosen is None else handle.search().select([*chosen, ROW_COLUMN])
                    part = (query.where(f"{where} AND {ROW_COLUMN} >= {start} AND "
                                   f"{ROW_COLUMN} < {start + READ_RANGE_ROWS}")
                            .limit(None).to_arrow().sort_by(ROW_COLUMN))
                    yield from part.select(out_schema.names).cast(out_schema).to_batches()

        return pa.RecordBatchReader.from_batches(out_schema, batches())

    def partitions(self) -> list[str]:
        handle = self._open()
        if handle is None or self.partition_column not in handle.schema.names:
            return []
        return sorted(set(_partition_column(handle, self.partition_column)))


def _partition_column(handle: Any, column: str = PARTITION_COLUMN) -> list[str]:
    """Every row's partition key (as a string)."""
    return [str(v) for v in handle.search().select([column]).limit(None).to_arrow().column(column).to_pylist()]


def _numbered(reader: pa.RecordBatchReader, rows: list[int], allowed: set[str] | None,
              column: str = PARTITION_COLUMN) -> pa.RecordBatchReader:
    """``reader`` with ``_row`` numbering each partition's rows from 0, counting rows and refusing strays."""
    next_row: dict[str, int] = {}
    schema = reader.schema
    if allowed is not None:
        schema = schema.append(pa.field(ROW_COLUMN, pa.int64()))

    def number(batch: pa.RecordBatch) -> pa.RecordBatch:
        rows[0] += batch.num_rows
        if allowed is None:
            return batch
        stray = partition_keys(batch, column, first_row=rows[0] - batch.num_rows) - allowed if batch.num_rows else set()
        if stray:
            raise ConfigError(f"rows of partition(s) {sorted(stray)} are not among this write's partitions "
                              f"{sorted(allowed)}")
        numbers = []
        for key in batch.column(column).to_pylist():
            numbers.append(next_row.get(key, 0))
            next_row[key] = numbers[-1] + 1
        return batch.append_column(ROW_COLUMN, pa.array(numbers, pa.int64()))

    return map_reader(reader, schema, number)
