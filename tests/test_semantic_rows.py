"""semantic_top_k, semantic_aggregate and semantic_filter as plain functions, against a deterministic judge (see
tests/semantic_rows_judge.py) and the fake OpenAI server, with a real SQLite journal: the truth is known, so the
answers are checked against brute force, and requests are counted on the server."""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
import pytest

from ai_assets.functions.semantic.aggregate import semantic_aggregate
from ai_assets.functions.semantic.top_k import semantic_top_k
from ai_assets.providers.openai_compatible import OpenAICompatibleProvider
from ai_assets.runtime.cache.sqlite import ResultCache
from ai_assets.runtime.engine import RunOptions
from ai_assets.runtime.retry import RetryPolicy
from tests.semantic_rows_judge import Judge

FAST = RunOptions(concurrency=8, retry=RetryPolicy(max_attempts=2, base_wait=0.0, max_wait=0.0))


def llm(judge: Judge) -> OpenAICompatibleProvider:
    return OpenAICompatibleProvider("judge", base_url=judge.base_url, api_key="unused")


def documents(n: int, seed: int = 0, start: int = 0) -> pa.Table:
    """``n`` documents with distinct known scores (the truth a brute-force ranking reads)."""
    rng = random.Random(seed)
    scores = rng.sample(range(100_000), n)
    return pa.table({"id": list(range(start, start + n)),
                     "text": [f"doc {start + i}: score={s / 1000:.3f} filler {rng.random():.6f}"
                              for i, s in enumerate(scores)],
                     "score": [s / 1000 for s in scores]})


def truth(table: pa.Table, k: int) -> list[int]:
    order = sorted(zip(table.column("score").to_pylist(), table.column("id").to_pylist(), strict=True),
                   reverse=True)
    return [i for _, i in order[:k]]


def test_top_k_matches_brute_force_and_a_rerun_pays_nothing(judge: Judge, tmp_path: Path) -> None:
    """LOTUS sem_topk's quickselect with a judge that is right about every pair finds exactly the brute-force
    top k, in order; the same call again is answered by the journal (0 requests reach the server)."""
    table = documents(60, seed=1)
    journal = ResultCache(tmp_path / "journal.sqlite")
    out = semantic_top_k(table, "text", "Which document has the highest score?", 5, provider=llm(judge),
                         cache=journal, options=FAST)
    assert out.table.column("id").to_pylist() == truth(table, 5)
    assert out.table.column("rank").to_pylist() == [1, 2, 3, 4, 5]
    first = judge.requests
    assert 0 < first < 60 * 59 / 2 / 4  # quickselect: far fewer than all pairs
    again = semantic_top_k(table, "text", "Which document has the highest score?", 5, provider=llm(judge),
                           cache=ResultCache(journal.path), options=FAST)
    assert judge.requests == first
    assert again.table.equals(out.table)
    assert again.usage.cache_hits == first


def test_aggregate_folds_over_levels_and_a_rerun_pays_nothing(judge: Judge, tmp_path: Path) -> None:
    """LOTUS sem_agg's hierarchical fold: more rows than fit one request fold over more than one level, and the
    folded partial sums give the total; a re-run is answered by the journal."""
    values = list(range(1, 201))
    table = pa.table({"text": [f"entry {i}: value={v} " + "x" * 40 for i, v in enumerate(values)]})
    journal = ResultCache(tmp_path / "journal.sqlite")
    out = semantic_aggregate(table, "text", "Sum the values.", provider=llm(judge), max_input_tokens=400,
                             cache=journal, options=FAST)
    row = out.table.to_pylist()[0]
    assert row["aggregate"] == f"value={sum(values)}"
    assert row["aggregate_levels"] > 1 and row["aggregate_rows"] == 200 and row["aggregate_error"] is None
    first = judge.requests
    semantic_aggregate(table, "text", "Sum the values.", provider=llm(judge), max_input_tokens=400,
                       cache=ResultCache(journal.path), options=FAST)
    assert judge.requests == first


def test_top_k_after_adding_rows_pays_only_for_comparisons_with_new_rows_or_new_pivots(judge: Judge,
                                                                                        tmp_path: Path) -> None:
    """A partition's rows plus new ones: the comparisons already journalled (same pair, same query) are free; the
    new requests each involve a new row, or an old pair under a new pivot (the figure is in docs/semantic.md)."""
    old, new = documents(200, seed=2), documents(20, seed=3, start=200)
    journal = ResultCache(tmp_path / "journal.sqlite")
    query = "Which document has the highest score?"
    semantic_top_k(old, "text", query, 10, provider=llm(judge), cache=journal, options=FAST)
    first = judge.requests
    seen = set(judge.questions)
    both = pa.concat_tables([old, new])
    out = semantic_top_k(both, "text", query, 10, provider=llm(judge), cache=ResultCache(journal.path),
                         options=FAST)
    assert out.table.column("id").to_pylist() == truth(both, 10)
    paid = judge.questions[len(seen):]
    assert not set(paid) & seen  # nothing asked twice
    fresh = sum(any(f"doc {i}:" in q for i in range(200, 220)) for q in paid)
    assert len(paid) < first / 2, (len(paid), first)
    assert fresh >= len(paid) / 2, (fresh, len(paid))


@pytest.mark.parametrize("noise", [2.0, 10.0])
def test_top_k_with_a_noisy_judge_keeps_most_of_the_true_top_k(noise: float) -> None:
    """A judge that perceives each score with a fixed error (up to ``noise`` on a 0-100 scale, as LLM rankers are
    consistent but imperfect) still finds most of the true top 10: recall against brute force."""
    server = Judge(noise=noise).start()
    try:
        table = documents(150, seed=4)
        out = semantic_top_k(table, "text", "Which document has the highest score?", 10, provider=llm(server),
                             options=FAST)
    finally:
        server.stop()
    found = set(out.table.column("id").to_pylist())
    assert len(found & set(truth(table, 10))) >= 7


def test_top_k_edges_empty_k_zero_k_over_rows(judge: Judge) -> None:
    """pandas ``nlargest`` and SQL ``LIMIT``: k = 0 gives no rows (and asks nothing), k over the rows gives them
    all, ranked; an empty partition gives an empty table with the rank columns."""
    table = documents(6, seed=5)
    zero = semantic_top_k(table, "text", "best?", 0, provider=llm(judge), options=FAST)
    assert zero.table.num_rows == 0 and "rank" in zero.table.schema.names and judge.requests == 0
    every = semantic_top_k(table, "text", "best?", 50, provider=llm(judge), options=FAST)
    assert every.table.column("id").to_pylist() == truth(table, 6)
    empty = semantic_top_k(table.slice(0, 0), "text", "best?", 3, provider=llm(judge), options=FAST)
    assert empty.table.num_rows == 0 and empty.table.schema.names[-3:] == ["rank", "rank_error", "rank_cut"]
    with pytest.raises(Exception, match="k must be an int >= 0"):
        semantic_top_k(table, "text", "best?", -1, provider=llm(judge))


def test_top_k_null_nan_and_huge_rows(judge: Judge) -> None:
    """Arrow nulls and IEEE NaN are missing values (pandas' ``isna``): never compared, each its row's error. A
    huge text is cut to ``max_chars`` before it is sent (the request stays bounded) and ``rank_cut`` says so."""
    table = documents(8, seed=6)
    texts = table.column("text").to_pylist()
    texts[1], texts[2] = None, "   "
    texts[3] = texts[3] + " pad" * 200_000
    table = table.set_column(1, "text", pa.array(texts))
    out = semantic_top_k(table, "text", "best?", 8, provider=llm(judge), max_chars=1000, options=FAST)
    rows = {r["id"]: r for r in out.table.to_pylist()}
    assert rows[1]["rank"] is None and "no text" in rows[1]["rank_error"]
    assert rows[2]["rank"] is None
    assert rows[3]["rank_cut"] is True and rows[3]["rank"] is not None
    assert max(len(q) for q in judge.questions) < 2 * 1000 + 100
    assert len(out.failed.table()) == 2
    numbers = pa.table({"id": [0, 1, 2, 3], "score": [1.0, float("nan"), 3.0, None]})
    ranked = semantic_top_k(numbers, "score", "largest?", 2, provider=llm(judge), options=FAST)
    assert ranked.table.column("rank").to_pylist() == [1, 2, None, None]


def test_top_k_provider_down_mid_way_loses_nothing_paid(judge: Judge, tmp_path: Path) -> None:
    """OpenAI's 503 ("service unavailable", retry later) from the 30th request on: the rows whose comparisons
    failed are errors (not dropped, not ranked) that never show the key, the answers already paid for are in the
    journal, and the re-run once the provider is back pays only for what failed."""
    table = documents(80, seed=7)
    journal = ResultCache(tmp_path / "journal.sqlite")
    judge.down_after = 30
    secret = "sk-semantic-rows-secret-0123456789"
    keyed = OpenAICompatibleProvider("judge", base_url=judge.base_url, api_key=secret)
    out = semantic_top_k(table, "text", "best?", 5, provider=keyed, cache=journal, options=FAST)
    assert sum(v is None for v in out.table.column("rank").to_pylist()) > 0
    errors = out.table.column("rank_error").drop_null().to_pylist()
    assert errors and all("503" in e or "unavailable" in e for e in errors)
    assert not any(secret[:12] in e for e in [*errors, *map(str, out.failed.table().to_pylist())])
    answered = sum(judge.answered.values())
    judge.down, judge.down_after = False, None
    before = sum(judge.answered.values())
    again = semantic_top_k(table, "text", "best?", 5, provider=llm(judge), cache=ResultCache(journal.path),
                           options=FAST)
    assert again.table.column("id").to_pylist() == truth(table, 5)
    assert again.usage.cache_hits >= answered
    assert sum(judge.answered.values()) - before < len(set(judge.questions))


def test_top_k_malformed_answer_is_the_row_s_error(judge: Judge) -> None:
    """An answer that is no verdict (not JSON after the re-asks: OpenAI documents that JSON mode without a strict
    schema can give output that does not parse) fails that comparison: its row is an error, the others are still
    ranked in the true order (when the bad row is a pivot, the part is ranked again around another)."""
    table = documents(12, seed=8)
    texts = table.column("text").to_pylist()
    texts[4] = texts[4] + " MALFORMED"
    table = table.set_column(1, "text", pa.array(texts))
    out = semantic_top_k(table, "text", "best?", 12, provider=llm(judge), options=FAST)
    rows = {r["id"]: r for r in out.table.to_pylist()}
    assert rows[4]["rank"] is None and "failed" in rows[4]["rank_error"]
    ranked = [i for i in out.table.column("id").to_pylist() if rows[i]["rank"] is not None]
    assert ranked == [i for i in truth(table, 12) if i in ranked]


def test_two_top_k_runs_at_once_agree(judge: Judge, tmp_path: Path) -> None:
    """Two runs of the same partition at once (a retry while the first still runs) over one journal: both give
    the true top k; SQLite's own locking keeps the journal whole."""
    from concurrent.futures import ThreadPoolExecutor

    table = documents(50, seed=9)
    path = tmp_path / "journal.sqlite"

    def one() -> list[int]:
        out = semantic_top_k(table, "text", "best?", 4, provider=llm(judge), cache=ResultCache(path), options=FAST)
        return list(out.table.column("id").to_pylist())

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: one(), range(2)))
    assert results[0] == results[1] == truth(table, 4)


def test_top_k_with_an_embedder_compares_only_the_candidates(judge: Judge) -> None:
    """LOTUS's quick-sem: embeddings first cut 500 rows to the 30 nearest the query, then only those are compared
    (about 2 x 30 comparisons, not 2 x 500); the top 5 is still the brute-force one."""
    table = documents(500, seed=10)
    provider = llm(judge)
    out = semantic_top_k(table, "text", "best?", 5, provider=provider, embedder=provider, candidates=30,
                         options=FAST)
    assert out.table.column("id").to_pylist() == truth(table, 5)
    assert judge.seen["compare"] < 3 * 30 and judge.seen["embed"] >= 1
