"""semantic_aggregate and semantic_filter, hostile inputs and incremental re-runs, against the deterministic judge
(tests/semantic_rows_judge.py) and the fake OpenAI server with a seeded noisy cheap model."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pyarrow as pa

from ai_assets.functions.cascade import Cascade
from ai_assets.functions.semantic.aggregate import semantic_aggregate
from ai_assets.functions.semantic.filter import semantic_filter
from ai_assets.providers.openai_compatible import OpenAICompatibleProvider
from ai_assets.runtime.cache.sqlite import ResultCache
from ai_assets.runtime.guarantees import Recall
from ai_assets.runtime.usage import Prices
from ai_assets.testing import FakeOpenAIServer, Noise
from tests.semantic_rows_judge import Judge
from tests.test_semantic_rows import FAST, llm

ROWS = replace(FAST, on_error="null")  # a failed row is that row's error (the default, "raise", fails the call)


def entries(n: int, start: int = 0) -> pa.Table:
    return pa.table({"text": [f"entry {i}: value={i + 1} " + "x" * 40 for i in range(start, start + n)]})


def test_aggregate_after_appending_rows_pays_about_one_request_per_level(judge: Judge, tmp_path: Path) -> None:
    """Rows packed in order: rows appended at the end change only the last group of each level, so the re-run
    pays for those and the journal answers every other group."""
    journal = ResultCache(tmp_path / "journal.sqlite")
    old = entries(300)
    first = semantic_aggregate(old, "text", "Sum the values.", provider=llm(judge), max_input_tokens=400,
                               cache=journal, options=FAST)
    paid = judge.requests
    both = pa.concat_tables([old, entries(5, start=300)])
    out = semantic_aggregate(both, "text", "Sum the values.", provider=llm(judge), max_input_tokens=400,
                             cache=ResultCache(journal.path), options=FAST)
    assert out.table.column("aggregate")[0].as_py() == f"value={sum(range(1, 306))}"
    levels = out.table.column("aggregate_levels")[0].as_py()
    assert judge.requests - paid <= levels + 1 < paid, (judge.requests - paid, levels, paid)
    assert first.table.column("aggregate_levels")[0].as_py() >= 2


def test_aggregate_empty_null_nan_and_huge(judge: Judge) -> None:
    """SQL's aggregates skip NULLs (and pandas' skip NaN): rows without text are left out and named; an empty
    partition gives a null answer that says why (SQL: an aggregate over no rows is NULL). A huge row is cut to
    fit a request, and the output names it."""
    empty = semantic_aggregate(entries(0), "text", "Sum.", provider=llm(judge), options=FAST)
    row = empty.table.to_pylist()[0]
    assert row["aggregate"] is None and "no rows" in row["aggregate_error"] and judge.requests == 0
    texts = entries(6).column("text").to_pylist()
    texts[1], texts[2] = None, ""
    texts[3] = "value=4 " + "y" * 1_000_000
    out = semantic_aggregate(pa.table({"text": texts}), "text", "Sum.", provider=llm(judge),
                             max_input_tokens=500, options=FAST)
    row = out.table.to_pylist()[0]
    assert row["aggregate"] == f"value={1 + 4 + 5 + 6}"
    assert row["aggregate_cut_rows"] == [3] and "row 3 cut" in row["aggregate_error"]
    assert "rows 1, 2 without text" in row["aggregate_error"] and row["aggregate_rows"] == 4
    assert max(len(q) for q in judge.questions) <= 500 * 4 + 200
    numbers = semantic_aggregate(pa.table({"v": [1.0, float("nan"), None]}), "v", "Sum.", provider=llm(judge),
                                 options=FAST)
    assert numbers.table.column("aggregate_rows")[0].as_py() == 1


def test_aggregate_provider_down_mid_way_names_the_failed_rows(judge: Judge, tmp_path: Path) -> None:
    """OpenAI's 503 after 3 requests: the groups that failed name their rows (an error, and dead letters), the
    answer covers the others; the re-run once the provider is back pays only for what failed."""
    journal = ResultCache(tmp_path / "journal.sqlite")
    judge.down_after = 3
    out = semantic_aggregate(entries(100), "text", "Sum.", provider=llm(judge), max_input_tokens=400,
                             cache=journal, options=FAST)
    row = out.table.to_pylist()[0]
    assert row["aggregate_failed_rows"] and "not in the answer" in row["aggregate_error"]
    assert len(out.failed.table()) == len(row["aggregate_failed_rows"])
    assert row["aggregate_rows"] == (100 - len(row["aggregate_failed_rows"]) if row["aggregate"] else 0)
    answered = sum(judge.answered.values())
    judge.down, judge.down_after = False, None
    again = semantic_aggregate(entries(100), "text", "Sum.", provider=llm(judge), max_input_tokens=400,
                               cache=ResultCache(journal.path), options=FAST)
    assert again.table.column("aggregate")[0].as_py() == f"value={sum(range(1, 101))}"
    assert again.usage.cache_hits >= answered


def scored(n: int) -> pa.Table:
    return pa.table({"id": list(range(n)), "text": [f"item {i}: score={(i * 37) % 100}" for i in range(n)]})


def test_filter_keeps_passing_rows_and_never_drops_a_failed_one(judge: Judge, tmp_path: Path) -> None:
    """LOTUS sem_filter: the rows that pass; a row without a verdict (null text, a malformed answer) stays with
    its error, as a dead letter too; drop=False is LOTUS's return_all. A re-run pays nothing."""
    table = scored(40)
    texts = table.column("text").to_pylist()
    texts[5], texts[6] = None, texts[6] + " MALFORMED"
    table = table.set_column(1, "text", pa.array(texts))
    journal = ResultCache(tmp_path / "journal.sqlite")
    out = semantic_filter(table, "text", "the score is over 50", provider=llm(judge), cache=journal,
                          options=ROWS)
    assert isinstance(out.table, pa.Table)
    rows = {r["id"]: r for r in out.table.to_pylist()}
    passing = {i for i in range(40) if (i * 37) % 100 > 50 and i not in (5, 6)}
    assert {i for i, r in rows.items() if r["keep"]} == passing
    assert set(rows) == passing | {5, 6}
    assert rows[5]["keep"] is None and rows[5]["keep_error"]
    assert rows[6]["keep"] is None and rows[6]["keep_error"]
    paid = judge.requests
    every = semantic_filter(table, "text", "the score is over 50", provider=llm(judge), drop=False,
                            cache=ResultCache(journal.path), options=ROWS)
    assert every.table.num_rows == 40 and judge.requests == paid + 2 * 1  # only the malformed row, retried


def test_filter_stream_and_template(judge: Judge) -> None:
    """A stream in, a stream out (window by window), and a template over several columns."""
    table = scored(20).append_column("title", pa.array([f"t{i}" for i in range(20)]))
    out = semantic_filter(table.to_reader(max_chunksize=7), "{title}: {text}", "the score is over 50",
                          provider=llm(judge), options=FAST)
    kept = out.read_all()
    assert sorted(kept.column("id").to_pylist()) == [i for i in range(20) if (i * 37) % 100 > 50]


def test_filter_through_a_certified_cascade(tmp_path: Path) -> None:
    """A certified cascade (SUPG / BARGAIN: recall guaranteed with probability 1 - delta): the cheap model, wrong
    on about 10% of rows (seeded noise with a calibrated confidence), answers every row; the oracle labels a
    sample and the rows under the learned threshold. Recall against the oracle's verdicts holds the target."""
    with FakeOpenAIServer() as server:
        server.set_noise(Noise(model="cheap", label="keep", rate=0.1, seed=3))
        provider = OpenAICompatibleProvider("big", base_url=server.base_url, api_key="unused")
        table = pa.table({"id": list(range(1000)), "text": [f"review {i}" for i in range(1000)]})
        prices = {"cheap": Prices(0.1, 0.1), "big": Prices(5.0, 5.0)}
        cascade = Cascade(["cheap", "big"], target=Recall(0.9), label_field="keep", confidence_field="confidence",
                          label_budget=200, prices=prices)
        out = semantic_filter(table, "text", "the review is positive", provider=provider, cascade=cascade,
                              drop=False, cache=ResultCache(tmp_path / "j.sqlite"))
        truth = semantic_filter(table, "text", "the review is positive", provider=provider, drop=False,
                                model="big", cascade=None)
    assert isinstance(out.table, pa.Table) and isinstance(truth.table, pa.Table)
    assert "keep_model" in out.table.schema.names
    oracle = truth.table.column("keep").to_pylist()
    got = out.table.column("keep").to_pylist()
    positives = [i for i, v in enumerate(oracle) if v]
    recall = sum(bool(got[i]) for i in positives) / len(positives)
    assert recall >= 0.9, recall
    assert out.usage.certificate is not None
    assert out.usage.certificate.oracle_rows < 1000  # the cheap model kept the rest
