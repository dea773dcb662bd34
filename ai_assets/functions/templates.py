"""Prompt templates over several columns: ``"Review of {product}: {text}"`` renders one string per row."""

from __future__ import annotations

import base64
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

import pyarrow as pa

from ai_assets.functions.images import image_mime
from ai_assets.runtime.errors import ConfigError, Skip, SkipKind

Rows: TypeAlias = "pa.Table | pa.RecordBatch"


@dataclass(frozen=True)
class Template:
    """A ``str.format`` template whose fields are column names. ``{{`` and ``}}`` escape braces."""

    text: str

    @property
    def columns(self) -> tuple[str, ...]:
        names = []
        try:
            parsed = list(string.Formatter().parse(self.text))
        except ValueError as exc:
            raise ConfigError(f"template {self.text!r}: {exc}; write a literal brace as {{{{ or }}}}") from exc
        for _, field, spec, conversion in parsed:
            if field is None:
                continue
            if not field or (not field.isidentifier() and field.strip() != field):
                raise ConfigError(f"template {self.text!r}: every field must name a column, got {{{field}}}")
            if conversion or spec:
                raise ConfigError(f"template {self.text!r}: format specs are not supported in {{{field}}}")
            names.append(field)
        return tuple(dict.fromkeys(names))

    def render(self, table: Rows) -> tuple[list[str | None], list[Skip | None]]:
        """Per row: the rendered text, or None and the reason the row is not sent (a null or empty input)."""
        columns = self.columns
        missing = [c for c in columns if c not in table.column_names]
        if missing:
            raise ConfigError(f"template {self.text!r} names column(s) {missing} not in the table "
                              f"(columns: {table.column_names})")
        values = {c: table.column(c).to_pylist() for c in columns}
        texts: list[str | None] = []
        reasons: list[Skip | None] = []
        for row in range(table.num_rows):
            fields = {c: values[c][row] for c in columns}
            null = next((c for c, v in fields.items() if v is None), None)
            if null is not None:
                texts.append(None)
                reasons.append(Skip(SkipKind.NULL, null))
                continue
            text = self.text.format_map(fields) if columns else self.text
            if not text.strip() or any(isinstance(v, str) and not v.strip() for v in fields.values()):
                texts.append(None)
                reasons.append(Skip(SkipKind.EMPTY))
                continue
            texts.append(text)
            reasons.append(None)
        return texts, reasons


def column_texts(table: Rows, column: str) -> tuple[list[str | None], list[Skip | None]]:
    """One text column, with the same null / empty rules as a template; the column must hold strings."""
    if column not in table.column_names:
        raise ConfigError(f"column {column!r} is not in the table (columns: {table.column_names})")
    kind = table.schema.field(column).type
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)):
        raise ConfigError(f"column {column!r} holds {kind}, not text: pick a string column, or derive one "
                          f"(preprocess derive= or a template)")
    return Template("{" + column + "}").render(table)


@dataclass(frozen=True)
class ImageColumn:
    """A message part: the encoded image bytes in ``column``, sent as a data URL to a vision model."""

    column: str
    detail: str = "auto"


Part = str | ImageColumn
Content = str | list[dict[str, object]]


def render_content(table: Rows, parts: str | Sequence[Part]) -> tuple[list[Content | None], list[Skip | None]]:
    """Per row: a user message's content (a string for text alone, parts for text and images) or None and why."""
    if isinstance(parts, str):
        texts, skipped = Template(parts).render(table)
        return list(texts), skipped
    rendered: list[tuple[list[str | None], list[Skip | None]] | ImageColumn] = []
    for part in parts:
        if isinstance(part, ImageColumn):
            if part.column not in table.column_names:
                raise ConfigError(f"image part names column {part.column!r}, not in the table "
                                  f"(columns: {table.column_names})")
            rendered.append(part)
        else:
            rendered.append(Template(part).render(table))
    images = {p.column: table.column(p.column).to_pylist() for p in rendered if isinstance(p, ImageColumn)}
    contents: list[Content | None] = []
    reasons: list[Skip | None] = []
    for row in range(table.num_rows):
        content: list[dict[str, object]] = []
        reason: Skip | None = None
        for piece in rendered:
            if isinstance(piece, ImageColumn):
                data = images[piece.column][row]
                if not data:
                    reason = Skip(SkipKind.NULL, piece.column, "image column")
                    break
                url = f"data:{image_mime(data)};base64,{base64.b64encode(data).decode()}"
                content.append({"type": "image_url", "image_url": {"url": url, "detail": piece.detail}})
            else:
                texts, why = piece
                if texts[row] is None:
                    reason = why[row]
                    break
                content.append({"type": "text", "text": texts[row]})
        contents.append(None if reason else content)
        reasons.append(reason)
    return contents, reasons
