"""Preprocess: drop rows with null or blank fields, extract with regular expressions, derive text columns."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from ai_assets.functions.templates import Template
from ai_assets.runtime.columns import set_columns
from ai_assets.runtime.errors import ConfigError


@dataclass(frozen=True)
class Extract:
    """``pattern``'s capture ``group`` from ``column`` (null where it does not match)."""

    column: str
    pattern: str
    group: int = 1


def _need(table: pa.Table, columns: Sequence[str], step: str) -> None:
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise ConfigError(f"{step}: column(s) {missing} not in the table (columns: {table.column_names})")


def drop_incomplete(table: pa.Table, columns: Sequence[str], *, blank_is_missing: bool = True) -> pa.Table:
    """Rows where every one of ``columns`` is non-null (and, for strings, not blank)."""
    _need(table, columns, "drop_incomplete")
    keep = pa.array([True] * table.num_rows)
    for name in columns:
        column = table.column(name)
        ok = pc.is_valid(column)
        if blank_is_missing and pa.types.is_string(column.type):
            ok = pc.and_(ok, pc.fill_null(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(column)), 0), False))
        keep = pc.and_(keep, ok)
    return table.filter(keep)


def regexp_extract(table: pa.Table, output: str, spec: Extract) -> pa.Table:
    _need(table, [spec.column], f"regexp_extract into {output!r}")
    matches = pc.extract_regex(table.column(spec.column), pattern=_named(spec.pattern, spec.group))
    values = pc.struct_field(matches, [0])
    values = pc.if_else(pc.is_valid(matches), values, pa.scalar(None, pa.string()))
    return set_columns(table, {output: values})


def derive_text(table: pa.Table, output: str, template: str) -> pa.Table:
    """A column rendered from a template over other columns (null where an input is null or empty)."""
    texts, _ = Template(template).render(table)
    return set_columns(table, {output: pa.array(texts, pa.string())})


def preprocess(table: pa.Table, *, drop_missing: Sequence[str] = (), extract: Mapping[str, Extract] | None = None,
               derive: Mapping[str, str] | None = None) -> pa.Table:
    """The steps in order: drop incomplete rows, extract, derive."""
    if drop_missing:
        table = drop_incomplete(table, drop_missing)
    for output, spec in (extract or {}).items():
        table = regexp_extract(table, output, spec)
    for output, template in (derive or {}).items():
        table = derive_text(table, output, template)
    return table


def _named(pattern: str, group: int) -> str:
    """Arrow's extract_regex needs named groups: wrap the wanted group's match by position."""
    import re

    compiled = re.compile(pattern)
    if group > compiled.groups:
        raise ConfigError(f"pattern {pattern!r} has {compiled.groups} group(s), asked for group {group}")
    if group == 0:
        return f"(?P<value>{pattern})"
    index = [0]

    def rename(match: re.Match[str]) -> str:
        index[0] += 1
        return "(?P<value>" if index[0] == group else "(?:"

    return re.sub(r"(?<!\\)\((?!\?)", rename, pattern)

