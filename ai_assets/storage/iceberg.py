"""Apache Iceberg (pyiceberg): one table per asset in a SQL or REST catalog; a partition replaced in one commit.

A write streams the rows into data files batch by batch (``CHUNK_BYTES`` of Arrow at a time, split by the table's
identity partitioning on the partition column), then makes ONE catalog commit: a transaction that deletes the
partitions' old rows and appends the new files. Iceberg's commit is an atomic swap of the table's metadata pointer
(optimistic concurrency: the catalog refuses a commit whose base is no longer current), so a reader sees the old
partition or the new one, never a mix; files written by a write killed before its commit are referenced by no
snapshot (orphans for Iceberg's ``remove_orphan_files`` maintenance).

Idempotence: with a ``run_id`` every snapshot of the commit carries ``ai-assets.commit-key`` (a digest of table,
partitions and run id) in its summary. Before each commit attempt the table is re-read and a snapshot with that key
means the commit already landed (a retry after a lost response, or the same run writing again): it is not applied
twice.

Retry layering: pyiceberg itself retries a commit that lost a race (``CommitFailedException``), rebasing it on the
new metadata, up to the table's ``commit.retry.num-retries`` (default 4). This module retries the whole transaction
(re-read the table, check the key, re-plan the delete, append the same data files) at most ``COMMIT_ATTEMPTS``
times when pyiceberg gives up, when a concurrent commit fails its validation, or when the outcome is unknown
(``CommitStateUnknownException`` from a REST catalog). The data files are written once.

Vectors: Iceberg has no fixed-size list; a ``fixed_size_list<float32>[d]`` column is stored as ``list<float>`` with
the table property ``ai-assets.vector-size.<column> = d`` and read back as ``fixed_size_list<float32>[d]``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import pyarrow as pa

from ai_assets.runtime.errors import AIAssetsError, ConfigError
from ai_assets.storage.base import (
    PARTITION_COLUMN,
    Data,
    WriteResult,
    as_reader,
    check_columns,
    map_reader,
    partition_keys,
)
from ai_assets.storage.delta import as_lists
from ai_assets.storage.iceberg_catalog import catalog_failure, open_catalog, unreachable

KEY_PROPERTY = "ai-assets.commit-key"
RUN_PROPERTY = "ai-assets.run-id"
ROWS_PROPERTY = "ai-assets.rows"
VECTOR_PROPERTY = "ai-assets.vector-size."
COMMIT_ATTEMPTS = 4
CHUNK_BYTES = 64 * 1024 * 1024
"""Arrow bytes gathered before data files are written: bounds a write's memory whatever the partition's size."""
DEFAULT_NAMESPACE = "ai_assets"
TABLE_PROPERTIES = {"write.object-storage.enabled": "true", "write.object-storage.partitioned-paths": "false"}
before_commit: Callable[[], None] | None = None
"""Called after a write's data files are written and before its commit (tests stop a writer there)."""


class CommitError(AIAssetsError):
    """A write's data files were written but no commit landed within ``COMMIT_ATTEMPTS`` attempts."""


def commit_key(identifier: str, partitions: Sequence[str] | None, run_id: str) -> str:
    """The idempotence key of one write: the same table, partitions and run give the same key."""
    text = json.dumps([identifier, sorted(partitions) if partitions is not None else None, run_id])
    return hashlib.sha256(text.encode()).hexdigest()[:40]


def vector_sizes(schema: pa.Schema) -> dict[str, int]:
    return {f.name: f.type.list_size for f in schema if pa.types.is_fixed_size_list(f.type)}


class IcebergStore:
    """``catalog``: a pyiceberg ``Catalog`` or its properties; ``identifier``: ``namespace.table``."""

    def __init__(self, catalog: Any, identifier: str, *, partition_column: str = PARTITION_COLUMN,
                 run_id: str | None = None, commit_attempts: int = COMMIT_ATTEMPTS) -> None:
        if "." not in identifier:
            identifier = f"{DEFAULT_NAMESPACE}.{identifier}"
        self.catalog = open_catalog(catalog)
        self.identifier = identifier
        self.uri = f"iceberg://{self.catalog.name}/{identifier}"
        self.partition_column = partition_column
        self.run_id = run_id
        self.commit_attempts = max(1, commit_attempts)

    def _table(self) -> Any:
        from pyiceberg.exceptions import NoSuchTableError

        try:
            return self.catalog.load_table(self.identifier)
        except NoSuchTableError:
            return None

    def write(self, data: Data, partitions: Sequence[str] | None) -> WriteResult:
        try:
            return self._write(data, partitions)
        except Exception as exc:
            if not unreachable(exc):
                raise
            failure = catalog_failure(self.catalog.name, getattr(self.catalog, "properties", {}), exc,
                                      f"unreachable while writing {self.identifier}; nothing was committed")
        raise failure

    def _write(self, data: Data, partitions: Sequence[str] | None) -> WriteResult:
        source = as_reader(data)
        vectors = vector_sizes(source.schema)
        reader = as_lists(source)
        with reader:
            if partitions is not None and self.partition_column not in reader.schema.names:
                raise ConfigError(f"{self.identifier}: a partitioned write needs the column "
                                  f"{self.partition_column!r}; columns: {reader.schema.names}")
            key = commit_key(self.identifier, partitions, self.run_id) if self.run_id else None
            table = self._table()
            typed = _concrete(reader, table)
            table = table or self._create(typed.schema, partitioned=partitions is not None)
            if key is not None and (done := _landed(table, key)) is not None:
                return self._result(table, done)  # this run's commit is already in: nothing is applied twice
            table = self._evolve(table, typed.schema, vectors)
            files, rows = self._write_files(table, typed, set(partitions) if partitions is not None else None)
        if before_commit is not None:
            before_commit()
        return self._commit(files, partitions, key, rows)

    def _create(self, schema: pa.Schema, *, partitioned: bool) -> Any:
        """Create the table (identity-partitioned on the partition column, so replacing a partition drops whole
        files); a concurrent creator's table is used, not replaced.

        Data file paths leave the partition value out (pyiceberg's object-store layout, ``partitioned-paths``
        off): a key may be any length and any characters, and ``<column>=<key>`` as a directory name fails past
        255 bytes (ENAMETOOLONG). The Iceberg spec keeps each file's partition in its manifest entry, not its
        path, so readers lose nothing."""
        from pyiceberg.exceptions import CommitFailedException, TableAlreadyExistsError

        namespace = self.identifier.rsplit(".", 1)[0]
        self.catalog.create_namespace_if_not_exists(namespace)
        try:
            txn = self.catalog.create_table_transaction(self.identifier, schema=schema, properties=TABLE_PROPERTIES)
            if partitioned:
                with txn.update_spec() as spec:
                    spec.add_identity(self.partition_column)
            txn.commit_transaction()
        except TableAlreadyExistsError:
            pass
        except CommitFailedException:  # created between the check and our commit: a SQL catalog says so this way
            if not self.catalog.table_exists(self.identifier):
                raise
        return self.catalog.load_table(self.identifier)

    def _evolve(self, table: Any, schema: pa.Schema, vectors: dict[str, int]) -> Any:
        """Add the data's new columns and record its vector sizes (a commit of its own, only when needed)."""
        from pyiceberg.exceptions import CommitFailedException, ValidationError
        from pyiceberg.io.pyarrow import schema_to_pyarrow

        for attempt in range(1, self.commit_attempts + 1):
            stored = schema_to_pyarrow(table.schema(), include_field_ids=False)
            # A new column, or a known one of another type: Iceberg's union by name adds the one, promotes the
            # other where the spec allows it (int -> long, float -> double, wider decimal; a narrower type is
            # written into the wider column as is) and refuses the rest.
            changed = [f.name for f in schema if f.name not in stored.names
                       or _plain(stored.field(f.name).type) != _plain(f.type)]
            new_sizes = {k: str(v) for k, v in vectors.items()
                         if table.properties.get(VECTOR_PROPERTY + k) != str(v)}
            if not changed and not new_sizes:
                return table
            try:
                with table.transaction() as txn:
                    if changed:
                        with txn.update_schema() as update:
                            update.union_by_name(schema)
                    if new_sizes:
                        txn.set_properties({VECTOR_PROPERTY + k: v for k, v in new_sizes.items()})
            except ValidationError as exc:
                raise ConfigError(f"Iceberg table {self.identifier}: the data's column(s) {changed} do not fit the "
                                  f"table's schema ({exc}); the Iceberg spec allows int -> long, float -> double "
                                  "and wider decimals only") from None
            except CommitFailedException:
                if attempt == self.commit_attempts:
                    raise
            table = self.catalog.load_table(self.identifier)
        return table

    def _write_files(self, table: Any, reader: pa.RecordBatchReader, allowed: set[str] | None
                     ) -> tuple[list[Any], int]:
        """Data files for every batch of ``reader``, ``CHUNK_BYTES`` of Arrow at a time."""
        from pyiceberg.io.pyarrow import _check_pyarrow_schema_compatible, _dataframe_to_data_files

        try:
            _check_pyarrow_schema_compatible(table.schema(), provided_schema=reader.schema,
                                             format_version=table.metadata.format_version)
        except ValueError as exc:
            raise ConfigError(f"Iceberg table {self.identifier}: the data does not fit the table's schema: "
                              f"{str(exc)[:2000]}") from None
        write_uuid, counter = uuid.uuid4(), itertools.count(0)
        files: list[Any] = []
        rows = 0

        def flush(chunk: list[pa.RecordBatch]) -> None:
            if chunk:
                files.extend(_dataframe_to_data_files(table_metadata=table.metadata, io=table.io,
                                                      df=pa.Table.from_batches(chunk, reader.schema),
                                                      write_uuid=write_uuid, counter=counter))

        chunk: list[pa.RecordBatch] = []
        size = 0
        for batch in reader:
            if allowed is not None and batch.num_rows:
                stray = partition_keys(batch, self.partition_column, first_row=rows) - allowed
                if stray:
                    raise ConfigError(f"{self.identifier}: rows of partition(s) {sorted(stray)} are not among this "
                                      f"write's partitions {sorted(allowed)}")
            rows += batch.num_rows
            chunk.append(batch)
            size += batch.nbytes
            if size >= CHUNK_BYTES:
                flush(chunk)
                chunk, size = [], 0
        flush(chunk)
        return files, rows

    def _filter(self, partitions: Sequence[str] | None) -> Any:
        from pyiceberg.expressions import AlwaysTrue

        if partitions is None:
            return AlwaysTrue()
        keys = list(partitions)
        return _predicate("EqualTo", self.partition_column, keys[0]) if len(keys) == 1 else \
            _predicate("In", self.partition_column, keys)

    def _commit(self, files: list[Any], partitions: Sequence[str] | None, key: str | None, rows: int
                ) -> WriteResult:
        """One transaction (delete the partitions' rows, append ``files``), retried as the module docstring says."""
        from pyiceberg.exceptions import CommitFailedException, CommitStateUnknownException, ValidationException

        properties = {ROWS_PROPERTY: str(rows)}
        if key is not None:
            properties |= {KEY_PROPERTY: key, RUN_PROPERTY: str(self.run_id)[:200]}
        last: Exception | None = None
        for attempt in range(1, self.commit_attempts + 1):
            table = self.catalog.load_table(self.identifier)
            if key is not None and (done := _landed(table, key)) is not None:
                return self._result(table, done)
            txn = table.transaction()
            with warnings.catch_warnings():  # an empty partition is not news
                warnings.filterwarnings("ignore", "Delete operation did not match any records", UserWarning)
                txn.delete(self._filter(partitions), snapshot_properties=properties)
            with txn.update_snapshot(snapshot_properties=properties).fast_append() as append:
                for file in files:
                    append.append_data_file(file)
            try:
                committed = txn.commit_transaction()
            except (CommitFailedException, ValidationException, CommitStateUnknownException) as exc:
                last = exc
                time.sleep(min(2.0, 0.05 * 2 ** attempt) * random.uniform(0.5, 1.0))
                continue
            snapshot = committed.current_snapshot()
            return WriteResult(self.uri, snapshot.sequence_number if snapshot else None, rows)
        raise CommitError(f"{self.identifier}: no commit landed after {self.commit_attempts} attempts "
                          f"(last: {type(last).__name__}: {last}); the written data files are unreferenced")

    def _result(self, table: Any, snapshot: Any) -> WriteResult:
        rows = snapshot.summary[ROWS_PROPERTY]
        return WriteResult(self.uri, snapshot.sequence_number, int(rows) if rows is not None else 0)

    def read(self, partitions: Sequence[str] | None = None, *, columns: Sequence[str] | None = None) -> pa.Table:
        with self.read_stream(partitions, columns=columns) as reader:
            return reader.read_all()

    def read_stream(self, partitions: Sequence[str] | None = None, *, columns: Sequence[str] | None = None
                    ) -> pa.RecordBatchReader:
        """Rows of ``partitions`` (all when None; partition by partition, in the order given), only ``columns``."""
        from pyiceberg.expressions import AlwaysTrue

        filters = [AlwaysTrue()] if partitions is None else \
            [_predicate("EqualTo", self.partition_column, k) for k in partitions]
        return self._scan(filters, columns)

    def read_where(self, equal: Mapping[str, object], columns: Sequence[str] | None = None) -> pa.RecordBatchReader:
        """Rows whose columns equal ``equal``'s values (pushed down to Iceberg's manifests and files)."""
        from pyiceberg.expressions import AlwaysTrue, And

        conditions = [_predicate("EqualTo", column, value) for column, value in equal.items()]
        condition = AlwaysTrue() if not conditions else conditions[0] if len(conditions) == 1 else And(*conditions)
        return self._scan([condition], columns)

    def _scan(self, filters: list[Any], columns: Sequence[str] | None) -> pa.RecordBatchReader:
        from pyiceberg.io.pyarrow import schema_to_pyarrow

        table = self._table()
        if table is None:
            raise FileNotFoundError(f"no Iceberg table {self.identifier} in catalog {self.catalog.name!r}")
        names = table.schema().column_names
        chosen = check_columns(columns, names, f"Iceberg table {self.identifier}")
        stored = schema_to_pyarrow(table.schema(), include_field_ids=False)
        sizes = {k[len(VECTOR_PROPERTY):]: int(v) for k, v in table.properties.items()
                 if k.startswith(VECTOR_PROPERTY)}
        fields = [_restored(f, sizes) for f in stored if chosen is None or f.name in chosen]
        schema = pa.schema(sorted(fields, key=lambda f: chosen.index(f.name)) if chosen is not None else fields)
        selected = tuple(schema.names) if chosen is not None else ("*",)

        def readers() -> Iterator[pa.RecordBatchReader]:
            for condition in filters:
                yield table.scan(row_filter=condition, selected_fields=selected).to_arrow_batch_reader()

        def batches() -> Iterator[pa.RecordBatch]:
            for reader in readers():
                with reader:
                    for batch in reader:
                        yield pa.RecordBatch.from_arrays(
                            [batch.column(n).cast(schema.field(n).type) for n in schema.names], schema=schema)

        return pa.RecordBatchReader.from_batches(schema, batches())

    def partitions(self) -> list[str]:
        table = self._table()
        if table is None or self.partition_column not in table.schema().column_names:
            return []
        values = table.scan(selected_fields=(self.partition_column,)).to_arrow().column(0)
        return sorted({str(v) for v in values.to_pylist() if v is not None})

    def commits(self, run_id: str, partitions: Sequence[str] | None) -> list[int]:
        """The commits (their append snapshots' ids) of the write of ``partitions`` by ``run_id``: one once it
        landed, none before."""
        from pyiceberg.table.snapshots import Operation

        table = self._table()
        key = commit_key(self.identifier, partitions, run_id)
        return [] if table is None else [s.snapshot_id for s in table.snapshots()
                                         if s.summary[KEY_PROPERTY] == key and s.summary.operation == Operation.APPEND]


def _predicate(kind: str, column: str, value: object) -> Any:
    """pyiceberg's ``EqualTo`` / ``In`` on ``column`` (its pydantic models hide their constructors from mypy)."""
    from pyiceberg import expressions

    build: Any = getattr(expressions, kind)
    return build(column, value)


def _landed(table: Any, key: str) -> Any:
    """The latest snapshot whose summary carries ``key``, or None."""
    found = None
    for snapshot in table.snapshots():
        if snapshot.summary is not None and snapshot.summary[KEY_PROPERTY] == key:
            found = snapshot
    return found


def _concrete(reader: pa.RecordBatchReader, table: Any) -> pa.RecordBatchReader:
    """``reader`` with its null-typed columns (all values null, no type: Iceberg v2 has no such type) given the
    table's type for the column, or ``string`` for a new one."""
    nulls = [f.name for f in reader.schema if pa.types.is_null(f.type)]
    if not nulls:
        return reader
    from pyiceberg.io.pyarrow import schema_to_pyarrow

    known = schema_to_pyarrow(table.schema(), include_field_ids=False) if table is not None else pa.schema([])
    schema = pa.schema([f.with_type(known.field(f.name).type if f.name in known.names else pa.string())
                        if f.name in nulls else f for f in reader.schema], metadata=reader.schema.metadata)
    return map_reader(reader, schema, lambda batch: batch.cast(schema))


def _restored(field: pa.Field, sizes: Mapping[str, int]) -> pa.Field:
    """A stored field as the Arrow type the other stores give: vectors fixed-size, the rest ``_plain``."""
    kind = field.type
    if (pa.types.is_list(kind) or pa.types.is_large_list(kind)) and field.name in sizes:
        return pa.field(field.name, pa.list_(pa.field("item", _plain(kind.value_type)), sizes[field.name]))
    return pa.field(field.name, _plain(kind))


def _plain(kind: pa.DataType) -> pa.DataType:
    """``kind`` with lists as ``list<item>`` and strings / binaries not large, at every depth (pyiceberg reads
    ``large_list<element>`` and ``large_string``; the Arrow schema written had ``list<item>`` and ``string``)."""
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return pa.list_(_plain(kind.value_type))
    if pa.types.is_struct(kind):
        return pa.struct([pa.field(f.name, _plain(f.type)) for f in kind])
    if pa.types.is_map(kind):
        return pa.map_(_plain(kind.key_type), _plain(kind.item_type))
    if pa.types.is_large_string(kind):
        return pa.string()
    if pa.types.is_large_binary(kind):
        return pa.binary()
    return kind
