"""Ingest: Parquet / CSV / JSON / JSONL files, a glob of any files as (path, bytes, size) rows, or a partition of
an existing Delta or LanceDB table, as a stream of record batches.

Files are read block by block (Parquet row groups, CSV and JSONL blocks, a bounded number of bytes of files), so a
partition never has to fit in memory. Text is checked as it is read: a row with invalid UTF-8 fails the read,
naming the file and the row, or (``bad_rows="null"``) has the value nulled and the reason in ``ingest_error``. An
empty file is an empty partition (a quiet day is normal) unless ``min_rows`` asks for more.

Paths are templates: ``data/reviews/{partition}.jsonl`` or, for multi-partitions, ``data/{region}/{date}.csv``.
Values are inserted verbatim only after checking they cannot leave the template's folder.
"""

from __future__ import annotations

import io
import json
import string
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.json as pjson
import pyarrow.parquet as pq

from ai_assets.runtime.columns import conform
from ai_assets.runtime.errors import ConfigError

Format = Literal["parquet", "csv", "json", "jsonl", "files"]
BadRows = Literal["raise", "null"]
_BY_SUFFIX: dict[str, Format] = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".json": "json",
                                 ".jsonl": "jsonl", ".ndjson": "jsonl"}
FILES_SCHEMA = pa.schema([("path", pa.string()), ("bytes", pa.binary()), ("size", pa.int64())])
ERROR_COLUMN = "ingest_error"
BLOCK_BYTES = 4 * 1024 * 1024  # a CSV / JSONL block: larger ones cost memory and gain no speed


def resolve_path(template: str, fields: Mapping[str, str]) -> str:
    """Fill ``{partition}`` / ``{dimension}`` fields; a value with a path separator or ``..`` is refused."""
    used = {name for _, name, _, _ in string.Formatter().parse(template) if name}
    for name, value in fields.items():
        if name not in used:
            continue
        if "/" in value or "\\" in value or value in (".", "..") or "\x00" in value:
            raise ConfigError(f"partition value {value!r} for {{{name}}} cannot be used in a path")
    try:
        return template.format_map(dict(fields))
    except KeyError as exc:
        raise ConfigError(f"path {template!r} names {{{exc.args[0]}}}, but the partition has only "
                          f"{sorted(fields)}") from exc


def infer_format(path: str) -> Format:
    for suffix, fmt in _BY_SUFFIX.items():
        if path.lower().endswith(suffix):
            return fmt
    raise ConfigError(f"cannot tell the format of {path!r} from its suffix: pass format=")


def _is_glob(path: str) -> bool:
    return any(c in path for c in "*?[")


def read_source(path: str, *, format: Format | None = None, columns: Sequence[str] | None = None,
                limit: int | None = None, storage_options: Mapping[str, Any] | None = None,
                bad_rows: BadRows = "raise", min_rows: int = 0) -> pa.Table:
    """Every file matching ``path`` as one table (see ``stream_source``)."""
    return stream_source(path, format=format, columns=columns, limit=limit, storage_options=storage_options,
                         bad_rows=bad_rows, min_rows=min_rows).read_all()


def stream_source(path: str, *, format: Format | None = None, columns: Sequence[str] | None = None,
                  limit: int | None = None, storage_options: Mapping[str, Any] | None = None,
                  bad_rows: BadRows = "raise", min_rows: int = 0) -> pa.RecordBatchReader:
    """Every file matching ``path`` (a glob is fine), batch by batch; ``columns`` projects, ``limit`` caps rows,
    ``min_rows`` fails a source with fewer rows."""
    import fsspec

    fs, _ = fsspec.core.url_to_fs(path, **dict(storage_options or {}))
    matches = sorted(fs.glob(path)) if _is_glob(path) else ([path] if fs.exists(path) else [])
    if not matches:
        raise FileNotFoundError(f"no file matches {path!r}")
    fmt = format or ("files" if _is_glob(path) and not _has_data_suffix(path) else infer_format(path))
    files = [_File(fs, match, fs.unstrip_protocol(match) if "://" in path else match, fmt, columns, bad_rows)
             for match in matches]
    schemas = [f.schema() for f in files]
    known = [s for s in schemas if s is not None]
    schema = pa.unify_schemas(known, promote_options="permissive") if known else pa.schema([])
    if bad_rows == "null" and ERROR_COLUMN not in schema.names:
        schema = schema.append(pa.field(ERROR_COLUMN, pa.string()))

    def batches() -> Iterator[pa.RecordBatch]:
        for file in files:
            for batch in file.batches():
                if batch.num_rows:
                    yield conform(batch, schema)

    return bounded(pa.RecordBatchReader.from_batches(schema, batches()), limit, min_rows, path)


def bounded(reader: pa.RecordBatchReader, limit: int | None, min_rows: int, where: str) -> pa.RecordBatchReader:
    """``reader`` cut after ``limit`` rows, failing at its end with fewer than ``min_rows``."""
    if limit is None and not min_rows:
        return reader

    def batches() -> Iterator[pa.RecordBatch]:
        rows = 0
        for read in reader:
            batch = read.slice(0, limit - rows) if limit is not None and rows + read.num_rows > limit else read
            rows += batch.num_rows
            if batch.num_rows:
                yield batch
            if limit is not None and rows >= limit:
                break
        if rows < min_rows:
            raise ConfigError(f"{where}: {rows} row(s), fewer than min_rows={min_rows}")

    return pa.RecordBatchReader.from_batches(reader.schema, batches())


def _has_data_suffix(path: str) -> bool:
    return any(path.lower().endswith(s) for s in _BY_SUFFIX)


@dataclass
class _File:
    fs: Any
    path: str
    shown: str
    fmt: Format
    columns: Sequence[str] | None
    bad_rows: BadRows

    def schema(self) -> pa.Schema | None:
        """The file's schema (None for an empty file), read from its footer or first block."""
        if self.fmt == "files":
            return FILES_SCHEMA
        if self.fs.size(self.path) == 0:
            return None
        with self.fs.open(self.path, "rb") as handle:
            reader = self._reader(handle)
            schema = reader.schema if isinstance(reader, pa.RecordBatchReader) else reader.schema_arrow
        return self._project(schema)

    def _project(self, schema: pa.Schema) -> pa.Schema:
        if self.columns is None:
            return schema
        missing = [c for c in self.columns if c not in schema.names]
        if missing:
            raise ConfigError(f"{self.shown}: no column(s) {missing}; it has {schema.names}")
        return pa.schema([schema.field(c) for c in self.columns])

    def _reader(self, handle: Any) -> Any:
        try:
            if self.fmt == "parquet":
                return pq.ParquetFile(handle)
            if self.fmt in ("csv", "jsonl"):
                return text_blocks(handle, self.fmt, self.shown)
            records = json.load(handle)
            return pa.Table.from_pylist(records if isinstance(records, list) else [records]).to_reader()
        except (pa.ArrowInvalid, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{self.shown} is not valid {self.fmt}: {str(exc)[:200]}") from exc

    def batches(self) -> Iterator[pa.RecordBatch]:
        if self.fmt == "files":
            yield from self._file_batches()
            return
        if self.fs.size(self.path) == 0:
            return
        row = 0
        with self.fs.open(self.path, "rb") as handle:
            reader = self._reader(handle)
            source = reader.iter_batches(columns=self.columns) if isinstance(reader, pq.ParquetFile) else reader
            try:
                for read in source:
                    batch = read.select(list(self.columns)) if self.columns and self.fmt != "parquet" else read
                    yield self._checked(batch, row)
                    row += batch.num_rows
            except pa.ArrowInvalid as exc:
                raise ConfigError(f"{self.shown} is not valid {self.fmt} after row {row}: {str(exc)[:200]}") from exc

    def _checked(self, batch: pa.RecordBatch, first_row: int) -> pa.RecordBatch:
        """The batch with its text checked: invalid UTF-8 fails the read or, with bad_rows="null", is nulled."""
        try:
            batch.validate(full=True)
        except pa.ArrowInvalid:
            pass
        else:
            return batch if self.bad_rows == "raise" else batch.append_column(
                ERROR_COLUMN, pa.nulls(batch.num_rows, pa.string()))
        errors: list[str | None] = [None] * batch.num_rows
        arrays = list(batch.columns)
        for index, field in enumerate(batch.schema):
            if not (pa.types.is_string(field.type) or pa.types.is_large_string(field.type)):
                continue
            raw = batch.column(index).view(pa.binary() if pa.types.is_string(field.type) else pa.large_binary())
            values = raw.to_pylist()
            bad = [i for i, v in enumerate(values) if v is not None and not _utf8(v)]
            if not bad:
                continue
            if self.bad_rows == "raise":
                raise ConfigError(f"{self.shown}: row {first_row + bad[0] + 1}: column {field.name!r} is not valid "
                                  f"UTF-8 (ingest_asset(bad_rows='null') keeps the row with the value nulled)")
            for i in bad:
                errors[i] = f"column {field.name!r} is not valid UTF-8"
            nulled = [None if i in set(bad) else v for i, v in enumerate(values)]
            arrays[index] = pa.array(nulled, raw.type).view(field.type)
        return pa.RecordBatch.from_arrays([*arrays, pa.array(errors, pa.string())],
                                          schema=batch.schema.append(pa.field(ERROR_COLUMN, pa.string())))

    def _file_batches(self) -> Iterator[pa.RecordBatch]:
        with self.fs.open(self.path, "rb") as handle:
            data = handle.read()
        yield pa.record_batch([[self.shown], [data], [len(data)]], schema=FILES_SCHEMA)


def text_blocks(handle: Any, fmt: Literal["csv", "jsonl"], shown: str) -> pa.RecordBatchReader:
    """A CSV or JSONL file as batches of about ``BLOCK_BYTES``, each block cut at a record boundary and parsed on
    its own, with the types of the first block. (pyarrow's streaming readers keep memory in proportion to the file:
    +100 MB for a 1M-row JSONL file; blocks parsed apart stay flat.)"""
    header = handle.readline() if fmt == "csv" else b""
    blocks = _record_blocks(handle, quoted=fmt == "csv")
    first = next(blocks, None)
    if first is None:
        raise pa.ArrowInvalid(f"Empty {fmt.upper()} file")
    table = _parse(header + first, fmt, None)
    schema = pa.schema([f.with_type(pa.string()) if pa.types.is_null(f.type) else f for f in table.schema])

    def batches() -> Iterator[pa.RecordBatch]:
        yield from _conform_table(table, schema).to_batches()
        for block in blocks:
            try:
                part = _parse(header + block, fmt, schema)
            except pa.ArrowInvalid as exc:
                raise ConfigError(f"{shown}: a record does not fit the types of the file's first "
                                  f"{BLOCK_BYTES // 2**20} MB ({str(exc)[:160]}); list the columns to read with "
                                  "columns=") from exc
            yield from _conform_table(part, schema).to_batches()

    return pa.RecordBatchReader.from_batches(schema, batches())


def _parse(data: bytes, fmt: str, schema: pa.Schema | None) -> pa.Table:
    source = io.BytesIO(data)
    if fmt == "csv":
        types = {f.name: f.type for f in schema} if schema is not None else None
        # Text is read unchecked and checked by ``_checked`` with the row it is in: with the check on, pyarrow
        # silently types a column holding invalid UTF-8 as binary, and b'...' reprs were sent as prompts.
        return pcsv.read_csv(source, convert_options=pcsv.ConvertOptions(column_types=types, check_utf8=False))
    options = pjson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error") if schema else None
    return pjson.read_json(source, parse_options=options)


def _conform_table(table: pa.Table, schema: pa.Schema) -> pa.Table:
    return pa.Table.from_batches([conform(b, schema) for b in table.to_batches()], schema=schema)


def _record_blocks(handle: Any, *, quoted: bool) -> Iterator[bytes]:
    """Blocks of about ``BLOCK_BYTES`` ending at a line break outside quotes (for CSV: an even count of ``"``)."""
    parity = 0
    while True:
        block = handle.read(BLOCK_BYTES)
        if not block:
            return
        block += handle.readline()
        if quoted:
            parity = (parity + block.count(b'"')) % 2
            while parity:  # the block ends inside a quoted value: read on to the record's end
                line = handle.readline()
                if not line:
                    break
                block += line
                parity = (parity + line.count(b'"')) % 2
        yield block


def _utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
