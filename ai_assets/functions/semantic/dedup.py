"""``semantic_dedup``: entity resolution of one table's rows into clusters.

Rows with the same text are one entity without asking. The distinct texts are blocked against each other (each
text's ``k`` nearest others at or above ``threshold``), each candidate pair is verified by the LLM with the two texts
in a canonical order (the smaller first), so the journal holds one verdict for (a, b) and (b, a), and the matched
pairs are merged by union-find.

Transitive chaining (DocETL's ``resolve`` docs: A~B and B~C put A and C together though they may differ) is bounded:
pairs are merged most similar first, and a merge that would make a cluster of more than ``max_cluster_size``
distinct texts is not made; each row of a cluster that refused a merge says so in ``cluster_note``. A cluster's id
is the hash of its smallest text, so it does not depend on row order or on the run (a new row that becomes the
cluster's smallest text changes it).
"""

from __future__ import annotations

import hashlib
from typing import Unpack

import pyarrow as pa

from ai_assets.functions.cascade import Cascade
from ai_assets.functions.semantic.blocking import check_floor, check_k, embedding_run, exact_pairs, side_vectors
from ai_assets.functions.semantic.join import (
    MAX_TEXT_CHARS,
    VERDICT,
    Paired,
    check_limit,
    count_unembedded,
    cut_text,
    verify,
)
from ai_assets.functions.templates import column_texts
from ai_assets.providers.protocols import Prompter, RemoteTextEmbedder, TextEmbedder
from ai_assets.runtime.columns import error_column
from ai_assets.runtime.errors import ConfigError
from ai_assets.runtime.run import RunArgs

DEDUP_SYSTEM = ("You decide whether two records, A and B, describe the same real-world entity. {condition}\n"
                "Answer match=true only if they do; confidence is your probability that your answer is right.")
SAME_ENTITY = "Spelling variants, typos, abbreviations and legal suffixes do not make entities different."
MAX_CLUSTER_SIZE = 50


def semantic_dedup(
    table: pa.Table,
    column: str,
    *,
    provider: Prompter,
    embedder: TextEmbedder | RemoteTextEmbedder | None = None,
    k: int = 5,
    threshold: float | None = 0.5,
    vector_column: str | None = None,
    condition: str = SAME_ENTITY,
    max_cluster_size: int = MAX_CLUSTER_SIZE,
    max_text_chars: int = MAX_TEXT_CHARS,
    cascade: Cascade | None = None,
    **run: Unpack[RunArgs],
) -> Paired:
    """``table`` with ``cluster_id``, ``cluster_size`` (rows), ``cluster_note`` and ``cluster_error``: rows the LLM
    ``provider`` judges to be the same entity (``column``'s text) share a cluster id.

    Candidates: for each distinct text, the ``k`` most similar others (``embedder``'s vectors, or those in
    ``vector_column``) with a cosine similarity of at least ``threshold``. A row with no text has no cluster and
    says why in ``cluster_error``; a failed verdict leaves its pair apart and names itself in the error of both rows
    (the next run sends only the failed pairs). ``condition`` tells the verifier what makes two records the same.
    """
    check_floor(threshold, "threshold")
    check_k(k)
    check_limit(max_text_chars)
    check_cluster_size(max_cluster_size)
    column_texts(table.slice(0, 0), column)  # a column of text, or an error naming it before anything is sent
    if vector_column is not None:
        texts, distinct, side_input = _with_vectors(table, column, vector_column)
    else:
        texts = table.column(column).to_pylist()
        distinct = sorted({t for t in texts if isinstance(t, str) and t.strip()})
        side_input = pa.table({column: pa.array(distinct, pa.string())})
    embed_run = embedding_run(run)
    side = side_vectors(side_input, column, embedder=embedder, vector_column=vector_column, **embed_run)
    blocked = exact_pairs(side, side, k, threshold, exclude_self=True)
    best: dict[tuple[int, int], float] = {}
    for i, j, s in zip(blocked.left.tolist(), blocked.right.tolist(), blocked.similarity.tolist(), strict=True):
        pair = (min(i, j), max(i, j))  # distinct is sorted: the smaller text first, (a, b) == (b, a)
        best[pair] = max(s, best.get(pair, -1.0))
    pairs = sorted(best)
    a: list[str | None] = []
    b: list[str | None] = []
    notes: list[str | None] = []
    for i, j in pairs:
        a_text, a_note = cut_text(distinct[i], max_text_chars)
        b_text, b_note = cut_text(distinct[j], max_text_chars)
        a.append(a_text)
        b.append(b_text)
        notes.append("; ".join(f"text {n}" for n in (a_note, b_note) if n) or None)
    verified = verify(a, b, notes, condition, DEDUP_SYSTEM, provider=provider, cascade=cascade, run=run)
    verdicts = verified.table.column(VERDICT).to_pylist()
    errors = verified.table.column(error_column(VERDICT)).to_pylist()
    matched = [(best[p], p) for p, v in zip(pairs, verdicts, strict=True) if v is not None and v["match"]]
    clusters = _Clusters(len(distinct), max_cluster_size)
    for _, (i, j) in sorted(matched, key=lambda item: (-item[0], item[1])):  # most similar first
        clusters.union(i, j)
    failed: dict[int, list[str]] = {}
    for (i, j), error in zip(pairs, errors, strict=True):
        if error is not None:
            for one, other in ((i, j), (j, i)):
                failed.setdefault(one, []).append(f"verdict with {distinct[other][:60]!r} failed: {error}")
    count_unembedded(verified.usage, side.usage)
    out = _assign(texts, distinct, side.errors, clusters, failed, column)
    for name, values in out.items():
        table = table.append_column(name, values)
    return Paired(table, verified.usage, verified.failed, len(pairs), len(distinct) * (len(distinct) - 1) // 2, k,
                  side.usage)


def check_cluster_size(max_cluster_size: int) -> None:
    if isinstance(max_cluster_size, bool) or not isinstance(max_cluster_size, int) or max_cluster_size < 2:
        raise ConfigError(f"max_cluster_size={max_cluster_size!r}: give an int >= 2")


def _with_vectors(table: pa.Table, column: str, vector_column: str) -> tuple[list[str | None], list[str], pa.Table]:
    """With vectors given per row: the first row of each distinct text carries its vector."""
    texts = table.column(column).to_pylist()
    first: dict[str, int] = {}
    for row, text in enumerate(texts):
        if isinstance(text, str) and text.strip():
            first.setdefault(text, row)
    distinct = sorted(first)
    rows = table.select([column, vector_column]).take(pa.array([first[t] for t in distinct], pa.int64()))
    return texts, distinct, rows


class _Clusters:
    """Union-find over distinct texts, with a bound on a cluster's size."""

    def __init__(self, n: int, most: int) -> None:
        self.parent = list(range(n))
        self.size = [1] * n
        self.most = most
        self.refused: set[int] = set()

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        a, b = self.find(i), self.find(j)
        if a == b:
            return
        if self.size[a] + self.size[b] > self.most:
            self.refused.update((a, b))
            return
        a, b = min(a, b), max(a, b)
        self.parent[b] = a
        self.size[a] += self.size[b]
        if b in self.refused:
            self.refused.add(a)


def _assign(texts: list[str | None], distinct: list[str], side_errors: list[str | None], clusters: _Clusters,
            failed: dict[int, list[str]], column: str) -> dict[str, pa.Array]:
    index = {text: i for i, text in enumerate(distinct)}
    roots = [clusters.find(i) for i in range(len(distinct))]
    smallest: dict[int, str] = {}
    for i, root in enumerate(roots):  # distinct is sorted: the first text seen of a root is its smallest
        smallest.setdefault(root, distinct[i])
    rows_of: dict[int, int] = {}
    for text in texts:
        if isinstance(text, str) and text in index:
            root = roots[index[text]]
            rows_of[root] = rows_of.get(root, 0) + 1
    ids: list[str | None] = []
    sizes: list[int | None] = []
    notes: list[str | None] = []
    errors: list[str | None] = []
    for row, text in enumerate(texts):
        at = index.get(text) if isinstance(text, str) else None
        problem = None if at is None else side_errors[at]
        if at is None or problem is not None:
            ids.append(None)
            sizes.append(None)
            notes.append(None)
            errors.append(f"row {row}: {problem or f'no text in {column!r}'}")
            continue
        cluster = roots[at]
        ids.append(hashlib.sha256(smallest[cluster].encode()).hexdigest()[:16])
        sizes.append(rows_of[cluster])
        notes.append(f"a merge was refused: the cluster would exceed {clusters.most} distinct texts"
                     if cluster in clusters.refused else None)
        errors.append("; ".join(failed[at][:3]) + (f" (+{len(failed[at]) - 3} more)" if len(failed[at]) > 3
                                                   else "") if at in failed else None)
    return {"cluster_id": pa.array(ids, pa.string()), "cluster_size": pa.array(sizes, pa.int64()),
            "cluster_note": pa.array(notes, pa.string()), "cluster_error": pa.array(errors, pa.string())}
