"""What the asset checks measure, computed as rows stream by (no Dagster here: the Dagster layer only reports)."""

from __future__ import annotations

import json
import math
import random
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ai_assets.runtime.errors import ConfigError
from ai_assets.runtime.usage import Usage


def error_rate(usage: Usage) -> float:
    """Failed rows over rows that were meant to get a value (skipped rows do not count)."""
    return usage.errors / usage.attempted if usage.attempted else 0.0


def valid_share(usage: Usage) -> float:
    """Rows with a value (an answer that validated, sent now or read from the journal) over rows attempted."""
    return usage.answered / usage.attempted if usage.attempted else 1.0


@dataclass
class VectorStats:
    """Dimension, finiteness and all-zero vectors of a ``fixed_size_list<float32>`` column, batch by batch."""

    dimension: int | None = None
    vectors: int = 0
    all_finite: bool = True
    zero_vectors: int = 0
    non_finite_vectors: int = 0
    """Vectors with a NaN or an infinity: counted, and left out of the centroid (one would make it NaN)."""
    mixed_dimensions: bool = False
    unit_sum: np.ndarray | None = None
    """Sum of the unit-length usable vectors: their direction is the partition's centroid (for drift checks)."""
    usable_vectors: int = 0
    """Vectors in ``unit_sum``: finite, not all zero, of the column's one dimension."""

    def update(self, column: pa.Array | pa.ChunkedArray) -> None:
        chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
        for chunk in chunks:
            if not pa.types.is_fixed_size_list(chunk.type):
                self.mixed_dimensions = True
                continue
            dim = chunk.type.list_size
            if self.dimension is None:
                self.dimension = dim
            self.mixed_dimensions |= dim != self.dimension
            # The child values of every slot, null slots included (flatten() would drop them).
            raw = chunk.values.slice(chunk.offset * dim, len(chunk) * dim)
            flat = np.asarray(raw.to_numpy(zero_copy_only=False), dtype=np.float32)
            valid = np.asarray(chunk.is_valid().to_numpy(zero_copy_only=False))
            vectors = flat.reshape(-1, dim)[valid] if dim else flat.reshape(0, 0)
            finite = np.isfinite(vectors).all(axis=1) if dim else np.ones(len(vectors), dtype=bool)
            self.vectors += len(vectors)
            self.non_finite_vectors += int((~finite).sum())
            self.all_finite &= bool(finite.all())
            self.zero_vectors += int((np.abs(vectors).sum(axis=1) == 0).sum()) if vectors.size else 0
            usable = vectors[finite]
            norms = np.linalg.norm(usable.astype(np.float64), axis=1, keepdims=True)
            usable, norms = usable[norms[:, 0] > 0], norms[norms[:, 0] > 0]
            if len(usable) and dim == self.dimension:
                units = (usable / norms).sum(axis=0)
                self.unit_sum = units if self.unit_sum is None else self.unit_sum + units
                self.usable_vectors += len(usable)

    def centroid(self) -> list[float] | None:
        """The mean direction of the usable vectors (unit length), or None without any."""
        if self.unit_sum is None or self.mixed_dimensions:
            return None
        norm = float(np.linalg.norm(self.unit_sum))
        return [float(v) for v in self.unit_sum / norm] if norm > 0 and math.isfinite(norm) else None

    @property
    def passed(self) -> bool:
        return bool(self.dimension) and not self.mixed_dimensions and self.all_finite and self.zero_vectors == 0


def cosine_distance(a: list[float], b: list[float]) -> float:
    """1 - cos(a, b); 1.0 for vectors of different sizes or of zero length."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or not np.linalg.norm(x) or not np.linalg.norm(y):
        return 1.0
    return float(1.0 - x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))


def matches(answer: Any, expected: Any) -> bool:
    """Whether an answer agrees with a golden expectation: every field the expectation names (a dict: the fields
    it gives, nested), text compared without case and surrounding space, numbers by value.

    Text is compared as Unicode's canonical caseless match (The Unicode Standard, section 3.13, D145:
    ``NFD(casefold(NFD(x)))``), so "café" written precomposed or with a combining accent is the same text and
    "Straße" equals "STRASSE"; Turkish dotted/dotless i is not folded (that is a language tailoring, not the
    default). A boolean is not a number (RFC 8259 section 3: ``true``, ``false`` and numbers are distinct values),
    so ``true`` never matches ``1``; text never matches a number (``"1"`` is not ``1``)."""
    if isinstance(expected, dict):
        return isinstance(answer, dict) and all(matches(answer.get(k), v) for k, v in expected.items())
    if isinstance(expected, str):
        return isinstance(answer, str) and _caseless(answer.strip()) == _caseless(expected.strip())
    if isinstance(expected, list):
        return isinstance(answer, list) and len(answer) == len(expected) and all(
            matches(a, e) for a, e in zip(answer, expected, strict=True))
    if isinstance(expected, bool) or isinstance(answer, bool):
        return isinstance(answer, bool) and isinstance(expected, bool) and answer == expected
    return bool(answer == expected)


def _caseless(text: str) -> str:
    return unicodedata.normalize("NFD", unicodedata.normalize("NFD", text).casefold())


@dataclass
class Reservoir:
    """A uniform sample of at most ``size`` items from a stream of unknown length, reproducible by ``seed``."""

    size: int
    seed: str = ""
    items: list[Any] = field(default_factory=list)
    seen: int = 0

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    def add(self, item: Any) -> None:
        self.seen += 1
        if len(self.items) < self.size:
            self.items.append(item)
            return
        slot = self._random.randrange(self.seen)
        if slot < self.size:
            self.items[slot] = item


MAX_GOLDEN_LINE_BYTES = 1 << 20
"""The longest golden line read (1 MiB): a longer one is an error naming it, never a partial parse."""


@dataclass(frozen=True)
class GoldenRow:
    """One golden example: where it is (``line 3`` of a JSON Lines file, ``row 3`` of a table), the inputs the
    prompt renders, and what its answer must match (never None: a row that expects nothing is an error)."""

    where: str
    inputs: dict[str, Any]
    expected: Any


def read_golden_lines(path: Path, expected_column: str, max_rows: int) -> list[GoldenRow]:
    """A JSON Lines golden file (jsonlines.org: one UTF-8 JSON object a line, blank lines skipped), line by line,
    each line at most ``MAX_GOLDEN_LINE_BYTES`` and at most ``max_rows`` lines; every problem names the line."""
    rows: list[GoldenRow] = []
    with path.open("rb") as handle:
        for number, raw in enumerate(iter(lambda: handle.readline(MAX_GOLDEN_LINE_BYTES + 2), b""), start=1):
            line = raw.rstrip(b"\r\n")
            line = line[3:] if number == 1 and line[:3] == b"\xef\xbb\xbf" else line  # a UTF-8 BOM (RFC 8259 8.1)
            where = f"golden set {path}: line {number}"
            if len(line) > MAX_GOLDEN_LINE_BYTES:
                raise ConfigError(f"{where}: longer than {MAX_GOLDEN_LINE_BYTES:,} bytes")
            if not line.strip():
                continue
            if len(rows) == max_rows:
                raise ConfigError(f"golden set {path}: more than {max_rows} rows (max_rows); a golden set is "
                                  "small, every row is sent on each change of the prompt")
            rows.append(golden_row(_json_line(line, where), expected_column, f"line {number}", str(path)))
    return rows


def _json_line(line: bytes, where: str) -> Any:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{where}: not UTF-8 (byte {error.start + 1})") from None
    try:
        return json.loads(text, parse_constant=_not_json, parse_float=_finite_float, object_pairs_hook=_unique)
    except _Ambiguous as error:
        raise ConfigError(f"{where}: {error}") from None
    except ValueError as error:  # JSONDecodeError, and NaN / Infinity (not JSON, RFC 8259)
        raise ConfigError(f"{where}: not JSON ({str(error)[:120]})") from None
    except RecursionError:
        raise ConfigError(f"{where}: not JSON (nested too deeply)") from None


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON number")


class _Ambiguous(ValueError):
    pass


def _finite_float(text: str) -> float:
    """A JSON number as a float; one beyond the double range (``1e400``) is refused, not read as infinity
    (RFC 8259 section 6 leaves such numbers to the implementation; an infinity would reach the prompt as "inf")."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is beyond the range of a double")
    return value


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose names are unique: RFC 8259 section 4 leaves an object with a name twice to the
    implementation (Python keeps the last), so a golden line that gives ``expected`` twice is refused."""
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        twice = next(name for i, name in enumerate(names) if name in names[:i])
        raise _Ambiguous(f"the name {twice[:80]!r} appears twice in one object (RFC 8259 section 4), so which "
                         "value counts is ambiguous")
    return dict(pairs)


def golden_row(value: Any, expected_column: str, where: str, source: str, *, null_is_absent: bool = False
               ) -> GoldenRow:
    """One golden row from a JSON object (or a table row: there a struct cannot tell a null field from an absent
    one, so ``null_is_absent`` drops null fields and they constrain nothing)."""
    prefix = f"golden set {source}: {where}"
    if not isinstance(value, dict):
        raise ConfigError(f"{prefix}: not a JSON object (got {type(value).__name__})")
    expected = _drop_nulls(value.get(expected_column)) if null_is_absent else value.get(expected_column)
    if expected is None:
        raise ConfigError(f"{prefix}: no {expected_column!r} value: a golden row names the answer it expects")
    if expected == {}:
        raise ConfigError(f"{prefix}: {expected_column!r} names no field, so it expects nothing")
    if isinstance(expected, str) and not expected.strip():
        raise ConfigError(f"{prefix}: {expected_column!r} is empty text (an empty CSV cell?): a golden row names "
                          "the answer it expects")
    if not _finite(expected):
        raise ConfigError(f"{prefix}: {expected_column!r} holds NaN or an infinity, which no answer equals")
    return GoldenRow(where, {k: v for k, v in value.items() if k != expected_column}, expected)


def golden_inputs(rows: list[GoldenRow], source: str) -> pa.Table:
    """The golden rows' inputs as a table (a field a row does not give is null); a column whose values do not
    share a type is an error naming the first row that breaks it."""
    names = list(dict.fromkeys(name for row in rows for name in row.inputs))
    if not names:
        raise ConfigError(f"golden set {source}: its rows give no input to render the prompt from")
    columns = {}
    for name in names:
        values = [row.inputs.get(name) for row in rows]
        try:
            columns[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            bad = next(i for i in range(1, len(values) + 1) if not _converts(values[:i]))
            why = "is not of the type the rows before it give" if _converts(values[bad - 1:bad]) else \
                "cannot be an Arrow value (an integer beyond 64 bits?)"
            raise ConfigError(f"golden set {source}: {rows[bad - 1].where}: {name!r} {why}") from None
    return pa.table(columns)


def _converts(values: list[Any]) -> bool:
    try:
        pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return False
    return True


def _drop_nulls(value: Any) -> Any:
    """A table's expectation without its null struct fields, at every depth (a struct inside a list too)."""
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True
