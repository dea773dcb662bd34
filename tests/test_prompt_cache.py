"""Prompt-cache-aware sending: a window's rows go out grouped by their prompt prefix, with OpenAI's
``prompt_cache_key`` where the endpoint takes it, and cached tokens are counted and priced at the cached rate.
The fake server reports ``cached_tokens`` from an LRU of recent prefixes, so the order really changes the figure."""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
from pydantic import BaseModel

from ai_assets import OpenAICompatibleProvider, Prices, RunOptions, prompt
from ai_assets.runtime.cache.sqlite import ResultCache
from ai_assets.testing import FakeOpenAIServer

GROUPS, PER_GROUP = 20, 100
PRICES = Prices(1.0, 2.0, cached_input_per_million=0.1)


def shuffled_rows() -> pa.Table:
    """2,000 questions over 20 documents of ~1,300 tokens each, in random order."""
    rng = random.Random(7)
    documents = [f"Document {g}. " + " ".join(f"w{g}x{i}" for i in range(800)) for g in range(GROUPS)]
    rows = [(documents[g], f"question {q} about document {g}?") for g in range(GROUPS) for q in range(PER_GROUP)]
    rng.shuffle(rows)
    return pa.table({"doc": [r[0] for r in rows], "question": [r[1] for r in rows]})


def provider(server: FakeOpenAIServer, *, cache_key: bool | None = None) -> OpenAICompatibleProvider:
    return OpenAICompatibleProvider("fake-model", base_url=server.base_url, api_key="k", prompt_cache_key=cache_key)


def test_sending_grouped_by_prefix_doubles_the_cached_share_and_lowers_the_cost(server: FakeOpenAIServer) -> None:
    table = shuffled_rows()
    runs = {}
    for ordered in (False, True):
        server.reset()
        out = prompt(table, "{doc}\n\nQuestion: {question}", provider=provider(server), prices=PRICES,
                     options=RunOptions(order_by_prefix=ordered))
        assert out.usage.sent_rows == GROUPS * PER_GROUP
        assert out.usage.cached_tokens == server.stats().cached_tokens  # counted from every answer's usage
        runs[ordered] = out.usage
    share = {k: u.cached_tokens / u.prompt_tokens for k, u in runs.items()}
    print(f"cached share: shuffled {share[False]:.3f}, grouped {share[True]:.3f} "
          f"({share[True] / share[False]:.1f}x); cost {runs[False].cost(PRICES):.4f} -> {runs[True].cost(PRICES):.4f}")
    assert share[True] >= 2 * share[False]
    assert share[True] > 0.85  # all but the first request of each group (and the varying question) from cache
    assert runs[True].prompt_tokens == runs[False].prompt_tokens
    uncached = Prices(1.0, 2.0)
    assert runs[True].cost(PRICES) < runs[False].cost(PRICES) < runs[False].cost(uncached)
    expected = (runs[True].cost(uncached) - runs[True].cached_tokens * (1.0 - 0.1) / 1e6)
    assert abs(runs[True].cost(PRICES) - expected) < 1e-9  # the cached tokens at the cached rate, the rest full


def test_prompt_cache_key_goes_on_the_wire_per_prefix_group_and_not_into_the_journal(
        server: FakeOpenAIServer, tmp_path: Path) -> None:
    table = shuffled_rows().slice(0, 300)
    docs = set(table.column("doc").to_pylist())
    journal = ResultCache(tmp_path / "journal.sqlite")
    keyed = prompt(table, "{doc}\n\nQuestion: {question}", provider=provider(server, cache_key=True), cache=journal)
    keys = server.stats().prompt_cache_keys
    assert len(keys) == len(docs) and sum(keys.values()) == 300  # one key per document, on every request
    assert all(k.startswith("ai_assets-") for k in keys)
    server.reset()
    plain = prompt(table, "{doc}\n\nQuestion: {question}", provider=provider(server), cache=journal)
    assert server.stats().chat_requests == 0 and plain.usage.cache_hits == 300  # same journal keys: paid once
    assert plain.table.column("response").to_pylist() == keyed.table.column("response").to_pylist()
    prompt(table.slice(0, 5), "{doc}: {question}", provider=provider(server))  # not OpenAI: no key by default
    assert server.stats().prompt_cache_keys == {}
    assert OpenAICompatibleProvider("gpt-4o-mini", api_key="k").takes_prompt_cache_key  # OpenAI itself: sent


def test_output_keeps_input_order_when_sending_is_regrouped(server: FakeOpenAIServer) -> None:
    class Answer(BaseModel):
        score: int  # the fake fills it from a hash of the whole prompt: every row's answer is its own

    table = shuffled_rows().slice(0, 200)
    template = "{doc}\n\nQuestion: {question}"
    grouped = prompt(table, template, provider=provider(server), return_format=Answer).table
    server.reset()
    in_order = prompt(table, template, provider=provider(server), return_format=Answer,
                      options=RunOptions(order_by_prefix=False)).table
    assert len({r["score"] for r in grouped.column("response").to_pylist()}) > 50
    assert grouped.equals(in_order)


def test_an_estimate_prices_the_cached_prefixes(tmp_path: Path) -> None:
    """``mode="estimate"`` expects every request of a prefix group but the first to be served the prefix from
    cache (OpenAI's steps: 1,024 tokens, then 128 more), and prices it at the cached rate."""
    table = shuffled_rows()
    llm = OpenAICompatibleProvider("fake-model", base_url="http://127.0.0.1:9/v1", api_key="k")
    estimate = prompt(table, "{doc}\n\nQuestion: {question}", provider=llm, prices=PRICES,
                      options=RunOptions(mode="estimate"))
    usage = estimate.usage
    assert usage.requests == GROUPS * PER_GROUP
    per_row = usage.cached_tokens / (GROUPS * (PER_GROUP - 1))
    assert per_row >= 1024 and (per_row - 1024) % 128 == 0
    unordered = prompt(table, "{doc}\n\nQuestion: {question}", provider=llm, prices=PRICES,
                       options=RunOptions(mode="estimate", order_by_prefix=False)).usage
    assert unordered.cached_tokens == 0 and usage.cost(PRICES) < unordered.cost(PRICES)
