"""IO managers for Arrow tables: one base resolves partitions and records metadata; backends only build a store.

Every backend writes exactly the partitions of the run (one, or a range in a single-run backfill), leaves the
others untouched, and loads one partition, a range, or everything (for an unpartitioned downstream asset).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import dagster as dg
import pyarrow as pa
from pydantic import Field

from ai_assets.dagster.metadata import table_metadata
from ai_assets.storage.base import PARTITION_COLUMN, TableStore, with_partition
from ai_assets.storage.delta import DeltaStore
from ai_assets.storage.lance import LanceStore
from ai_assets.storage.parquet import ParquetStore

MERGE_ON = "ai_assets/merge_on"
VECTOR_COLUMN = "ai_assets/vector_column"


def _table_name(key: dg.AssetKey) -> str:
    return "__".join(key.path)


class ArrowIOManager(dg.ConfigurableIOManager):
    """Base for the backends: ``root`` is a local folder or an object-store URI."""

    root: str = Field(description="Folder or object-store URI (s3://, gs://, az://) under which tables live")
    storage_options: dict[str, str] = Field(
        default_factory=dict, description="Object-store options and credentials, passed to the backend")

    @abstractmethod
    def store(self, key: dg.AssetKey, definition_metadata: dict[str, Any]) -> TableStore: ...

    def handle_output(self, context: dg.OutputContext, obj: pa.Table) -> None:
        if not isinstance(obj, pa.Table):
            raise dg.DagsterInvariantViolationError(
                f"{type(self).__name__} stores pyarrow.Table; asset {context.asset_key.to_user_string()} "
                f"returned {type(obj).__name__}")
        partitions = list(context.asset_partition_keys) if context.has_asset_partitions else None
        if partitions is not None and PARTITION_COLUMN not in obj.column_names:
            if len(partitions) != 1:
                raise dg.DagsterInvariantViolationError(
                    f"asset {context.asset_key.to_user_string()} covers {len(partitions)} partitions but its "
                    f"table has no {PARTITION_COLUMN!r} column to tell them apart")
            obj = with_partition(obj, partitions[0])
        store = self.store(context.asset_key, dict(context.definition_metadata or {}))
        result = store.write(obj, partitions)
        metadata: dict[str, Any] = {**table_metadata(obj), "table_uri": dg.MetadataValue.path(result.uri)}
        if result.version is not None:
            metadata["table_version"] = result.version
        context.add_output_metadata(metadata)

    def load_input(self, context: dg.InputContext) -> pa.Table:
        key = context.asset_key
        partitions = list(context.asset_partition_keys) if context.has_asset_partitions else None
        metadata = dict(context.upstream_output.definition_metadata or {}) if context.upstream_output else {}
        return self.store(key, metadata).read(partitions)


class ParquetIOManager(ArrowIOManager):
    """One Parquet file per partition under ``root/<asset>/``, written atomically (temp file, then rename)."""

    def store(self, key: dg.AssetKey, definition_metadata: dict[str, Any]) -> TableStore:
        return ParquetStore(f"{self.root.rstrip('/')}/{_table_name(key)}", self.storage_options or None)


class DeltaIOManager(ArrowIOManager):
    """One Delta table per asset; partitions replaced by predicate overwrite, or MERGEd on the asset's
    ``ai_assets/merge_on`` metadata (key columns)."""

    def store(self, key: dg.AssetKey, definition_metadata: dict[str, Any]) -> TableStore:
        merge_on = definition_metadata.get(MERGE_ON)
        return DeltaStore(f"{self.root.rstrip('/')}/{_table_name(key)}", self.storage_options or None,
                          merge_on=list(merge_on) if merge_on else None)


class LanceDBIOManager(ArrowIOManager):
    """One LanceDB table per asset; partitions replaced in one versioned commit; an ANN index past a size."""

    index_after_rows: int | None = Field(
        default=None, description="Build a cosine vector index once the table has this many rows (None: never)")

    def store(self, key: dg.AssetKey, definition_metadata: dict[str, Any]) -> TableStore:
        return LanceStore(self.root, _table_name(key), vector_column=definition_metadata.get(VECTOR_COLUMN),
                          index_after_rows=self.index_after_rows, storage_options=self.storage_options or None)
