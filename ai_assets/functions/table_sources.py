"""Existing tables as sources: one partition of a Delta, LanceDB or Iceberg table, read as a stream.

A partition is the rows whose ``partition_column`` equals the partition key (converted to the column's type, so a
``date`` or ``int`` column works with Dagster's string keys); for multi-partitions, one column per dimension. Only
``columns`` are read, and only the matching rows (the filter is pushed down to the table's files).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from ai_assets.runtime.errors import ConfigError, MissingExtraError
from ai_assets.storage.base import sql_value
from ai_assets.storage.delta import DeltaStore

READ_BATCH_ROWS = 65_536


def _columns_for(partition_column: str | Mapping[str, str] | None, fields: Mapping[str, str] | None
                 ) -> dict[str, str]:
    """``{table column: key}`` for a partition's fields (``partition`` or one per dimension)."""
    if partition_column is None or fields is None:
        return {}
    if isinstance(partition_column, str):
        return {partition_column: fields["partition"]}
    missing = sorted(set(partition_column) - set(fields))
    if missing:
        raise ConfigError(f"partition_column names dimension(s) {missing}; the partition has {sorted(fields)}")
    return {column: fields[dimension] for dimension, column in partition_column.items()}


def _typed(key: str, column: str, schema: pa.Schema) -> pa.Scalar:
    if column not in schema.names:
        raise ConfigError(f"partition column {column!r} is not in the source table (columns: {schema.names})")
    kind = schema.field(column).type
    try:
        return pa.scalar(key).cast(kind)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ConfigError(f"partition key {key!r} cannot be read as column {column!r}'s type {kind}") from exc


def _check_columns(columns: Sequence[str] | None, schema: pa.Schema, where: str) -> None:
    missing = [c for c in columns or () if c not in schema.names]
    if missing:
        raise ConfigError(f"{where}: no column(s) {missing}; it has {schema.names}")




@dataclass(frozen=True)
class DeltaSource:
    """A Delta table to ingest from (``partition_column``: the column, or ``{dimension: column}``)."""

    uri: str
    partition_column: str | Mapping[str, str] | None = None
    columns: Sequence[str] | None = None
    storage_options: Mapping[str, str] | None = field(default=None, compare=False)

    def read(self, fields: Mapping[str, str] | None = None) -> pa.RecordBatchReader:
        store = DeltaStore(self.uri, dict(self.storage_options or {}) or None)
        table = store._table()
        if table is None:
            raise FileNotFoundError(f"no Delta table at {self.uri}")
        schema = table.schema().to_arrow()
        schema = pa.schema(schema) if not isinstance(schema, pa.Schema) else schema
        _check_columns(self.columns, schema, self.uri)
        import pyarrow.compute as pc  # loaded with deltalake's pyarrow.dataset anyway; not when definitions load

        condition = None
        for column, key in _columns_for(self.partition_column, fields).items():
            test = pc.field(column) == _typed(key, column, schema)
            condition = test if condition is None else condition & test
        return store.read_stream(None, columns=self.columns, where=condition)


@dataclass(frozen=True)
class LanceSource:
    """A LanceDB table to ingest from: ``uri`` is the database folder, ``table`` the table's name."""

    uri: str
    table: str
    partition_column: str | Mapping[str, str] | None = None
    columns: Sequence[str] | None = None
    storage_options: Mapping[str, str] | None = field(default=None, compare=False)

    def read(self, fields: Mapping[str, str] | None = None) -> pa.RecordBatchReader:
        try:
            import lancedb
        except ImportError as exc:
            raise MissingExtraError("lancedb", "lancedb") from exc
        handle: Any = lancedb.connect(self.uri, storage_options=dict(self.storage_options or {}) or None
                                      ).open_table(self.table)
        schema = handle.schema
        _check_columns(self.columns, schema, f"{self.uri}/{self.table}")
        conditions = []
        for column, key in _columns_for(self.partition_column, fields).items():
            conditions.append(f"{column} = {sql_value(_typed(key, column, schema))}")
        query = handle.search()
        if conditions:
            query = query.where(" AND ".join(conditions))
        if self.columns:
            query = query.select(list(self.columns))
        reader: pa.RecordBatchReader = query.limit(None).to_batches(READ_BATCH_ROWS)
        return reader


@dataclass(frozen=True)
class IcebergSource:
    """An Iceberg table to ingest from: ``catalog`` holds the catalog's properties (``{"type": "sql", "uri":
    "sqlite:///catalog.db", "warehouse": "file:///lake"}`` or a REST catalog's), ``table`` is
    ``namespace.table``; ``catalog_name`` the catalog's name (a SQL catalog keeps several apart by it). The
    partition filter is pushed down to Iceberg's manifests (whole files are skipped)."""

    catalog: Mapping[str, str] = field(compare=False, repr=False)
    table: str
    partition_column: str | Mapping[str, str] | None = None
    columns: Sequence[str] | None = None
    catalog_name: str = "ai_assets"

    def read(self, fields: Mapping[str, str] | None = None) -> pa.RecordBatchReader:
        from ai_assets.storage.iceberg import IcebergStore
        from ai_assets.storage.iceberg_catalog import open_catalog

        store = IcebergStore(open_catalog(dict(self.catalog), self.catalog_name), self.table)
        handle = store._table()
        if handle is None:  # the catalog's URI may hold a password: named, not shown
            raise FileNotFoundError(f"no Iceberg table {self.table} in the catalog {self.catalog_name!r}")
        from pyiceberg.io.pyarrow import schema_to_pyarrow

        schema = schema_to_pyarrow(handle.schema(), include_field_ids=False)
        _check_columns(self.columns, schema, self.table)
        equal = {column: _typed(key, column, schema).as_py()
                 for column, key in _columns_for(self.partition_column, fields).items()}
        return store.read_where(equal, self.columns)
