"""Provider-neutral usage and prices: cache reads and writes and reasoning tokens kept apart and priced apart.

Documented behaviour modelled:

* Anthropic, Messages API ``usage`` and "Prompt caching" ("Tracking cache performance"): ``input_tokens`` counts
  only the tokens after the last cache breakpoint; ``cache_read_input_tokens`` and ``cache_creation_input_tokens``
  are reported beside it, and total input = the three added.
* Anthropic pricing ("Prompt caching" pricing table): a 5-minute cache write costs 1.25x the base input price, a
  cache read 0.1x.
* OpenAI, Chat Completions ``usage``: ``prompt_tokens`` *includes* ``prompt_tokens_details.cached_tokens``; there is
  no charge for writing the cache (figures unchanged by this work).
"""

from __future__ import annotations

import math

import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from ai_assets import OpenAICompatibleProvider, Prices, PromptParams, Usage, prompt
from ai_assets.runtime.errors import AttemptUsage
from ai_assets.runtime.prices import lookup
from ai_assets.testing import FakeOpenAIServer

tokens = st.integers(min_value=0, max_value=10**9)


def test_anthropic_usage_normalises_into_the_one_shape() -> None:
    """Anthropic's ``input_tokens`` excludes both cache parts: the neutral ``prompt_tokens`` adds them."""
    usage = AttemptUsage.billed_apart(21, 393, cache_read=2051, cache_write=0)
    assert (usage.prompt_tokens, usage.cached_tokens, usage.cache_write_tokens) == (2072, 2051, 0)
    assert usage.plain_input_tokens == 21
    first = AttemptUsage.billed_apart(21, 393, cache_write=2051, reasoning=50)
    assert (first.prompt_tokens, first.cache_write_tokens, first.plain_input_tokens) == (2072, 2051, 21)
    assert first.reasoning_tokens == 50 and first.completion_tokens == 393  # reasoning is inside output


def test_claude_prices_bill_cache_writes_at_125_and_reads_at_10_percent_of_input() -> None:
    prices = lookup("claude-sonnet-4-5-20250929")
    assert prices is not None
    assert (prices.input_per_million, prices.output_per_million) == (3.0, 15.0)
    assert (prices.cache_write_per_million, prices.cached_input_per_million) == (3.75, 0.3)
    # 1M plain + 1M written + 1M read input tokens, 1M output: 3 + 3.75 + 0.30 + 15
    assert math.isclose(prices.cost(3_000_000, 1_000_000, cached_tokens=1_000_000, cache_write_tokens=1_000_000),
                        22.05)
    usage = AttemptUsage.billed_apart(1_000_000, 1_000_000, cache_read=1_000_000, cache_write=1_000_000)
    assert math.isclose(prices.usage_cost(usage), 22.05)
    assert math.isclose(prices.usage_cost(usage, batch=True), 22.05 / 2)


@given(plain=tokens, read=tokens, write=tokens, out=tokens)
def test_each_input_part_is_priced_at_its_own_rate(plain: int, read: int, write: int, out: int) -> None:
    prices = Prices(3.0, 15.0, cached_input_per_million=0.3, cache_write_per_million=3.75)
    usage = AttemptUsage.billed_apart(plain, out, cache_read=read, cache_write=write)
    expected = (plain * 3.0 + read * 0.3 + write * 3.75 + out * 15.0) / 1e6
    assert math.isclose(prices.usage_cost(usage), expected, rel_tol=1e-9, abs_tol=1e-12)
    total = Usage()
    total.add_tokens(usage)
    total.add_tokens(usage)
    assert math.isclose(total.cost(prices), 2 * expected, rel_tol=1e-9, abs_tol=1e-12)
    summary = total.summary()
    assert (summary["cached_tokens"], summary["cache_write_tokens"]) == (2 * read, 2 * write)


@given(prompt=tokens, cached=tokens, out=tokens)
def test_openai_figures_are_unchanged(prompt: int, cached: int, out: int) -> None:
    """OpenAI's cached tokens are inside its prompt tokens and no write is billed: the formula from before."""
    prices = Prices(0.15, 0.60, cached_input_per_million=0.075)
    hit = min(cached, prompt)
    before = ((prompt - hit) * 0.15 + hit * 0.075 + out * 0.60) / 1e6
    assert math.isclose(prices.cost(prompt, out, cached_tokens=cached), before, rel_tol=1e-12, abs_tol=1e-15)
    assert math.isclose(prices.usage_cost(AttemptUsage(prompt, out, hit)), before, rel_tol=1e-12, abs_tol=1e-15)


def test_a_cache_write_price_left_unset_is_the_input_price() -> None:
    """Vendors that bill no write premium (OpenAI) need no new setting: a write costs what input costs."""
    prices = Prices(2.0, 8.0, cached_input_per_million=0.5)
    assert math.isclose(prices.cost(1_000_000, 0, cache_write_tokens=1_000_000), 2.0)
    nonsense = AttemptUsage(10, 0, cached_tokens=8, cache_write_tokens=8)  # more cache parts than input
    assert prices.usage_cost(nonsense) >= 0 and nonsense.plain_input_tokens == 0


def test_openai_reasoning_tokens_are_counted_inside_the_output(server: FakeOpenAIServer) -> None:
    """OpenAI's Responses API reports ``usage.output_tokens_details.reasoning_tokens`` (inside ``output_tokens``,
    billed as output); the neutral usage keeps them, the bill is unchanged."""
    table = pa.table({"text": ["a", "b", "c"]})
    provider = OpenAICompatibleProvider("o4-mini", base_url=server.base_url, api_key="sk-test", api="responses")
    out = prompt(table, "{text}", provider=provider, params=PromptParams(reasoning={"effort": "low"}))
    assert out.usage.reasoning_tokens == 3 * 8  # the fake reasons 8 tokens an answer
    assert out.usage.completion_tokens == server.stats().completion_tokens


def test_a_messages_body_is_estimated_with_its_top_level_system() -> None:
    """Anthropic's Messages API puts the system prompt at the top level, outside ``messages``: the TPM and budget
    estimate must still count it (a 2,000-token system prompt is most of each request)."""
    from ai_assets.runtime.tokens import message_tokens, request_messages

    system = [{"type": "text", "text": "x" * 8000, "cache_control": {"type": "ephemeral"}}]
    body = {"model": "claude-sonnet-4-5", "max_tokens": 64, "system": system,
            "messages": [{"role": "user", "content": "hi"}]}
    assert message_tokens(request_messages(body)) >= 2000
