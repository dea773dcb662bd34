"""Prompt templates over several columns: ``"Review of {product}: {text}"`` renders one string per row."""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, TypeAlias

import pyarrow as pa

from ai_assets.providers.messages import AUDIO_FORMATS, AudioPart, FilePart, ImagePart, TextPart, image_mime
from ai_assets.providers.messages import Part as MessagePart
from ai_assets.runtime.columns import error_column
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
            if not field or field.strip() != field or any(c in field for c in ".[]"):
                raise ConfigError(f"template {self.text!r}: every field must name a column, got {{{field}}} "
                                  "(attribute and index lookups such as {a.b} or {a[0]} are not supported: derive "
                                  "a column with preprocess(derive=...))")
            if conversion or spec:
                raise ConfigError(f"template {self.text!r}: format specs are not supported in {{{field}}}")
            names.append(field)
        return tuple(dict.fromkeys(names))

    def head(self) -> Template:
        """The template up to its last field: what rows that share the earlier fields' values have in common at
        the start of their prompt (``"{doc}\\nQ: {q}"`` -> ``"{doc}\\nQ: "``; a template of one field -> its
        static text)."""
        self.columns  # noqa: B018  (validates)
        pieces = list(string.Formatter().parse(self.text))
        last = max((i for i, piece in enumerate(pieces) if piece[1] is not None), default=len(pieces))
        out = []
        for at, (literal, name, _, _) in enumerate(pieces[:last + 1]):
            out.append(literal.replace("{", "{{").replace("}", "}}"))
            if name is not None and at < last:
                out.append("{" + name + "}")
        return Template("".join(out))

    def render(self, table: Rows) -> tuple[list[str | None], list[Skip | None]]:
        """Per row: the rendered text, or None and the reason the row is not sent (a null or empty input)."""
        columns = self.columns
        missing = [c for c in columns if c not in table.column_names]
        if missing:
            raise ConfigError(f"template {self.text!r} names column(s) {missing} not in the table "
                              f"(columns: {table.column_names})")
        binary = [c for c in columns if _binary(table.schema.field(c).type)]
        if binary:  # str(b"...") is a Python repr: thousands of tokens of escapes, paid for and meaningless
            raise ConfigError(f"template {self.text!r}: column(s) {binary} hold bytes, which a template would send as "
                              "their Python repr; send them as ImageColumn(...) or FileColumn(...) parts, or "
                              "read their text first (extract_text)")
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
    """A message part: the encoded image bytes in ``column``, sent as a data URL to a vision model; with
    ``as_url=True`` the column holds image URLs, passed to the model as they are (nothing is downloaded)."""

    column: str
    detail: str = "auto"
    as_url: bool = False

    def part(self, value: Any, row: int) -> ImagePart:
        if self.as_url:
            return ImagePart(url=str(value), detail=self.detail)
        return ImagePart(data=value, mime=image_mime(value), detail=self.detail)


@dataclass(frozen=True)
class FileColumn:
    """A message part: the file bytes in ``column`` (a PDF, a text file...) sent as a file content part, or, for
    WAV and MP3 audio, as an ``input_audio`` part (the chat models that hear take audio that way). The MIME type
    is sniffed from the content (or given as ``mime``); the name comes from ``filename_column`` (e.g. the ``path``
    of ingested files). A file over ``max_bytes`` is not sent (its row gets the reason)."""

    column: str
    filename_column: str | None = None
    mime: str | None = None
    max_bytes: int = 32 * 1024 * 1024

    def part(self, value: bytes, name: str | None) -> FilePart | AudioPart:
        mime = self.mime or file_mime(value)
        if mime in AUDIO_FORMATS:
            return AudioPart(value, mime)
        filename = PurePosixPath(name).name if name else f"{self.column}{_EXTENSIONS.get(mime, '')}"
        return FilePart(value, mime, filename)


_AUDIO = {b"ID3": ("audio/mpeg", ".mp3"), b"fLaC": ("audio/flac", ".flac"), b"OggS": ("audio/ogg", ".ogg"),
          b"\x1aE\xdf\xa3": ("audio/webm", ".webm")}


def audio_type(data: bytes) -> tuple[str, str]:
    """The MIME type and file extension of audio bytes, from their magic number (MP3 frames and M4A too)."""
    if data.startswith(b"RIFF") and data[8:12] == b"WAVE":  # RIFF holds WebP images too
        return "audio/wav", ".wav"
    for magic, kind in _AUDIO.items():
        if data.startswith(magic):
            return kind
    if data[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return "audio/mpeg", ".mp3"
    if data[4:8] == b"ftyp":
        return "audio/mp4", ".m4a"
    return "application/octet-stream", ".wav"


_EXTENSIONS = {"application/pdf": ".pdf", "text/plain": ".txt", "text/html": ".html", "application/json": ".json"}


def file_mime(data: bytes) -> str:
    """The MIME type of file bytes, from their magic number (images too); text when it decodes as UTF-8."""
    if data.startswith(b"%PDF"):
        return "application/pdf"
    audio, _ = audio_type(data)
    if audio != "application/octet-stream":
        return audio
    image = image_mime(data)
    if image != "application/octet-stream":
        return image
    head = data[:512].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):
        return "text/html"
    try:
        data[:4096].decode("utf-8")
    except UnicodeDecodeError:
        return "application/octet-stream"
    return "text/plain"


Part = str | ImageColumn | FileColumn
Content = str | tuple[MessagePart, ...]
"""A user message's content: one plain text, or its parts (text, images, files, audio) in template order."""
Rendered = tuple[list[str | None], list[Skip | None]]


def check_output_column(output_column: str, reads: Sequence[str], where: str) -> None:
    """Refuse an output column that would overwrite a column the step reads (``output_column="text"`` over
    ``"{text}"``): the input would be replaced silently by the answers."""
    for name in (output_column, error_column(output_column)):
        if name in reads:
            raise ConfigError(f"{where}: output_column {output_column!r} would replace the input column {name!r} "
                              "it reads; choose another output_column")


def check_template(parts: str | Sequence[Part]) -> tuple[str, ...]:
    """The columns a template reads; a ``ConfigError`` naming the problem for a template that cannot render
    (a stray brace, ``{a.b}``, a format spec, a part of the wrong type). For definition time: the factory and the
    component refuse what ``prompt`` would refuse at run time."""
    if isinstance(parts, str):
        return Template(parts).columns
    names: list[str] = []
    for part in parts:
        if isinstance(part, str):
            names.extend(Template(part).columns)
        elif isinstance(part, ImageColumn | FileColumn):
            names.append(part.column)
        else:
            raise ConfigError(f"a template part must be text, ImageColumn or FileColumn, got {type(part).__name__}")
    return tuple(dict.fromkeys(names))


def prefix_texts(table: Rows, parts: str | Sequence[Part]) -> list[str | None]:
    """Per row: the text its prompt starts with before the template's last field (None: not known or skipped).
    Rows with the same prefix text share a prompt-cache prefix; for a list of parts, the text parts before the
    first image or file."""
    if isinstance(parts, str):
        return Template(parts).head().render(table)[0]
    leading = []
    for part in parts:
        if not isinstance(part, str):
            break
        leading.append(part)
    if not leading:
        return [None] * table.num_rows
    rendered = [Template(p).render(table)[0] for p in leading]
    return [None if any(r[row] is None for r in rendered) else "\n".join(str(r[row]) for r in rendered)
            for row in range(table.num_rows)]


def _binary(kind: pa.DataType) -> bool:
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return bool(pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_binary_view(kind)
                or pa.types.is_fixed_size_binary(kind))


def _check_part_column(part: ImageColumn | FileColumn, kind: pa.DataType) -> None:
    """Refuse, before any row is sent, a column of the wrong type for its part: file and image parts carry the
    bytes (base64 in the request), an image URL part carries text."""
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    text = pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)
    binary = _binary(kind)
    wants_text = isinstance(part, ImageColumn) and part.as_url
    if pa.types.is_null(kind) or (text if wants_text else binary):
        return
    named = f"{type(part).__name__}({part.column!r}{', as_url=True' if wants_text else ''})"
    if wants_text:
        raise ConfigError(f"{named}: column {part.column!r} holds {kind}; image URLs are text (string): drop "
                          "as_url=True to send image bytes")
    raise ConfigError(f"{named}: column {part.column!r} holds {kind}, not file bytes (binary): put text in the "
                      f"prompt with a template part such as '{{{part.column}}}', or read files into bytes first "
                      "(ingest_asset(format='files') or download())")


def render_content(table: Rows, parts: str | Sequence[Part]) -> tuple[list[Content | None], list[Skip | None]]:
    """Per row: a user message's content (a string for a ``str`` template, neutral parts for a list of parts: one
    part per template part, in order) or None and why it is not sent."""
    if isinstance(parts, str):
        texts, skipped = Template(parts).render(table)
        return list(texts), skipped
    rendered: list[Rendered | ImageColumn | FileColumn] = []
    columns: dict[str, list[Any]] = {}
    for part in parts:
        if isinstance(part, (ImageColumn, FileColumn)):
            needed = [part.column] + ([part.filename_column] if isinstance(part, FileColumn) and
                                      part.filename_column else [])
            for name in needed:
                if name not in table.column_names:
                    raise ConfigError(f"{type(part).__name__} names column {name!r}, not in the table "
                                      f"(columns: {table.column_names})")
                columns[name] = table.column(name).to_pylist()
            _check_part_column(part, table.schema.field(part.column).type)
            rendered.append(part)
        else:
            rendered.append(Template(part).render(table))
    contents: list[Content | None] = []
    reasons: list[Skip | None] = []
    for row in range(table.num_rows):
        content: list[MessagePart] = []
        reason: Skip | None = None
        for piece in rendered:
            if isinstance(piece, ImageColumn | FileColumn):
                value = columns[piece.column][row]
                if not value:
                    kind = "image column" if isinstance(piece, ImageColumn) else "file column"
                    reason = Skip(SkipKind.NULL, piece.column, kind)
                    break
                if isinstance(piece, FileColumn):
                    if len(value) > piece.max_bytes:
                        reason = Skip(SkipKind.TOO_LARGE, piece.column, f"{len(value):,} bytes, over "
                                                                        f"max_bytes={piece.max_bytes:,}")
                        break
                    filename = columns[piece.filename_column][row] if piece.filename_column else None
                    content.append(piece.part(value, filename))
                else:
                    content.append(piece.part(value, row))
            else:
                texts, why = piece
                if texts[row] is None:
                    reason = why[row]
                    break
                content.append(TextPart(str(texts[row])))
        contents.append(None if reason else tuple(content))
        reasons.append(reason)
    return contents, reasons
