"""Properties of the semantic row operators, drawn by hypothesis: the aggregate's packing (bounded groups, row order
kept, appended rows touching only the last group, two bounded texts always fitting one request) and top-k equal to
brute force for any scores and any k against an exact judge."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ai_assets.functions.semantic.aggregate import _Part, half_budget, pack
from ai_assets.functions.semantic.top_k import semantic_top_k
from ai_assets.runtime.tokens import text_tokens
from tests.semantic_rows_judge import Judge
from tests.test_semantic_rows import FAST, llm

texts = st.lists(st.text(min_size=1, max_size=400), max_size=60)


@given(texts, st.integers(64, 2000))
def test_pack_keeps_order_and_bounds_groups(rows: list[str], budget: int) -> None:
    """Greedy packing in row order (DocETL's and LOTUS's batching by a token budget): every group of two or more
    parts fits the budget, and the groups read back are the rows in order."""
    parts = [_Part(t, (i,)) for i, t in enumerate(rows)]
    groups = pack(parts, budget)
    assert [p for g in groups for p in g] == parts
    for group in groups:
        assert len(group) == 1 or sum(text_tokens(p.text) + 4 for p in group) <= budget


@given(texts, texts, st.integers(64, 2000))
def test_appending_rows_changes_only_the_last_group(old: list[str], new: list[str], budget: int) -> None:
    """The incremental promise: rows appended to a partition leave every group but the last as it was, so the
    journal answers them."""
    before = pack([_Part(t, (i,)) for i, t in enumerate(old)], budget)
    after = pack([_Part(t, (i,)) for i, t in enumerate(old + new)], budget)
    assert after[:max(0, len(before) - 1)] == before[:-1]


@given(st.integers(64, 5000))
def test_two_bounded_texts_fit_one_request(budget: int) -> None:
    """A row or partial answer cut to ``half_budget`` fits a request with another as long, so each fold level at
    least halves the partial answers and the fold ends within log2(rows) levels."""
    text = "x" * half_budget(budget)
    assert len(pack([_Part(text, (0,)), _Part(text, (1,))], budget)) == 1


@pytest.fixture(scope="module")
def judge() -> Iterator[Judge]:
    server = Judge().start()
    yield server
    server.stop()


@settings(max_examples=25, deadline=None)
@given(scores=st.lists(st.integers(0, 10_000), unique=True, max_size=30), k=st.integers(0, 35))
def test_top_k_is_the_brute_force_top_k_for_any_scores_and_k(judge: Judge, scores: list[int], k: int) -> None:
    """With an exact judge the quickselect returns exactly pandas' ``nlargest(k)`` order, for any k (0, over the
    rows) and any table (empty included)."""
    table = pa.table({"id": list(range(len(scores))),
                      "text": [f"doc {i}: score={s / 100:.2f}" for i, s in enumerate(scores)]})
    out = semantic_top_k(table, "text", "highest?", k, provider=llm(judge), options=FAST)
    expected = sorted(range(len(scores)), key=lambda i: -scores[i])[:k]
    assert out.table.column("id").to_pylist() == expected
    assert out.table.column("rank").to_pylist() == list(range(1, len(expected) + 1))


def test_a_wrong_column_or_type_is_an_error_naming_it(judge: Judge) -> None:
    """A column that is not there, or holds no text (a list), is a ConfigError naming the column and its type,
    before anything is sent."""
    from ai_assets.functions.semantic.aggregate import semantic_aggregate
    from ai_assets.runtime.errors import ConfigError

    before = judge.requests
    with pytest.raises(ConfigError, match="no column 'body'"):
        semantic_top_k(pa.table({"text": ["a"]}), "body", "q?", 1, provider=llm(judge))
    with pytest.raises(ConfigError, match="column 'tags' is list<item: string>, not text"):
        semantic_aggregate(pa.table({"tags": [["a"], ["b"]]}), "tags", "Sum.", provider=llm(judge))
    assert judge.requests == before
