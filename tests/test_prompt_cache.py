"""Prompt-cache-aware sending: a window's rows go out grouped by their prompt prefix, one request per new prefix
first (its group follows once it is answered), with OpenAI's ``prompt_cache_key`` where the endpoint takes it, and
cached tokens are counted and priced at the cached rate.

The fake server models what real servers document (``ai_assets.testing.prefix_cache``): OpenAI reports
``cached_tokens`` from 1,024 tokens in steps of 128, and a prefix enters the cache once a request *has run*
(vLLM's automatic prefix caching, llama.cpp's slot cache), so requests of one prefix in flight together all miss.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from ai_assets import OpenAICompatibleProvider, Prices, RetryPolicy, RunOptions, Usage, prompt
from ai_assets.runtime.cache.sqlite import ResultCache
from ai_assets.runtime.prefix_gate import PrefixGate
from ai_assets.runtime.task import Prefix
from ai_assets.testing import FakeOpenAIServer, Fault

GROUPS, PER_GROUP = 20, 100
PRICES = Prices(1.0, 2.0, cached_input_per_million=0.1)
TEMPLATE = "{doc}\n\nQuestion: {question}"


def shuffled_rows(groups: int = GROUPS, per_group: int = PER_GROUP) -> pa.Table:
    """Questions over documents of ~1,300 tokens each, in random order."""
    rng = random.Random(7)
    documents = [f"Document {g}. " + " ".join(f"w{g}x{i}" for i in range(800)) for g in range(groups)]
    rows = [(documents[g], f"question {q} about document {g}?") for g in range(groups) for q in range(per_group)]
    rng.shuffle(rows)
    return pa.table({"doc": [r[0] for r in rows], "question": [r[1] for r in rows]})


def provider(server: FakeOpenAIServer, *, cache_key: bool | None = None) -> OpenAICompatibleProvider:
    return OpenAICompatibleProvider("fake-model", base_url=server.base_url, api_key="k", prompt_cache_key=cache_key)


def share(usage: Usage) -> float:
    return usage.cached_tokens / usage.prompt_tokens


def run(server: FakeOpenAIServer, table: pa.Table, **options: object) -> tuple[Usage, float]:
    server.reset()
    started = time.perf_counter()
    out = prompt(table, TEMPLATE, provider=provider(server), prices=PRICES, options=RunOptions(**options))  # type: ignore[arg-type]
    assert out.usage.sent_rows == table.num_rows
    assert out.usage.cached_tokens == server.stats().cached_tokens  # counted from every answer's usage
    return out.usage, time.perf_counter() - started


def test_on_a_cache_written_at_completion_ordering_reaches_the_best_share_and_beats_shuffled(
        server: FakeOpenAIServer) -> None:
    """The case that made grouping backfire (cached share 0.656 grouped, 0.938 shuffled): a large cache written
    when a request has run, 64 requests in flight, each taking 20 ms. The best possible share is that of rows
    sent one at a time (every row but the first of its prefix finds the prefix cached)."""
    table = shuffled_rows()
    server.set_prefix_cache(4096, write="completion")
    best, _ = run(server, table, concurrency=1)
    server.set_latency(0.02)
    shuffled, shuffled_s = run(server, table, order_by_prefix=False, concurrency=64)
    ordered, ordered_s = run(server, table, order_by_prefix=True, concurrency=64)
    print(f"cached share: best {share(best):.3f}, shuffled {share(shuffled):.3f} ({shuffled_s:.1f}s), "
          f"ordered {share(ordered):.3f} ({ordered_s:.1f}s)")
    assert server.stats().cached_tokens == ordered.cached_tokens
    assert share(ordered) >= 0.9 * share(best)
    assert share(ordered) >= share(shuffled)
    assert ordered.cost(PRICES) <= shuffled.cost(PRICES)
    # Wall time is compared in bench/bench_prompt_cache.py (a ratio in one run), not asserted here.


def test_every_row_but_each_prefix_s_first_finds_its_prefix_cached(server: FakeOpenAIServer) -> None:
    """Exactly the leaders miss: no row of a prefix is sent before the first of that prefix was answered, so 64 in
    flight across windows get the same cached tokens as rows sent one at a time."""
    table = shuffled_rows(groups=5, per_group=40)
    server.set_prefix_cache(4096, write="completion")
    one_at_a_time, _ = run(server, table, concurrency=1)
    server.set_latency(0.05)
    in_flight, _ = run(server, table, concurrency=64, window_rows=50)
    assert in_flight.cached_tokens == one_at_a_time.cached_tokens > 0


def test_a_small_shared_cache_keeps_only_grouped_prefixes(server: FakeOpenAIServer) -> None:
    """A provider cache that other traffic also uses evicts a prefix soon (an LRU of 8 blocks, ~2 prefixes):
    shuffled rows rarely find theirs, grouped rows do."""
    table = shuffled_rows(groups=20, per_group=30)
    server.set_prefix_cache(8, write="completion")
    server.set_latency(0.01)
    shuffled, _ = run(server, table, order_by_prefix=False, concurrency=16)
    ordered, _ = run(server, table, order_by_prefix=True, concurrency=16)
    print(f"small cache: shuffled {share(shuffled):.3f}, ordered {share(ordered):.3f}")
    assert share(ordered) >= 4 * share(shuffled)
    uncached = Prices(1.0, 2.0)
    assert ordered.cost(PRICES) < shuffled.cost(PRICES) < shuffled.cost(uncached)
    expected = ordered.cost(uncached) - ordered.cached_tokens * (1.0 - 0.1) / 1e6
    assert abs(ordered.cost(PRICES) - expected) < 1e-9  # the cached tokens at the cached rate, the rest full


def test_a_leader_that_hangs_holds_its_group_only_for_the_timeout(server: FakeOpenAIServer) -> None:
    """A prefix's first row that never answers (the fake holds it past the timeout, as a stuck upstream does)
    must not stall its group: the group goes after at most ``timeout_s``, the leader fails alone."""
    table = shuffled_rows(groups=2, per_group=10)
    first = table.column("question")[0].as_py()
    server.set_faults(Fault("timeout", match=first, attempts=None, delay=5.0))
    started = time.perf_counter()
    out = prompt(table, TEMPLATE, provider=provider(server),
                 options=RunOptions(timeout_s=1.0, on_error="null", retry=RetryPolicy(max_attempts=1)))
    elapsed = time.perf_counter() - started
    errors = [e for e in out.table.column("response_error").to_pylist() if e]
    assert len(errors) == 1 and "within 1s" in errors[0]
    assert out.usage.answered == 19 and elapsed < 4.0


def test_a_leader_that_fails_releases_its_group(server: FakeOpenAIServer) -> None:
    """A 400 for the prefix's first row (as OpenAI answers an invalid request) fails that row; the group goes on."""
    table = shuffled_rows(groups=2, per_group=10)
    first = table.column("question")[0].as_py()
    server.set_faults(Fault("400", match=first, attempts=None))
    out = prompt(table, TEMPLATE, provider=provider(server), options=RunOptions(on_error="null"))
    assert out.usage.answered == 19 and out.usage.errors == 1


@given(st.lists(st.integers(0, 3), max_size=40), st.lists(st.integers(0, 2000), min_size=4, max_size=4),
       st.sets(st.integers(0, 3)))
def test_the_gate_sends_every_row_once_with_one_leader_per_cold_prefix(
        rows: list[int], sizes: list[int], warm: set[int]) -> None:
    """One prefix (one text) has one token count: rows of a prefix are all held or all sent at once."""
    gate = PrefixGate()
    keys = [f"k{i}" for i in range(len(rows))]
    prefixes = {k: Prefix(f"p{g}", sizes[g]) for k, g in zip(keys, rows, strict=True)}
    gate._warm.update(f"p{g}" for g in warm)
    now, held = gate.split(keys, prefixes)
    sent = now + [k for group in held.values() for k in group]
    assert sorted(sent) == sorted(keys)
    for name, group in held.items():
        leaders = [k for k in now if prefixes[k].name == name]
        assert len(leaders) == 1 and keys.index(leaders[0]) < min(keys.index(k) for k in group)
        assert all(prefixes[k].tokens >= gate.min_tokens for k in group)
        assert name not in {f"p{g}" for g in warm}


def test_prompt_cache_key_goes_on_the_wire_per_prefix_group_and_not_into_the_journal(
        server: FakeOpenAIServer, tmp_path: Path) -> None:
    table = shuffled_rows().slice(0, 300)
    docs = set(table.column("doc").to_pylist())
    journal = ResultCache(tmp_path / "journal.sqlite")
    keyed = prompt(table, TEMPLATE, provider=provider(server, cache_key=True), cache=journal)
    keys = server.stats().prompt_cache_keys
    assert len(keys) == len(docs) and sum(keys.values()) == 300  # one key per document, on every request
    assert all(k.startswith("ai_assets-") for k in keys)
    server.reset()
    plain = prompt(table, TEMPLATE, provider=provider(server), cache=journal)
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
    estimate = prompt(table, TEMPLATE, provider=llm, prices=PRICES,
                      options=RunOptions(mode="estimate"))
    usage = estimate.usage
    assert usage.requests == GROUPS * PER_GROUP
    per_row = usage.cached_tokens / (GROUPS * (PER_GROUP - 1))
    assert per_row >= 1024 and (per_row - 1024) % 128 == 0
    unordered = prompt(table, TEMPLATE, provider=llm, prices=PRICES,
                       options=RunOptions(mode="estimate", order_by_prefix=False)).usage
    assert unordered.cached_tokens == 0 and usage.cost(PRICES) < unordered.cost(PRICES)
