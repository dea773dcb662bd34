"""Prompt templates over several columns: ``"Review of {product}: {text}"`` renders one string per row."""

from __future__ import annotations

import string
from dataclasses import dataclass

import pyarrow as pa

from ai_assets.runtime.errors import ConfigError


@dataclass(frozen=True)
class Template:
    """A ``str.format`` template whose fields are column names. ``{{`` and ``}}`` escape braces."""

    text: str

    @property
    def columns(self) -> tuple[str, ...]:
        names = []
        for _, field, spec, conversion in string.Formatter().parse(self.text):
            if field is None:
                continue
            if not field or (not field.isidentifier() and field.strip() != field):
                raise ConfigError(f"template {self.text!r}: every field must name a column, got {{{field}}}")
            if conversion or spec:
                raise ConfigError(f"template {self.text!r}: format specs are not supported in {{{field}}}")
            names.append(field)
        return tuple(dict.fromkeys(names))

    def render(self, table: pa.Table) -> tuple[list[str | None], list[str | None]]:
        """Per row: the rendered text, or None and the reason the row is not sent (a null or empty input)."""
        columns = self.columns
        missing = [c for c in columns if c not in table.column_names]
        if missing:
            raise ConfigError(f"template {self.text!r} names column(s) {missing} not in the table "
                              f"(columns: {table.column_names})")
        values = {c: table.column(c).to_pylist() for c in columns}
        texts: list[str | None] = []
        reasons: list[str | None] = []
        for row in range(table.num_rows):
            fields = {c: values[c][row] for c in columns}
            null = next((c for c, v in fields.items() if v is None), None)
            if null is not None:
                texts.append(None)
                reasons.append(f"skipped: column {null!r} is null")
                continue
            text = self.text.format_map(fields) if columns else self.text
            if not text.strip() or any(isinstance(v, str) and not v.strip() for v in fields.values()):
                texts.append(None)
                reasons.append("skipped: empty input")
                continue
            texts.append(text)
            reasons.append(None)
        return texts, reasons


def column_texts(table: pa.Table, column: str) -> tuple[list[str | None], list[str | None]]:
    """One text column, with the same null / empty rules as a template."""
    return Template("{" + column + "}").render(table)
