"""``semantic_top_k``: the ``k`` rows that best answer a query, ranked by an LLM comparing rows two at a time.

The method is LOTUS's ``sem_topk`` (Patel et al., "Semantic Operators", 2024; method ``quick``): a quickselect
over pairwise comparisons, carried on as a partial quicksort so the k rows come out ranked. A pivot is compared
with every other candidate in one concurrent batch of requests, the candidates split into better and worse, and
only the parts that can hold the first k are ranked further: about ``2n + k log k`` comparisons expected for n
candidates. With an ``embedder`` the candidates are first cut to the ``candidates`` rows nearest the query (as
LOTUS's ``quick-sem`` uses embeddings); without one every row is a candidate, up to ``max_candidates``.

Incremental by content. Each comparison is one request whose body holds the query and both rows' texts, so the
journal keys it by that content: a re-run pays nothing. The order is deterministic: a part's pivot is the row whose
text hashes lowest (seeded by ``seed``), and a pair is always shown in the same order (a coin flip fixed by the
hashes of its two texts, whichever is the pivot), which spreads a model's position bias evenly over both sides
(a pivot is Document A in about half of its comparisons). Rows with the same text as a pivot rank right after
it, in row order, unasked. Rows added later are new pivots only where they hash lowest, so a re-run after adding m
rows to n pays for comparisons involving the new rows, plus those a new pivot changes.

A comparison that fails (after ``prompt``'s own retries and re-asks) leaves the row it was about unranked: it is in
the output with a null rank and the error, and in the dead letters; the pivot's part is still ranked. A null, NaN or
empty text is never compared (its row is an error, "no text"); a text over ``max_chars`` is compared cut, and
``<output_column>_cut`` says so.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Unpack

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, Field, field_validator

from ai_assets.functions.embed import embed_text
from ai_assets.functions.prompt import PromptParams
from ai_assets.functions.semantic._rows_ask import (
    MAX_CHARS,
    RowText,
    add_usage,
    ask,
    estimating,
    row_texts,
    run_of,
    scale,
)
from ai_assets.providers.protocols import Prompter, RemoteTextEmbedder, TextEmbedder
from ai_assets.runtime.columns import error_column, set_columns
from ai_assets.runtime.dead_letter import FailedRows
from ai_assets.runtime.errors import ConfigError
from ai_assets.runtime.results import Enriched
from ai_assets.runtime.run import RunArgs
from ai_assets.runtime.usage import Usage

MAX_CANDIDATES = 1000
"""Without an embedder, the most rows one call ranks (the comparisons grow with them)."""
REPIVOTS = 2
"""How many pivots in a row a part may set aside because most comparisons with them failed."""
NO_TEXT = "no text: a null, NaN or empty value is not ranked"


class Comparison(BaseModel):
    """Which of two documents better answers the query."""

    better: Literal["A", "B"] = Field(description="A if Document A answers the query better, else B")

    @field_validator("better", mode="before")
    @classmethod
    def _letter(cls, value: Any) -> Any:
        """"a", " B", "Document A." name a document as plainly as "A" (a model not held to the enum answers so);
        prose stays invalid and is re-asked. The schema sent, and so every journal key, is unchanged."""
        if isinstance(value, str):
            word = value.strip().rstrip(".").casefold().removeprefix("document").strip()
            if word in ("a", "b"):
                return word.upper()
        return value


SYSTEM = ("You compare two documents for how well each answers a query. Query: {query}\n"
          "Answer A if Document A answers it better, B if Document B does.")


def semantic_top_k(table: pa.Table, column: str, query: str, k: int, *, provider: Prompter,
                   embedder: TextEmbedder | RemoteTextEmbedder | None = None, candidates: int = 100,
                   max_candidates: int = MAX_CANDIDATES, max_chars: int = MAX_CHARS, seed: int = 0,
                   output_column: str = "rank", params: PromptParams | None = None,
                   **run: Unpack[RunArgs]) -> Enriched:
    """The ``k`` rows of ``table`` whose ``column`` best answers ``query``, best first, with ``output_column``
    (1 to k) and ``<output_column>_error``; rows that could not be ranked follow with a null rank and their error.

    ``embedder``: cut the candidates to the ``candidates`` rows nearest the query first (else every row is one, at
    most ``max_candidates``: more is an error naming the setting). ``seed`` picks the pivots; the same seed asks
    the same questions, so a re-run is answered by the journal. ``run``: the keywords every AI function takes.

        best = semantic_top_k(papers, "abstract", "Which paper is most about retrieval?", 3, provider=llm,
                              cache=ResultCache("cache.sqlite"))
        best.table.column("rank").to_pylist()   # [1, 2, 3]
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ConfigError(f"semantic_top_k: k must be an int >= 0, got {k!r}")
    if not isinstance(query, str) or not query.strip():
        raise ConfigError("semantic_top_k: give the query as a non-empty string")
    texts = row_texts(table, column, max_chars, "semantic_top_k")
    usage = Usage()
    errors: dict[int, str] = {i: NO_TEXT for i, t in enumerate(texts) if t.text is None}
    pool = [i for i, t in enumerate(texts) if t.text is not None]
    if k and pool and embedder is not None:
        pool = _nearest(texts, pool, query, embedder, candidates, run, usage, errors)
    elif len(pool) > max_candidates:
        raise ConfigError(f"semantic_top_k: {len(pool)} rows to rank, over max_candidates={max_candidates}; give "
                          "an embedder= to pre-rank them, or raise max_candidates")
    ranking = _Ranking(texts, query, provider, params, run, usage, errors, seed)
    if estimating(run):  # which comparisons follow the first split depends on its answers
        ranking.estimate(pool, k)
        top: list[int] = []
    else:
        top = ranking.sort(pool, k) if k else []
    usage.rows, usage.answered = table.num_rows, len(top)
    usage.skipped = sum(t.text is None for t in texts)  # the error rate counts the rows that could be ranked
    usage.errors = len(errors) - usage.skipped
    usage.estimated = usage.estimated or estimating(run)
    return _output(table, top, errors, texts, output_column, usage)


@dataclass
class _Ranking:
    texts: Sequence[RowText]
    query: str
    provider: Prompter
    params: PromptParams | None
    run: RunArgs
    usage: Usage
    errors: dict[int, str]
    seed: int
    hashes: dict[int, str] = field(default_factory=dict)

    def hash(self, row: int) -> str:
        if row not in self.hashes:
            text = self.texts[row].text or ""
            self.hashes[row] = hashlib.sha256(f"{self.seed}\x00{text}".encode()).hexdigest()
        return self.hashes[row]

    def first(self, a: int, b: int) -> int:
        """Which of rows ``a`` and ``b`` is shown as Document A: a coin flip fixed by the pair's two hashes alone,
        so a pair is always asked the same way (one journal key) whichever is the pivot, and a pivot sits first in
        about half of its comparisons (a model's position bias spreads over both sides, not onto the pivot)."""
        low, high = sorted((a, b), key=lambda r: (self.hash(r), r))
        flip = hashlib.sha256(f"{self.hash(low)}{self.hash(high)}".encode()).digest()[0] & 1
        return high if flip else low

    def sort(self, rows: list[int], k: int) -> list[int]:
        """The first ``k`` of ``rows``, best first (rows whose comparison failed are left out, in ``errors``).

        A partial quicksort without recursion (a stack of parts, best first), with a three-way split: rows whose
        text equals the pivot's are neither asked about nor split again, they rank right after it in row order
        (Bentley & McIlroy's fat pivot, so a table of repeated texts is one step, not one per copy). When most
        comparisons with a pivot fail, the pivot is taken to be the cause (a text the model cannot answer about):
        it becomes the error and the part is ranked again around the next pivot, at most ``REPIVOTS`` times in a
        row (a provider that is down fails every pivot: then the rows are the errors, the last pivot too, as no
        comparison ranked it)."""
        ranked: list[int] = []
        parts: list[tuple[list[int], int, bool]] = [(rows, 0, False)]  # (rows, tries, ranked already), last first
        while parts and len(ranked) < k:
            part, tries, done = parts.pop()
            if done or len(part) <= 1:
                ranked.extend(part)
                continue
            pivot = min(part, key=lambda r: (self.hash(r), r))
            others = [r for r in part if r != pivot]
            better, equal, worse, failed = self.split(pivot, others)
            if len(failed) * 2 >= len(others) - len(equal) >= 2 and tries < REPIVOTS:
                self.errors[pivot] = f"most comparisons with it failed: {next(iter(failed.values()))}"
                parts.append((others, tries + 1, False))
                continue
            self.errors.update(failed)
            if failed and len(failed) == len(others) - len(equal):  # nothing compared: the pivot has no rank either
                why = f"no comparison with it succeeded: {next(iter(failed.values()))}"
                self.errors.update(dict.fromkeys([pivot, *equal], why))
                continue
            parts.extend([(worse, 0, False), ([pivot, *equal], 0, True), (better, 0, False)])
        return ranked[:max(k, 0)]

    def split(self, pivot: int, others: list[int]) -> tuple[list[int], list[int], list[int], dict[int, str]]:
        """``others`` split into those better than ``pivot``, those whose text equals the pivot's (not asked
        about), and the rest; and the rows whose comparison failed, with why."""
        equal = [r for r in others if self.texts[r].text == self.texts[pivot].text]
        asked = [r for r in others if self.texts[r].text != self.texts[pivot].text]
        values, failures = self.ask(pivot, asked, self.usage)
        verdict = {}
        failed = {}
        for row, value, error in zip(asked, values, failures, strict=True):
            if error is not None:
                failed[row] = f"comparison with row {pivot} failed: {error}"
                continue
            verdict[row] = (value["better"] == "A") == (self.first(row, pivot) == row)
        better = [r for r in asked if verdict.get(r)]
        worse = [r for r in asked if r not in failed and not verdict.get(r)]
        return better, equal, worse, failed

    def ask(self, pivot: int, asked: list[int], usage: Usage) -> tuple[list[Any], list[str | None]]:
        """Each row of ``asked`` compared with ``pivot``: the answers and errors, in order."""
        questions = []
        for row in asked:
            first = self.first(row, pivot)
            second = pivot if first == row else row
            questions.append(f"Document A:\n{self.texts[first].text}\n\nDocument B:\n{self.texts[second].text}")
        return ask(questions, system=SYSTEM.format(query=self.query), answer=Comparison, provider=self.provider,
                   params=self.params, run=self.run, usage=usage)

    def estimate(self, rows: list[int], k: int) -> None:
        """What ranking ``rows`` would send, into ``usage``: the first split's comparisons (the only ones known
        before any answer, estimated by ``prompt``) scaled to a quickselect's expected count, about
        ``2n + k log2 k`` (LOTUS), at most every pair."""
        if len(rows) <= 1 or k <= 0:
            return
        pivot = min(rows, key=lambda r: (self.hash(r), r))
        asked = [r for r in rows if r != pivot and self.texts[r].text != self.texts[pivot].text]
        if not asked:
            return
        first = Usage()
        self.ask(pivot, asked, first)
        n = len(rows)
        scale(first, min(n * (n - 1) // 2, 2 * n + k * math.ceil(math.log2(k + 1))) / len(asked))
        add_usage(self.usage, first)


def _nearest(texts: Sequence[RowText], pool: list[int], query: str, embedder: TextEmbedder | RemoteTextEmbedder,
             candidates: int, run: RunArgs, usage: Usage, errors: dict[int, str]) -> list[int]:
    """The ``candidates`` rows of ``pool`` whose embedding is nearest the query's (ties by row order). A row
    embeds the text its comparisons show (cut to ``max_chars``), so it fits an embedder's input limit too."""
    if isinstance(candidates, bool) or not isinstance(candidates, int) or candidates < 1:
        raise ConfigError(f"semantic_top_k: candidates must be an int >= 1, got {candidates!r}")
    rows = pa.table({"text": [texts[i].text for i in pool] + [query]})
    out = embed_text(rows, "text", provider=embedder, output_column="vector", **run_of(run))
    usage.requests += out.usage.requests
    usage.cache_hits += out.usage.cache_hits
    if out.usage.estimated:  # no vectors: the estimate compares as many rows as the cut would keep
        usage.estimated = True
        return pool[:candidates]
    vectors = out.table.column("vector").to_pylist()
    failed = out.table.column(error_column("vector")).to_pylist()
    if vectors[-1] is None:
        raise ConfigError(f"semantic_top_k: the query could not be embedded: {failed[-1]}")
    q = np.asarray(vectors[-1], np.float64)
    q_norm = float(np.linalg.norm(q))
    scored = []
    for row, vector, error in zip(pool, vectors[:-1], failed[:-1], strict=True):
        if vector is None:
            errors[row] = f"embedding failed: {error}"
            continue
        v = np.asarray(vector, np.float64)
        scored.append((-float(v @ q) / max(float(np.linalg.norm(v)) * q_norm, 1e-12), row))
    return sorted(row for _, row in sorted(scored)[:candidates])


def _output(table: pa.Table, top: list[int], errors: dict[int, str], texts: Sequence[RowText], output_column: str,
            usage: Usage) -> Enriched:
    failed_rows = sorted(errors)
    order = [*top, *failed_rows]
    out = table.take(pa.array(order, pa.int64()))
    ranks = [*range(1, len(top) + 1), *([None] * len(failed_rows))]
    messages = [None] * len(top) + [errors[r] for r in failed_rows]
    out = set_columns(out, {output_column: pa.array(ranks, pa.int32()),  # a ranked table ranked again: replaced
                            error_column(output_column): pa.array(messages, pa.string()),
                            f"{output_column}_cut": pa.array([texts[r].cut for r in order], pa.bool_())})
    letters = FailedRows()
    if failed_rows:
        inputs = table.take(pa.array(failed_rows, pa.int64())).combine_chunks().to_batches()
        offset = 0
        for batch in inputs:
            rows = failed_rows[offset:offset + batch.num_rows]
            letters.add(batch, [errors[r] for r in rows], [None] * len(rows), [None] * len(rows))
            offset += batch.num_rows
    return Enriched(out, usage, letters)
