"""IO managers for Arrow data: one base resolves partitions and records metadata; backends only build a store.

What moves is chosen by type, as dagster-polars chooses between ``DataFrame`` and ``LazyFrame``: an asset that
returns a ``pyarrow.RecordBatchReader`` is written batch by batch and committed once; an input annotated
``pyarrow.RecordBatchReader`` is read as a stream; ``pyarrow.Table`` works both ways for data that fits in memory.
Every backend writes exactly the partitions of the run (one, or a range in a single-run backfill), leaves the
others untouched, and loads one partition, a range, or everything (for an unpartitioned downstream asset).
"""

from __future__ import annotations

from abc import abstractmethod
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any

import dagster as dg
import pyarrow as pa
from pydantic import Field

from ai_assets.dagster.metadata import table_metadata
from ai_assets.runtime.columns import is_error_column
from ai_assets.storage.base import PARTITION_COLUMN, TableStore, as_reader, stream_with_partition
from ai_assets.storage.delta import DeltaStore
from ai_assets.storage.lance import LanceStore
from ai_assets.storage.parquet import ParquetStore

MERGE_ON = "ai_assets/merge_on"
MERGE_DELETE_MISSING = "ai_assets/merge_delete_missing"
VECTOR_COLUMN = "ai_assets/vector_column"
TEXT_COLUMN = "ai_assets/text_column"
"""The text an embedding asset embedded: LanceDB gives it a full-text index beside the vector index."""
PARTITION_EXPR = "partition_expr"
"""Dagster's own key (as in its DuckDB / Delta / Iceberg IO managers): the column that holds the partition key."""
COLUMNS = "columns"
"""Dagster's input metadata key: read only these columns."""
PREVIEW_ROWS = 5
ROW_COUNT = "dagster/row_count"


def _table_name(key: dg.AssetKey) -> str:
    return "__".join(key.path)


def partition_column(definition_metadata: dict[str, Any]) -> str:
    """The asset's ``partition_expr`` (a column of its data), else the synthetic ``_partition``."""
    expr = definition_metadata.get(PARTITION_EXPR)
    if expr is None:
        return PARTITION_COLUMN
    if not isinstance(expr, str) or not expr.isidentifier():
        raise dg.DagsterInvalidDefinitionError(
            f"metadata {PARTITION_EXPR!r} must name one column of the asset's data, got {expr!r}")
    return expr


class _Observed:
    """A reader passed through while counting its rows and keeping its first rows for the preview."""

    def __init__(self, reader: pa.RecordBatchReader, column: str = PARTITION_COLUMN) -> None:
        self.schema = reader.schema
        self.rows = 0
        self.head: list[pa.RecordBatch] = []
        self.errors = {name: 0 for name in reader.schema.names if is_error_column(name)}
        self.by_partition: dict[str, Counter[str]] = defaultdict(Counter)
        """Per partition (a single-run backfill writes several): rows and rows with each error column."""
        self._column = column
        self._split = column in reader.schema.names
        self._source = reader

    def reader(self) -> pa.RecordBatchReader:
        def batches() -> Iterator[pa.RecordBatch]:
            with self._source:
                for batch in self._source:
                    if self.rows < PREVIEW_ROWS:
                        self.head.append(batch.slice(0, PREVIEW_ROWS - self.rows))
                    self.rows += batch.num_rows
                    for name in self.errors:
                        self.errors[name] += batch.num_rows - batch.column(name).null_count
                    if self._split:
                        self._count_partitions(batch)
                    yield batch

        return pa.RecordBatchReader.from_batches(self.schema, batches())

    def _count_partitions(self, batch: pa.RecordBatch) -> None:
        import pyarrow.compute as pc  # ~30-80 ms to import (it wraps ~290 kernels): only where a batch is split

        keys = batch.column(self._column)
        for item in pc.value_counts(keys).to_pylist():
            self.by_partition[str(item["values"])]["rows"] += item["counts"]
        for name in self.errors:
            failed = pc.filter(keys, pc.is_valid(batch.column(name)))
            for item in pc.value_counts(failed).to_pylist():
                self.by_partition[str(item["values"])][name] += item["counts"]

    def preview(self) -> pa.Table:
        return pa.Table.from_batches(self.head, schema=self.schema)


class ArrowIOManager(dg.ConfigurableIOManager):
    """Base for the backends: ``root`` is a local folder or an object-store URI."""

    root: str = Field(description="Folder or object-store URI (s3://, gs://, az://) under which tables live")
    storage_options: dict[str, str] = Field(
        default_factory=dict, description="Object-store options and credentials, passed to the backend")

    @abstractmethod
    def store(self, key: dg.AssetKey, definition_metadata: dict[str, Any], run_id: str | None = None
              ) -> TableStore:
        """The asset's table (``run_id``: the writing run, for stores that make commits idempotent)."""

    def handle_output(self, context: dg.OutputContext, obj: pa.Table | pa.RecordBatchReader) -> None:
        if not isinstance(obj, (pa.Table, pa.RecordBatchReader)):
            raise dg.DagsterInvariantViolationError(
                f"{type(self).__name__} stores pyarrow.Table or pyarrow.RecordBatchReader; asset "
                f"{context.asset_key.to_user_string()} returned {type(obj).__name__}")
        reader = as_reader(obj)
        partitions = list(context.asset_partition_keys) if context.has_asset_partitions else None
        store = self.store(context.asset_key, dict(context.definition_metadata or {}), context.run_id)
        column = store.partition_column
        if partitions is not None and column not in reader.schema.names:
            if len(partitions) != 1:
                reader.close()
                raise dg.DagsterInvariantViolationError(
                    f"asset {context.asset_key.to_user_string()} covers {len(partitions)} partitions but its "
                    f"output has no {column!r} column to tell them apart")
            reader = stream_with_partition(reader, partitions[0], column)
        observed = _Observed(reader, column)
        result = store.write(observed.reader(), partitions)
        metadata: dict[str, Any] = {**table_metadata(observed.preview(), observed.rows),
                                    "table_uri": dg.MetadataValue.path(result.uri),  # Dagster's standard keys too:
                                    "dagster/uri": dg.MetadataValue.path(result.uri),
                                    "dagster/table_name": _table_name(context.asset_key)}
        for name, count in observed.errors.items():  # rows with an error or skip reason in each *_error column
            metadata[f"rows_with_{name}"] = count
        if result.version is not None:
            metadata["table_version"] = result.version
        if partitions is not None and len(partitions) > 1:
            # A single-run backfill: the counts go to each partition's own materialization, not the range's total.
            counted = {k: metadata.pop(k) for k in list(metadata) if k == ROW_COUNT or k.startswith("rows_with_")}
            for partition in partitions:
                counts = observed.by_partition.get(partition, Counter())
                own = {name: counts[name[len("rows_with_"):]] for name in counted if name != ROW_COUNT}
                context.step_context.add_asset_metadata({ROW_COUNT: counts["rows"], **own},
                                                        asset_key=context.asset_key, partition_key=partition)
        context.add_output_metadata(metadata)

    def load_input(self, context: dg.InputContext) -> pa.Table | pa.RecordBatchReader:
        key = context.asset_key
        partitions = list(context.asset_partition_keys) if context.has_asset_partitions else None
        metadata = dict(context.upstream_output.definition_metadata or {}) if context.upstream_output else {}
        store = self.store(key, metadata)
        columns = (context.definition_metadata or {}).get(COLUMNS)
        if wants_stream(context):
            return store.read_stream(partitions, columns=columns)
        return store.read(partitions, columns=columns)


def wants_stream(context: dg.InputContext) -> bool:
    """Whether the input is annotated ``pyarrow.RecordBatchReader`` (else it gets a ``pyarrow.Table``)."""
    kind = context.dagster_type.typing_type if context.dagster_type is not None else None
    return isinstance(kind, type) and issubclass(kind, pa.RecordBatchReader)


class ParquetIOManager(ArrowIOManager):
    """One Parquet file per partition under ``root/<asset>/``, written batch by batch to a temp file, then
    renamed into place."""

    def store(self, key: dg.AssetKey, definition_metadata: dict[str, Any], run_id: str | None = None
              ) -> TableStore:
        return ParquetStore(f"{self.root.rstrip('/')}/{_table_name(key)}", self.storage_options or None,
                            partition_column=partition_column(definition_metadata))


class DeltaIOManager(ArrowIOManager):
    """One Delta table per asset; partitions replaced by predicate overwrite, or MERGEd on the asset's
    ``ai_assets/merge_on`` metadata (key columns; with ``ai_assets/merge_delete_missing``, rows of the partition
    no longer in the source are deleted)."""

    def store(self, key: dg.AssetKey, definition_metadata: dict[str, Any], run_id: str | None = None
              ) -> TableStore:
        merge_on = definition_metadata.get(MERGE_ON)
        return DeltaStore(f"{self.root.rstrip('/')}/{_table_name(key)}", self.storage_options or None,
                          merge_on=list(merge_on) if merge_on else None,
                          delete_missing=bool(definition_metadata.get(MERGE_DELETE_MISSING, False)),
                          partition_column=partition_column(definition_metadata))


class LanceDBIOManager(ArrowIOManager):
    """One LanceDB table per asset; partitions replaced in one versioned commit; an ANN index past a size, kept
    up to date as partitions are added."""

    index_after_rows: int | None = Field(
        default=None, description="Build a cosine vector index once the table has this many rows (None: never)")
    reindex_after_rows: int = Field(
        default=10_000, description="Fold new rows into the index once this many are not in it")
    full_text_index: bool = Field(
        default=True, description="Give an embedding asset's text column a full-text index (hybrid search)")

    def store(self, key: dg.AssetKey, definition_metadata: dict[str, Any], run_id: str | None = None
              ) -> TableStore:
        return LanceStore(self.root, _table_name(key), vector_column=definition_metadata.get(VECTOR_COLUMN),
                          text_column=definition_metadata.get(TEXT_COLUMN) if self.full_text_index else None,
                          index_after_rows=self.index_after_rows, reindex_after_rows=self.reindex_after_rows,
                          storage_options=self.storage_options or None,
                          partition_column=partition_column(definition_metadata))
