"""Blocking for the pair operators: which pairs of rows are worth an LLM's verdict.

Both sides are embedded (``embed_text``, so the vectors are journalled like any answer) or their vectors are read
from a column; the candidates are, for each left row, its ``k`` nearest right rows by cosine similarity, at or
above an optional floor. The search is exact (numpy, in chunks: at most ``CHUNK_CELLS`` similarities in memory at
once, whatever the sizes) or, when the right side lives in a LanceDB table, LanceDB's own vector search. The
candidate budget is ``k`` per left row: at most ``k * len(left)`` pairs, against ``len(left) * len(right)`` for
brute force; ``Blocked`` says both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Unpack

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ai_assets.functions.embed import embed_text
from ai_assets.functions.templates import column_texts
from ai_assets.providers.protocols import RemoteTextEmbedder, TextEmbedder
from ai_assets.runtime.columns import error_column
from ai_assets.runtime.engine import RunOptions
from ai_assets.runtime.errors import ConfigError
from ai_assets.runtime.run import RunArgs
from ai_assets.runtime.usage import Usage

CHUNK_CELLS = 4_000_000
"""Most similarities held at once by the exact search (16 MB of float32)."""
VECTORS = "__ai_assets_vector"


@dataclass
class Side:
    """One side's unit vectors (rows without one are zero and not ``valid``), and why a row has none."""

    vectors: np.ndarray
    valid: np.ndarray
    errors: list[str | None]
    usage: Usage = field(default_factory=Usage)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])


@dataclass(frozen=True)
class Blocked:
    """The candidate pairs (row positions in each side, best first per left row) and what they save."""

    left: np.ndarray
    right: np.ndarray
    similarity: np.ndarray
    k: int
    brute_force: int
    """Pairs an all-pairs comparison of the rows with vectors would verify."""

    @property
    def candidates(self) -> int:
        return len(self.left)


def side_vectors(table: pa.Table, column: str, *, embedder: TextEmbedder | RemoteTextEmbedder | None,
                 vector_column: str | None = None, **run: Unpack[RunArgs]) -> Side:
    """The unit vectors of ``table``'s rows: read from ``vector_column``, or ``column`` embedded by ``embedder``
    (journalled through ``run``'s cache; live also when ``run`` asks for an estimate or a batch, since the
    candidates depend on the vectors). A row with no text or no vector gets the reason instead."""
    if vector_column is not None:
        if vector_column not in table.column_names:
            raise ConfigError(f"vector column {vector_column!r} is not in the table (columns: {table.column_names})")
        column_values = table.column(vector_column)
        errors: list[str | None] = [None if v else f"no vector in {vector_column!r}"
                                    for v in column_values.is_valid().to_pylist()]
        texts = table.column(column).to_pylist() if column in table.column_names else []
        for row, text in enumerate(texts):  # a vector without its text: nothing to show the verifier
            if errors[row] is None and not (isinstance(text, str) and text.strip()):
                errors[row] = f"no text in {column!r}"
        usage = Usage()
    else:
        if embedder is None:
            raise ConfigError(f"blocking {column!r} needs embedder= or a vector column")
        column_texts(table, column)  # the column holds text: checked before anything is embedded
        # One row's failure is that row's error; an estimate embeds for real (which pairs it would verify depends
        # on the vectors; a local model costs nothing, a remote one a fraction of the verdicts).
        options = replace(run.get("options") or RunOptions(), on_error="null", mode="live")
        embed_run: RunArgs = {**run, "options": options, "group_column": None}
        out = embed_text(table.select([column]), column, provider=embedder, output_column=VECTORS, **embed_run)
        column_values = out.table.column(VECTORS)
        embedded = out.table.column(error_column(VECTORS)).to_pylist()
        errors = [None if v else (e or f"no text in {column!r}") for v, e in zip(
            column_values.is_valid().to_pylist(), embedded, strict=True)]
        usage = out.usage
        vector_column = VECTORS
    vectors = _matrix(column_values, vector_column)
    # Row norms without an n x d temporary (einsum), normalised in place: the peak stays near the vectors' size.
    norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors))
    valid = np.isfinite(norms) & (norms > 0) & np.array([e is None for e in errors], bool)
    for row in np.flatnonzero(~valid & np.array([e is None for e in errors], bool)).tolist():
        errors[row] = "a vector that is zero or not finite (NaN / inf)"
    vectors[~valid] = 0.0
    np.divide(vectors, norms[:, None], out=vectors, where=valid[:, None])
    return Side(vectors, valid, errors, usage)


def _matrix(values: pa.ChunkedArray, name: str) -> np.ndarray:
    """The rows of a list column as an ``n x d`` float32 matrix (a null row is zeros), read from Arrow's value
    buffer: never a Python float per element (a 1M x 384 side would be ~12 GB as lists, 1.5 GB here)."""
    kind = values.type
    if not (pa.types.is_fixed_size_list(kind) or pa.types.is_list(kind) or pa.types.is_large_list(kind)):
        raise ConfigError(f"vector column {name!r} holds {kind}, not a list of numbers (an embedding)")
    array = values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    present = array.is_valid()
    rows = np.flatnonzero(present.to_numpy(zero_copy_only=False))
    lengths = pc.list_value_length(array).to_numpy(zero_copy_only=False)
    dim = int(lengths[rows[0]]) if len(rows) else 1
    wrong = rows[lengths[rows] != dim]
    if len(wrong):
        raise ConfigError(f"{name!r} row {int(wrong[0])}: a vector of size {int(lengths[wrong[0]])} after vectors "
                          f"of size {dim}; one side holds one size")
    matrix = np.zeros((len(array), dim), np.float32)
    if len(rows):
        flat = pc.list_flatten(array.filter(present)) if len(rows) < len(array) else pc.list_flatten(array)
        if not (pa.types.is_floating(flat.type) or pa.types.is_integer(flat.type)):
            raise ConfigError(f"vector column {name!r} holds lists of {flat.type}, not numbers")
        # A null inside a vector reads as NaN: that row is then "not finite", its own error.
        matrix[rows] = flat.cast(pa.float32()).to_numpy(zero_copy_only=False).reshape(len(rows), dim)
    return matrix


def check_dims(left: Side, right: Side) -> None:
    if left.valid.any() and right.valid.any() and left.dim != right.dim:
        raise ConfigError(f"the left vectors have {left.dim} dimensions and the right ones {right.dim}: embed both "
                          "sides with the same model")


def exact_pairs(left: Side, right: Side, k: int, min_similarity: float | None = None, *,
                exclude_self: bool = False, cells: int = CHUNK_CELLS) -> Blocked:
    """For each valid left row, its ``k`` most similar valid right rows (exact cosine), at or above
    ``min_similarity``; with ``exclude_self`` (one table against itself) a row is not its own candidate. At most
    ``cells`` similarities (or one left row's) are held at once."""
    check_k(k)
    check_dims(left, right)
    lefts, rights = np.flatnonzero(left.valid), np.flatnonzero(right.valid)
    brute = len(lefts) * (len(rights) - (1 if exclude_self else 0)) if len(rights) else 0
    take = min(k, len(rights) - (1 if exclude_self else 0))
    if take <= 0 or len(lefts) == 0:
        return _empty(k, max(brute, 0))
    matrix = right.vectors if len(rights) == len(right.valid) else right.vectors[rights]  # no copy of a whole side
    step = max(1, cells // max(1, len(rights)))
    out_l, out_r, out_s = [], [], []
    for start in range(0, len(lefts), step):
        rows = lefts[start:start + step]
        scores = left.vectors[rows] @ matrix.T
        if exclude_self:
            scores[rows[:, None] == rights[None, :]] = -np.inf
        top = np.argpartition(-scores, take - 1, axis=1)[:, :take]
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.lexsort((rights[top], -top_scores), axis=1)  # best first; ties by row position: deterministic
        top, top_scores = np.take_along_axis(top, order, axis=1), np.take_along_axis(top_scores, order, axis=1)
        keep = np.isfinite(top_scores) & (top_scores >= (-np.inf if min_similarity is None else min_similarity))
        out_l.append(np.repeat(rows, take)[keep.ravel()])
        out_r.append(rights[top].ravel()[keep.ravel()])
        out_s.append(top_scores.ravel()[keep.ravel()])
    return Blocked(np.concatenate(out_l), np.concatenate(out_r), np.concatenate(out_s).astype(np.float32), k, brute)


def lance_pairs(left: Side, right: Side, table: Any, right_keys: list[Any], key_column: str, k: int,
                min_similarity: float | None = None, *, vector_column: str | None = None) -> Blocked:
    """Candidates by LanceDB's vector search of ``table`` (a ``lancedb`` table holding the right side's vectors,
    cosine distance): the ``k`` nearest usable rows per valid left row (``right``: the same table's vectors, read
    for their validity), mapped back to positions in ``right_keys`` (the right side's ``key_column``, read from the
    same table; LanceDB has no primary key, so a repeated or null key is an error). An ANN index, when the table
    has one, answers."""
    check_k(k)
    check_dims(left, right)
    position: dict[Any, int] = {}
    for i, key in enumerate(right_keys):
        if key is None or key in position:
            raise ConfigError(f"right_key={key_column!r}: row {i} holds {'a null key' if key is None else repr(key)}"
                              f"{'' if key is None else f' as row {position[key]} does'}; LanceDB keeps no key "
                              "unique, the join needs one to find a hit's row")
        position[key] = i
    usable = right.valid
    if not usable.any():
        return _empty(k, 0)
    skipped = int((~usable).sum())  # rows the search may return but the join leaves out: ask for that many more
    lefts = np.flatnonzero(left.valid)
    out_l, out_r, out_s = [], [], []
    for row in lefts:
        query = table.search(left.vectors[row].tolist(), vector_column_name=vector_column).distance_type("cosine")
        hits = query.select([key_column]).limit(min(k + skipped, len(right_keys))).to_arrow()
        taken = 0
        for key, distance in zip(hits.column(key_column).to_pylist(), hits.column("_distance").to_pylist(),
                                 strict=True):
            at = position.get(key)
            similarity = 1.0 - float(distance) if distance is not None else float("nan")
            if at is None or not usable[at] or not np.isfinite(similarity) or taken == k:
                continue
            taken += 1
            if min_similarity is None or similarity >= min_similarity:
                out_l.append(int(row))
                out_r.append(at)
                out_s.append(similarity)
    return Blocked(np.array(out_l, np.int64), np.array(out_r, np.int64), np.array(out_s, np.float32), k,
                   len(lefts) * int(usable.sum()))


def embedding_run(run: RunArgs) -> RunArgs:
    """``run`` for the embedder: without the progress, model and prices of the verifying LLM."""
    return {"options": run.get("options"), "cache": run.get("cache"), "run_id": run.get("run_id")}


def check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"k={k!r}: give the number of candidates per row, an int >= 1")


def check_floor(value: float | None, name: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                              or not math.isfinite(value) or not -1.0 <= value <= 1.0):
        raise ConfigError(f"{name}={value!r}: a cosine similarity is a number in [-1, 1]")


def _empty(k: int, brute: int) -> Blocked:
    none = np.zeros(0, np.int64)
    return Blocked(none, none, np.zeros(0, np.float32), k, brute)
