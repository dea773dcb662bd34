"""Ingest: read Parquet / CSV / JSON / JSONL files, or a glob of any files as (path, bytes, size) rows.

Paths are templates: ``data/reviews/{partition}.jsonl`` or, for multi-partitions, ``data/{region}/{date}.csv``.
Values are inserted verbatim only after checking they cannot leave the template's folder.
"""

from __future__ import annotations

import io
import json
import string
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import fsspec
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.json as pjson
import pyarrow.parquet as pq

from ai_assets.runtime.errors import ConfigError

Format = Literal["parquet", "csv", "json", "jsonl", "files"]
_BY_SUFFIX: dict[str, Format] = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".json": "json",
                                 ".jsonl": "jsonl", ".ndjson": "jsonl"}
FILES_SCHEMA = pa.schema([("path", pa.string()), ("bytes", pa.binary()), ("size", pa.int64())])


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


def read_source(path: str, *, format: Format | None = None, columns: Sequence[str] | None = None,
                limit: int | None = None, storage_options: Mapping[str, Any] | None = None) -> pa.Table:
    """Every file matching ``path`` (a glob is fine), concatenated; ``columns`` projects, ``limit`` caps rows."""
    fs, _ = fsspec.core.url_to_fs(path, **dict(storage_options or {}))
    matches = sorted(fs.glob(path)) if any(c in path for c in "*?[") else ([path] if fs.exists(path) else [])
    if not matches:
        raise FileNotFoundError(f"no file matches {path!r}")
    fmt = format or ("files" if any(c in path for c in "*?[") and not _has_data_suffix(path)
                     else infer_format(path))
    tables = []
    rows = 0
    for match in matches:
        if limit is not None and rows >= limit:
            break
        table = _read_one(fs, match, fmt, fs.unstrip_protocol(match) if "://" in path else match)
        if columns is not None:
            missing = [c for c in columns if c not in table.column_names]
            if missing:
                raise ConfigError(f"{match}: no column(s) {missing}; it has {table.column_names}")
            table = table.select(list(columns))
        tables.append(table)
        rows += table.num_rows
    table = pa.concat_tables(tables, promote_options="permissive")
    return table.slice(0, limit) if limit is not None else table


def _has_data_suffix(path: str) -> bool:
    return any(path.lower().endswith(s) for s in _BY_SUFFIX)


def _read_one(fs: Any, path: str, fmt: Format, shown: str) -> pa.Table:
    with fs.open(path, "rb") as handle:
        data = handle.read()
    try:
        if fmt == "files":
            return pa.table([[shown], [data], [len(data)]], schema=FILES_SCHEMA)
        if fmt == "parquet":
            return pq.read_table(io.BytesIO(data))
        if fmt == "csv":
            return pcsv.read_csv(io.BytesIO(data))
        if fmt == "jsonl":
            return pjson.read_json(io.BytesIO(data))
        records = json.loads(data)
        return pa.Table.from_pylist(records if isinstance(records, list) else [records])
    except (pa.ArrowInvalid, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{shown} is not valid {fmt}: {str(exc)[:200]}") from exc
