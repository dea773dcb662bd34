"""What an ingest step reads, in one value: files at a path or a partition of an existing table, with the same
``columns``, ``limit`` and ``min_rows`` for both. The factory (``ingest_asset``) and the YAML component build one
and call ``read``; a setting that does not apply to the chosen source is refused rather than ignored."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from ai_assets.functions.ingest import BadRows, Format, bounded, resolve_path, stream_source
from ai_assets.functions.table_sources import DeltaSource, IcebergSource, LanceSource
from ai_assets.runtime.errors import ConfigError

TableSource = DeltaSource | LanceSource | IcebergSource


@dataclass(frozen=True)
class IngestSpec:
    """``path`` (a template with ``{partition}`` / one field per dimension; a glob is fine) or ``source`` (a Delta
    or LanceDB table); ``columns`` projects (pushed down to the table or the files), ``limit`` caps the rows of a
    partition, ``min_rows`` fails a partition with fewer. ``format``, ``bad_rows`` and ``storage_options`` are
    about files: a table source has its own types and its own ``storage_options``."""

    path: str | None = None
    source: TableSource | None = None
    format: Format | None = None
    columns: Sequence[str] | None = None
    limit: int | None = None
    storage_options: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)
    bad_rows: BadRows = "raise"
    min_rows: int = 0

    def __post_init__(self) -> None:
        if (self.path is None) == (self.source is None):
            raise ConfigError("ingest: give exactly one of path= and source=")
        if self.limit is not None and self.limit < 0:
            raise ConfigError(f"ingest: limit={self.limit} must be >= 0")
        if self.min_rows < 0:
            raise ConfigError(f"ingest: min_rows={self.min_rows} must be >= 0")
        if self.source is None:
            return
        for name, value, default in (("format", self.format, None), ("bad_rows", self.bad_rows, "raise"),
                                     ("storage_options", self.storage_options, None)):
            if value != default:
                raise ConfigError(f"ingest: {name}={value!r} applies to files; a table source has its own "
                                  f"{'storage_options' if name == 'storage_options' else 'types'} (set them on "
                                  f"{type(self.source).__name__})")
        if self.columns is not None and self.source.columns is not None \
                and list(self.columns) != list(self.source.columns):
            raise ConfigError(f"ingest: columns={list(self.columns)} differs from the source's columns="
                              f"{list(self.source.columns)}; give them once")

    def _table_source(self) -> TableSource:
        assert self.source is not None
        if self.columns is not None and self.source.columns is None:
            return dataclasses.replace(self.source, columns=list(self.columns))
        return self.source

    def read(self, fields: Mapping[str, str] | None = None) -> pa.RecordBatchReader:
        """One partition's rows (``fields``: the partition's ``{partition}`` or dimensions), as a stream."""
        if self.source is None:
            assert self.path is not None
            target = resolve_path(self.path, fields) if fields is not None else self.path
            return stream_source(target, format=self.format, columns=self.columns, limit=self.limit,
                                 storage_options=self.storage_options, bad_rows=self.bad_rows,
                                 min_rows=self.min_rows)
        return bounded(self._table_source().read(fields), self.limit, self.min_rows, self.describe(fields))

    def describe(self, fields: Mapping[str, str] | None = None) -> str:
        if isinstance(self.source, DeltaSource):
            return f"the Delta table {self.source.uri}" + (
                f" (partition column {self.source.partition_column})" if self.source.partition_column else "")
        if isinstance(self.source, LanceSource):
            return f"the LanceDB table {self.source.table} in {self.source.uri}"
        if isinstance(self.source, IcebergSource):
            return f"the Iceberg table {self.source.table}"
        assert self.path is not None
        shown = resolve_path(self.path, fields) if fields is not None else self.path
        return f"files at {shown}" if self.format == "files" else shown

    def fingerprint_fields(self) -> dict[str, Any]:
        """What a materialization's result depends on (not ``storage_options``: credentials and endpoints)."""
        return {"source": repr(self.source) if self.source is not None else self.path, "format": self.format,
                "columns": list(self.columns) if self.columns is not None else None, "limit": self.limit,
                "bad_rows": self.bad_rows, "min_rows": self.min_rows}

