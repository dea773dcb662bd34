"""``semantic_join``: the pairs of a left and a right table for which a natural-language condition holds.

Candidates come from blocking (``blocking``: the ``k`` most similar right rows per left row); each is verified by
the LLM through ``prompt`` with a schema-constrained verdict (``Verdict``: ``match`` and a ``confidence``). The
request holds both rows' texts, left first, so the journal keys each verdict by the pair's content: a re-run sends
nothing, and a new partition of either side sends only the pairs that involve its new rows. A text longer than
``max_text_chars`` is cut before it is sent, and the pair's ``cut`` column says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Unpack

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, Field

from ai_assets.functions.cascade import Cascade
from ai_assets.functions.prompt import prompt
from ai_assets.functions.semantic.blocking import (
    Blocked,
    Side,
    check_floor,
    check_k,
    embedding_run,
    exact_pairs,
    lance_pairs,
    side_vectors,
)
from ai_assets.providers.protocols import Prompter, RemoteTextEmbedder, TextEmbedder
from ai_assets.runtime.columns import error_column
from ai_assets.runtime.engine import RunOptions
from ai_assets.runtime.errors import ConfigError
from ai_assets.runtime.results import Enriched
from ai_assets.runtime.run import RunArgs
from ai_assets.runtime.usage import Usage

MAX_TEXT_CHARS = 4000
"""Characters of each row's text sent to the verifier (about 1,000 tokens); a longer text is cut and said so."""
VERDICT = "verdict"
JOIN_SYSTEM = ("You decide whether a condition holds for a pair of records, A from the left table and B from the "
               "right table. Condition: {condition}\nAnswer match=true only if it holds; confidence is your "
               "probability that your answer is right.")
PAIR_TEMPLATE = "A: {a_sent}\n\nB: {b_sent}"
"""Each side is a JSON string (quotes, newlines escaped): a text holding "\n\nB: " cannot pose as the other side,
and distinct pairs are distinct requests, so the journal never answers one pair with another's verdict."""


class Verdict(BaseModel):
    """The verifier's answer for one pair (a certified cascade: ``label_field="match"``,
    ``confidence_field="confidence"``)."""

    match: bool
    confidence: float = Field(ge=0.0, le=1.0)


@dataclass
class Paired(Enriched):
    """What a pair operator returns: its table, the verifier's usage and failed pairs, and the blocking's figures."""

    candidates: int = 0
    """Pairs sent to the verifier (or answered by the journal): at most ``k`` per row."""
    brute_force: int = 0
    """Pairs an all-pairs comparison would verify."""
    k: int = 0
    embedding_usage: Usage = field(default_factory=Usage)


def cut_text(text: str | None, limit: int) -> tuple[str | None, str | None]:
    """``text`` at most ``limit`` characters, and a note when it was cut."""
    if text is None or len(text) <= limit:
        return text, None
    return text[:limit], f"cut to {limit} of {len(text)} characters"


def verify(a: list[str | None], b: list[str | None], notes: list[str | None], condition: str, system: str, *,
           provider: Prompter, cascade: Cascade | None, run: RunArgs) -> Enriched:
    """The verdicts for the pairs ``(a[i], b[i])``: one journalled request per distinct pair, one row's failure
    that row's error (``on_error="null"`` unless the options say otherwise)."""
    if not isinstance(condition, str) or not condition.strip():
        raise ConfigError(f"condition={condition!r}: say in words when a pair matches")
    options = run.get("options") or RunOptions(on_error="null")
    pairs = pa.table({"a": pa.array(a, pa.string()), "b": pa.array(b, pa.string()),  # as read (dead letters)
                      "a_sent": pa.array(_quoted(a), pa.string()), "b_sent": pa.array(_quoted(b), pa.string()),
                      "cut": pa.array(notes, pa.string())})
    verify_run: RunArgs = {**run, "options": options}
    out = prompt(pairs, PAIR_TEMPLATE, provider=provider, return_format=Verdict, output_column=VERDICT,
                 system_message=system.format(condition=condition.strip()), cascade=cascade, **verify_run)
    assert isinstance(out, Enriched)  # a table in, a table out
    return out


def semantic_join(
    left: pa.Table,
    right: pa.Table | Any,
    left_column: str,
    right_column: str,
    condition: str,
    *,
    provider: Prompter,
    embedder: TextEmbedder | RemoteTextEmbedder | None = None,
    k: int = 5,
    min_similarity: float | None = None,
    left_vector: str | None = None,
    right_vector: str | None = None,
    right_key: str | None = None,
    cascade: Cascade | None = None,
    max_text_chars: int = MAX_TEXT_CHARS,
    keep_unmatched: bool = False,
    **run: Unpack[RunArgs],
) -> Paired:
    """The pairs of ``left`` and ``right`` rows for which ``condition`` holds, as the LLM ``provider`` judges it.

    Only candidate pairs are judged: for each left row, the ``k`` right rows whose ``left_column`` /
    ``right_column`` texts are most similar (cosine of ``embedder``'s vectors, or of the vectors already in
    ``left_vector`` / ``right_vector``), at or above ``min_similarity``. ``right`` may be a LanceDB table holding
    its vectors in ``right_vector`` with a unique ``right_key`` (a repeated or null key is an error): LanceDB's
    vector search then finds the candidates. A row with a vector but no text is its own error row.

    The output has the left row's columns (``left_<name>``), the right row's (``right_<name>``), ``similarity``,
    ``match``, ``confidence``, ``cut`` (a text cut to ``max_text_chars``) and ``match_error``: the matched pairs
    and the pairs whose verdict failed (``keep_unmatched=True``: every candidate), then one row per input row that
    could not be compared (no text, no vector), with the reason. ``run`` as for every AI function (``RunArgs``); a
    ``cascade`` (``Cascade([cheap, strong], target=Recall(0.95), label_field="match",
    confidence_field="confidence")``) sends only the pairs the cheap model is not trusted on to the strong one.
    """
    check_floor(min_similarity, "min_similarity")
    check_k(k)
    check_limit(max_text_chars)
    lance = not isinstance(right, pa.Table)
    if lance and (right_vector is None or right_key is None):
        raise ConfigError("semantic_join over a LanceDB table needs right_vector= (its vector column) and "
                          "right_key= (a unique key column)")
    right_table = right.to_arrow() if lance else right
    if lance and right_key not in right_table.column_names:
        raise ConfigError(f"right_key={right_key!r} is not a column of the LanceDB table (columns: "
                          f"{right_table.column_names})")
    embed_run = embedding_run(run)
    left_side = side_vectors(left, left_column, embedder=embedder, vector_column=left_vector, **embed_run)
    right_side = side_vectors(right_table, right_column, embedder=embedder, vector_column=right_vector, **embed_run)
    if lance:
        assert right_key is not None
        blocked = lance_pairs(left_side, right_side, right, right_table.column(right_key).to_pylist(), right_key,
                              k, min_similarity, vector_column=right_vector)
    else:
        blocked = exact_pairs(left_side, right_side, k, min_similarity)
    left_texts = _texts(left, left_column)
    right_texts = _texts(right_table, right_column)
    a: list[str | None] = []
    b: list[str | None] = []
    notes: list[str | None] = []
    for i, j in zip(blocked.left.tolist(), blocked.right.tolist(), strict=True):
        a_text, a_note = cut_text(left_texts[i], max_text_chars)
        b_text, b_note = cut_text(right_texts[j], max_text_chars)
        a.append(a_text)
        b.append(b_text)
        notes.append("; ".join(f"{side} text {note}" for side, note in (("left", a_note), ("right", b_note))
                               if note) or None)
    verified = verify(a, b, notes, condition, JOIN_SYSTEM, provider=provider, cascade=cascade, run=run)
    table = _join_table(left, right_table, blocked, verified.table, left_side, right_side, keep_unmatched,
                        drop={left_vector, right_vector})
    embedding = Usage()
    for usage in (left_side.usage, right_side.usage):
        embedding.absorb(usage, "embedder", None)
    count_unembedded(verified.usage, left_side.usage, right_side.usage)
    return Paired(table, verified.usage, verified.failed, blocked.candidates, blocked.brute_force, k, embedding)


def _quoted(texts: list[str | None]) -> list[str | None]:
    """Blank and null texts stay so (the row is skipped, not sent as ``""``)."""
    return [t if t is None or not t.strip() else json.dumps(t, ensure_ascii=False) for t in texts]


def count_unembedded(usage: Usage, *embedding: Usage) -> None:
    """Rows whose embedding failed (the embedder down, not a row with no text) were never compared: they count as
    failed rows of the call, so its error rate (and the Dagster asset's check) sees a join that compared nothing."""
    lost = sum(part.errors for part in embedding)
    usage.rows += lost
    usage.errors += lost


def _texts(table: pa.Table, column: str) -> list[Any]:
    if column not in table.column_names:
        raise ConfigError(f"column {column!r} is not in the table (columns: {table.column_names})")
    values: list[Any] = table.column(column).to_pylist()
    return values


def check_limit(max_text_chars: int) -> None:
    if isinstance(max_text_chars, bool) or not isinstance(max_text_chars, int) or max_text_chars < 1:
        raise ConfigError(f"max_text_chars={max_text_chars!r}: give the characters of a text to send, an int >= 1")


def _join_table(left: pa.Table, right: pa.Table, blocked: Blocked, verdicts: pa.Table, left_side: Side,
                right_side: Side, keep_unmatched: bool, drop: set[str | None]) -> pa.Table:
    verdict = verdicts.column(VERDICT).to_pylist()
    errors = verdicts.column(error_column(VERDICT)).to_pylist()
    match = [None if v is None else bool(v["match"]) for v in verdict]
    keep = [keep_unmatched or m is True or e is not None for m, e in zip(match, errors, strict=True)]
    chosen = np.flatnonzero(np.array(keep, bool)) if keep else np.zeros(0, np.int64)
    lost_left = [i for i, e in enumerate(left_side.errors) if e is not None]
    lost_right = [j for j, e in enumerate(right_side.errors) if e is not None]
    left_rows = [*blocked.left[chosen].tolist(), *lost_left, *([None] * len(lost_right))]
    right_rows = [*blocked.right[chosen].tolist(), *([None] * len(lost_left)), *lost_right]
    columns: dict[str, pa.Array] = {}
    for prefix, table, rows in (("left_", left, left_rows), ("right_", right, right_rows)):
        for name in table.column_names:
            if name not in drop:
                columns[prefix + name] = table.column(name).take(pa.array(rows, pa.int64()))
    pick = chosen.tolist()
    columns["similarity"] = pa.array([float(blocked.similarity[i]) for i in pick] + [None] * (len(lost_left)
                                     + len(lost_right)), pa.float32())
    columns["match"] = pa.array([match[i] for i in pick] + [None] * (len(lost_left) + len(lost_right)), pa.bool_())
    columns["confidence"] = pa.array([None if verdict[i] is None else verdict[i]["confidence"] for i in pick]
                                     + [None] * (len(lost_left) + len(lost_right)), pa.float64())
    columns["cut"] = pa.array([verdicts.column("cut")[i].as_py() for i in pick]
                              + [None] * (len(lost_left) + len(lost_right)), pa.string())
    columns["match_error"] = pa.array(
        [errors[i] for i in pick] + [f"left row {i}: {left_side.errors[i]}" for i in lost_left]
        + [f"right row {j}: {right_side.errors[j]}" for j in lost_right], pa.string())
    return pa.table(columns)

