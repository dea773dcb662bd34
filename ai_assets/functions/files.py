"""Text from files: PDF (pypdf), HTML (the standard library's parser) and plain text, with page / character
limits. A file that cannot be read becomes a per-row error."""

from __future__ import annotations

import io
from html.parser import HTMLParser
from typing import Literal

import pyarrow as pa

from ai_assets.runtime.columns import Rows, error_column, set_columns
from ai_assets.runtime.errors import MissingExtraError, bounded

Kind = Literal["pdf", "html", "text"]
_SKIP = {"script", "style", "head", "noscript", "template"}


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self._skipping += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP and self._skipping:
            self._skipping -= 1

    def handle_data(self, data: str) -> None:
        if not self._skipping and data.strip():
            self.parts.append(data.strip())


def sniff(data: bytes, path: str | None = None) -> Kind:
    if data.startswith(b"%PDF") or (path or "").lower().endswith(".pdf"):
        return "pdf"
    head = data[:512].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")) or (path or "").lower().endswith((".html", ".htm")):
        return "html"
    return "text"


def extract_text_from(data: bytes, kind: Kind, max_pages: int, max_chars: int) -> str:
    if kind == "pdf":
        try:
            from pypdf import PdfReader
        except ImportError as exc:
            raise MissingExtraError("pypdf", "files") from exc
        reader = PdfReader(io.BytesIO(data))
        pages = []
        for page in reader.pages[:max_pages]:
            pages.append(page.extract_text() or "")
            if sum(map(len, pages)) >= max_chars:
                break
        text = "\n".join(pages)
    elif kind == "html":
        parser = _Text()
        parser.feed(data.decode("utf-8", errors="replace"))
        text = "\n".join(parser.parts)
    else:
        text = data.decode("utf-8", errors="replace")
    return text[:max_chars]


def extract_text(table: Rows, column: str, *, path_column: str | None = "path", output_column: str = "text",
                 max_pages: int = 50, max_chars: int = 100_000) -> Rows:
    """Add ``output_column`` with the text of the file bytes in ``column`` (kind sniffed from content / path)."""
    paths = table.column(path_column).to_pylist() if path_column and path_column in table.column_names \
        else [None] * table.num_rows
    texts: list[str | None] = []
    errors: list[str | None] = []
    for row, (data, path) in enumerate(zip(table.column(column).to_pylist(), paths, strict=True)):
        try:
            if data is None:
                raise ValueError(f"column {column!r} is null")
            texts.append(extract_text_from(data, sniff(data, path), max_pages, max_chars))
            errors.append(None)
        except Exception as exc:  # pypdf raises many types for damaged files; each is this row's error
            texts.append(None)
            errors.append(bounded(f"row {row} ({path or 'bytes'}): {type(exc).__name__}: {exc}"))
    return set_columns(table, {output_column: pa.array(texts, pa.string()),
                                error_column(output_column): pa.array(errors, pa.string())})
