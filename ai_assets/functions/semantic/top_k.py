"""``semantic_top_k``: the ``k`` rows that best answer a query, ranked by an LLM comparing rows two at a time.

The method is LOTUS's ``sem_topk`` (Patel et al., "Semantic Operators", 2024; method ``quick``): a quickselect
over pairwise comparisons, carried on as a partial quicksort so the k rows come out ranked. A pivot is compared
with every other candidate in one concurrent batch of requests, the candidates split into better and worse, and
only the parts that can hold the first k are ranked further: about ``2n + k log k`` comparisons expected for n
candidates. With an ``embedder`` the candidates are first cut to the ``candidates`` rows nearest the query (as
LOTUS's ``quick-sem`` uses embeddings); without one every row is a candidate, up to ``max_candidates``.

Incremental by content. Each comparison is one request whose body holds the query and both rows' texts, so the
journal keys it by that content: a re-run pays nothing. The order is deterministic: a part's pivot is the row whose
text hashes lowest (seeded by ``seed``), and a pair is always shown in the same order (by the hash of its texts),
which also spreads a model's position bias evenly over both sides. Rows added later are new pivots only where
they hash lowest, so a re-run after adding m rows to n pays for comparisons involving the new rows, plus those a
new pivot changes.

A comparison that fails (after ``prompt``'s own retries and re-asks) leaves the row it was about unranked: it is in
the output with a null rank and the error, and in the dead letters; the pivot's part is still ranked. A null, NaN or
empty text is never compared (its row is an error, "no text"); a text over ``max_chars`` is compared cut, and
``<output_column>_cut`` says so.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Unpack

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, Field

from ai_assets.functions.embed import embed_text
from ai_assets.functions.prompt import PromptParams
from ai_assets.functions.semantic._rows_ask import MAX_CHARS, RowText, ask, check_live, row_texts, run_of
from ai_assets.providers.protocols import Prompter, RemoteTextEmbedder, TextEmbedder
from ai_assets.runtime.columns import error_column
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
    check_live(run, "semantic_top_k")
    texts = row_texts(table, column, max_chars, "semantic_top_k")
    usage = Usage()
    errors: dict[int, str] = {i: NO_TEXT for i, t in enumerate(texts) if t.text is None}
    pool = [i for i, t in enumerate(texts) if t.text is not None]
    if k and pool and embedder is not None:
        pool = _nearest(table, column, pool, query, embedder, candidates, run, usage, errors)
    elif len(pool) > max_candidates:
        raise ConfigError(f"semantic_top_k: {len(pool)} rows to rank, over max_candidates={max_candidates}; give "
                          "an embedder= to pre-rank them, or raise max_candidates")
    ranking = _Ranking(texts, query, provider, params, run, usage, errors, seed)
    top = ranking.sort(pool, k) if k else []
    usage.rows, usage.answered = table.num_rows, len(top)
    usage.skipped = sum(t.text is None for t in texts)  # the error rate counts the rows that could be ranked
    usage.errors = len(errors) - usage.skipped
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

    def sort(self, rows: list[int], k: int, *, tries: int = 0) -> list[int]:
        """The first ``k`` of ``rows``, best first (rows whose comparison failed are left out, in ``errors``).

        When most comparisons with a pivot fail, the pivot is taken to be the cause (a text the model cannot
        answer about): it becomes the error and the part is ranked again around the next pivot, at most
        ``REPIVOTS`` times in a row (a provider that is down fails every pivot: then the rows are the errors)."""
        if len(rows) <= 1 or k <= 0:
            return rows[:max(k, 0)]
        pivot = min(rows, key=lambda r: (self.hash(r), r))
        others = [r for r in rows if r != pivot]
        better, worse, failed = self.split(pivot, others)
        if len(failed) * 2 >= len(others) >= 2 and tries < REPIVOTS:
            self.errors[pivot] = f"most comparisons with it failed: {next(iter(failed.values()))}"
            return self.sort(others, k, tries=tries + 1)
        self.errors.update(failed)
        ranked = self.sort(better, k)
        if len(ranked) >= k:
            return ranked[:k]
        ranked.append(pivot)
        return ranked if len(ranked) >= k else ranked + self.sort(worse, k - len(ranked))

    def split(self, pivot: int, others: list[int]) -> tuple[list[int], list[int], dict[int, str]]:
        """``others`` split into those better than ``pivot`` and the rest (a text equal to the pivot's is no
        better and is not asked about), and the rows whose comparison failed, with why."""
        asked = [r for r in others if self.texts[r].text != self.texts[pivot].text]
        questions = []
        for row in asked:
            first, second = sorted((row, pivot), key=lambda r: (self.hash(r), r))
            questions.append(f"Document A:\n{self.texts[first].text}\n\nDocument B:\n{self.texts[second].text}")
        values, failures = ask(questions, system=SYSTEM.format(query=self.query), answer=Comparison,
                               provider=self.provider, params=self.params, run=self.run, usage=self.usage)
        verdict = {}
        failed = {}
        for row, value, error in zip(asked, values, failures, strict=True):
            if error is not None:
                failed[row] = f"comparison with row {pivot} failed: {error}"
                continue
            first = min((row, pivot), key=lambda r: (self.hash(r), r))
            verdict[row] = (value["better"] == "A") == (first == row)
        better = [r for r in others if verdict.get(r)]
        worse = [r for r in others if r not in failed and not verdict.get(r)]
        return better, worse, failed


def _nearest(table: pa.Table, column: str, pool: list[int], query: str,
             embedder: TextEmbedder | RemoteTextEmbedder, candidates: int, run: RunArgs, usage: Usage,
             errors: dict[int, str]) -> list[int]:
    """The ``candidates`` rows of ``pool`` whose embedding is nearest the query's (ties by row order)."""
    if isinstance(candidates, bool) or not isinstance(candidates, int) or candidates < 1:
        raise ConfigError(f"semantic_top_k: candidates must be an int >= 1, got {candidates!r}")
    rows = pa.table({"text": [str(table.column(column)[i].as_py()) for i in pool] + [query]})
    out = embed_text(rows, "text", provider=embedder, output_column="vector", **run_of(run))
    usage.requests += out.usage.requests
    usage.cache_hits += out.usage.cache_hits
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
    out = out.append_column(output_column, pa.array(ranks, pa.int32()))
    out = out.append_column(error_column(output_column), pa.array(messages, pa.string()))
    out = out.append_column(f"{output_column}_cut", pa.array([texts[r].cut for r in order], pa.bool_()))
    letters = FailedRows()
    if failed_rows:
        inputs = table.take(pa.array(failed_rows, pa.int64())).combine_chunks().to_batches()
        offset = 0
        for batch in inputs:
            rows = failed_rows[offset:offset + batch.num_rows]
            letters.add(batch, [errors[r] for r in rows], [None] * len(rows), [None] * len(rows))
            offset += batch.num_rows
    return Enriched(out, usage, letters)
