"""Text from files: PDF (pypdfium2, in a child process: ``pdf_workers``), HTML (the standard library's parser) and
plain text, with page / character limits, one row per file or one row per page. A file that cannot be read
becomes a per-row error; a text that was cut says so in ``<output_column>_truncated``.

PDFs are read with pypdfium2 (PDFium; Apache-2.0/BSD): on 60 generated 6-page PDFs it extracted the text in 0.26 s,
pymupdf (AGPL) in 0.30 s and pypdf in 0.92 s, one run on this project's machine."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any, Literal

import pyarrow as pa

from ai_assets.functions.pdf_workers import OCR_SCALE, PdfLimits, PdfText, read_pdf
from ai_assets.runtime.columns import Rows, error_column, fan_out, set_columns
from ai_assets.runtime.errors import ConfigError, MissingExtraError, bounded

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


By = Literal["file", "page"]
PAGE_NUMBER = "page_number"
TRUNCATED_SUFFIX = "_truncated"
OCR_MAX_PIXELS = 25_000_000
"""The most pixels a page is rendered at for OCR: an A1 sheet at 180 dpi; a larger page is rendered at fewer dpi."""


def truncated_column(output_column: str) -> str:
    """The column saying what of a row's text was left out (pages, characters) or read at less than full
    resolution; null when the text is whole."""
    return output_column + TRUNCATED_SUFFIX


@dataclass(frozen=True)
class _Settings:
    by: By
    max_pages: int
    max_chars: int
    ocr: bool
    ocr_max_pixels: int
    max_memory_mb: int
    page_timeout_s: float

    def pdf(self) -> PdfLimits:
        return PdfLimits(max_pages=self.max_pages, page_chars=self.max_chars, ocr=self.ocr,
                         stop_after_chars=self.max_chars if self.by == "file" else None,
                         max_pixels=self.ocr_max_pixels, max_memory_mb=self.max_memory_mb,
                         page_timeout_s=self.page_timeout_s)


def extract_text(table: Rows, column: str, *, by: By = "file", path_column: str | None = "path",
                 output_column: str = "text", max_pages: int = 50, max_chars: int = 100_000,
                 ocr: bool = False, ocr_max_pixels: int = OCR_MAX_PIXELS, max_memory_mb: int = 2048,
                 page_timeout_s: float = 60.0) -> Rows:
    """Add ``output_column`` with the text of the file bytes in ``column`` (kind sniffed from content / path),
    ``<output_column>_error`` and ``<output_column>_truncated``: null when the text is whole, else what was left
    out (``"read 50 of 212 pages (max_pages=50)"``, ``"cut at max_chars=100,000 characters"``, a page read by OCR
    at fewer dpi), ``"; "``-separated.

    ``by="page"`` gives one row per page instead: ``page_number`` (1-based), the page's text (at most
    ``max_chars``) and the file's other columns, without the bytes; pages left unread are noted on the file's last
    page row. A file that cannot be read is one row with a null page number and the reason in
    ``<output_column>_error``.

    PDFs are read in a child process capped at ``max_memory_mb`` of address space, with ``page_timeout_s`` for
    each page: a decompression bomb or a hung reader is that file's error, not the step's end.
    ``ocr=True`` (the ``ocr`` extra) reads PDF pages that have no text layer, such as scans, with RapidOCR, each
    rendered at 180 dpi or at fewer when that is over ``ocr_max_pixels``."""
    if by not in ("file", "page"):
        raise ConfigError(f"extract_text: by must be 'file' or 'page', got {by!r}")
    for name, value in (("max_pages", max_pages), ("max_chars", max_chars), ("ocr_max_pixels", ocr_max_pixels),
                        ("max_memory_mb", max_memory_mb), ("page_timeout_s", page_timeout_s)):
        whole = name != "page_timeout_s"  # counts are whole numbers: 2.5 pages failed every longer file's row
        kinds = (int,) if whole else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds) or not value > 0 or value == float("inf"):
            raise ConfigError(f"extract_text: {name} must be {'a whole number' if whole else 'a finite number'} "
                              f"> 0, got {value!r}")
    _check_bytes(table, column)
    settings = _Settings(by, max_pages, max_chars, ocr, ocr_max_pixels, max_memory_mb, page_timeout_s)
    made = (column, PAGE_NUMBER, output_column, error_column(output_column), truncated_column(output_column))
    parents: list[int] = []
    numbers: list[int | None] = []
    texts: list[str | None] = []
    notes: list[str | None] = []
    errors: list[str | None] = []
    for row, (data, path) in enumerate(zip(table.column(column).to_pylist(), _paths(table, path_column),
                                           strict=True)):
        try:
            if data is None:
                raise ValueError(f"column {column!r} is null")
            read = _read(data, sniff(data, path), settings)
        except MissingExtraError:
            raise
        except Exception as exc:  # PDF readers raise many types for damaged files; each is this row's error
            parents.append(row)
            numbers.append(None)
            texts.append(None)
            notes.append(None)
            errors.append(bounded(f"row {row} ({path or 'bytes'}): {type(exc).__name__}: {exc}"))
            continue
        for number, (text, note) in enumerate(_rows(read, settings), start=1):
            parents.append(row)
            numbers.append(number)
            texts.append(text)
            notes.append(note)
            errors.append(None)
    columns = {output_column: pa.array(texts, pa.string()), error_column(output_column): pa.array(errors, pa.string()),
               truncated_column(output_column): pa.array(notes, pa.string())}
    if by == "file":
        return set_columns(table, columns)
    kept = [name for name in table.column_names if name not in made]
    return fan_out(table, kept, parents, {PAGE_NUMBER: pa.array(numbers, pa.int32()), **columns})


def _check_bytes(table: Rows, column: str) -> None:
    if column not in table.column_names:
        raise ConfigError(f"extract_text: column {column!r} is not in the table (columns: {table.column_names})")
    kind = table.schema.field(column).type
    if not (pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_binary_view(kind)
            or pa.types.is_fixed_size_binary(kind) or pa.types.is_null(kind)):
        raise ConfigError(f"extract_text: column {column!r} holds {kind}, not file bytes (binary): read files "
                          "with ingest_asset(format='files') or download(), or chunk a text column directly")


def _read(data: bytes, kind: Kind, settings: _Settings) -> PdfText:
    """The pages of a file: a PDF's (in a child process); HTML and plain text are one page."""
    if kind == "pdf":
        return read_pdf(data, settings.pdf())
    if kind == "html":
        parser = _Text()
        parser.feed(data.decode("utf-8", errors="replace"))
        text = "\n".join(parser.parts)
    else:  # a character is at most 4 UTF-8 bytes, so this prefix holds max_chars and tells whether there is more
        text = data[:4 * settings.max_chars + 4].decode("utf-8", errors="replace")
    return PdfText(page_count=1, texts=[text[:settings.max_chars]], lengths=[len(text)], scales=[None])


def _rows(read: PdfText, settings: _Settings) -> Iterator[tuple[str, str | None]]:
    """The rows a file gives, as (text, what was left out): one for the file, or one per page."""
    unread = ""
    if len(read.texts) < read.page_count:
        why = (f" (max_pages={settings.max_pages})" if len(read.texts) == settings.max_pages
               else " (max_chars reached)")
        unread = f"read {len(read.texts)} of {read.page_count} pages{why}"
    cut = f"cut at max_chars={settings.max_chars:,} characters"
    ocr = [f"page {i + 1} read by OCR at {read.dpi(i)} dpi, not {round(72 * OCR_SCALE)} "
           f"(ocr_max_pixels={settings.ocr_max_pixels:,})" if read.dpi(i) is not None else "" for i in
           range(len(read.texts))]
    if settings.by == "file":
        text = "\n".join(read.texts)
        whole = len(text) <= settings.max_chars and read.lengths == [len(t) for t in read.texts]
        yield text[:settings.max_chars], _join(["" if whole else cut, unread, *ocr])
        return
    for index, text in enumerate(read.texts):
        last = index == len(read.texts) - 1
        yield text, _join([cut if read.lengths[index] > len(text) else "", ocr[index], unread if last else ""])


def _join(notes: list[str]) -> str | None:
    return "; ".join(note for note in notes if note) or None


def _paths(table: Rows, path_column: str | None) -> list[Any]:
    if path_column and path_column in table.column_names:
        paths: list[Any] = table.column(path_column).to_pylist()
        return paths
    return [None] * table.num_rows
