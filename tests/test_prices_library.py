"""List prices from genai-prices (pydantic's price data), our table as the fallback, the user's prices over both.

Documented behaviour modelled: genai-prices' README ("calc_price(Usage(input_tokens=..., output_tokens=...),
model_ref=..., provider_id=...)" gives a ``PriceCalculation`` whose ``total_price`` is the call's price; its data is
a snapshot bundled in the package, updated from the network only when the user starts ``UpdatePrices``). Its
``Usage.input_tokens`` counts every input token, cache reads and writes included, priced apart at
``cache_read_mtok`` / ``cache_write_mtok``: the same shape as our ``AttemptUsage``. Vendors' own pricing pages are
what both tables copy (Anthropic "Pricing": cache writes 1.25x, reads 0.1x the input price).
"""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
from pathlib import Path

import genai_prices
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ai_assets import Prices
from ai_assets.runtime import prices as price_table
from ai_assets.runtime.prices import library_prices, lookup, register

ROOT = Path(__file__).resolve().parents[1]
# (model as a provider names it, genai-prices' provider id)
MODELS = [("gpt-4o-mini", "openai"), ("gpt-4.1", "openai"), ("claude-sonnet-4-5", "anthropic"),
          ("claude-haiku-4-5-20251001", "anthropic"), ("gemini-2.5-flash", "google"), ("gemini-2.0-flash", "google")]


def library_total(model: str, vendor: str, prompt_tokens: int, completion_tokens: int, cached: int,
                  written: int) -> float:
    """genai-prices' own figure for the same usage."""
    usage = genai_prices.Usage(input_tokens=prompt_tokens, output_tokens=completion_tokens,
                               cache_read_tokens=cached, cache_write_tokens=written)
    return float(genai_prices.calc_price(usage, model, provider_id=vendor).total_price)


@pytest.mark.parametrize(("model", "vendor"), MODELS)
def test_the_cost_of_a_model_is_genai_prices_own_calculation(model: str, vendor: str) -> None:
    prices = lookup(model)
    assert prices is not None, model
    written = 1_500 if vendor == "anthropic" else 0  # OpenAI and Gemini report no cache writes
    ours = prices.cost(12_000, 800, cached_tokens=6_000, cache_write_tokens=written)
    assert math.isclose(ours, library_total(model, vendor, 12_000, 800, 6_000, written), rel_tol=1e-9, abs_tol=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(MODELS), st.integers(0, 150_000), st.integers(0, 20_000), st.data())
def test_any_usage_under_the_long_context_tier_costs_what_genai_prices_says(
        model_vendor: tuple[str, str], prompt_tokens: int, completion_tokens: int, data: st.DataObject) -> None:
    model, vendor = model_vendor
    cached = data.draw(st.integers(0, prompt_tokens))
    written = data.draw(st.integers(0, prompt_tokens - cached)) if vendor == "anthropic" else 0
    prices = lookup(model)
    assert prices is not None
    assert math.isclose(prices.cost(prompt_tokens, completion_tokens, cached_tokens=cached, cache_write_tokens=written),
                        library_total(model, vendor, prompt_tokens, completion_tokens, cached, written),
                        rel_tol=1e-9, abs_tol=1e-12)


def test_claude_cache_writes_and_reads_are_priced_as_anthropic_bills_them() -> None:
    prices = lookup("claude-sonnet-4-5")
    assert prices is not None and prices.cached_input_per_million is not None
    assert prices.cache_write_per_million is not None
    assert math.isclose(prices.cache_write_per_million, 1.25 * prices.input_per_million)
    assert math.isclose(prices.cached_input_per_million, 0.1 * prices.input_per_million)


def test_an_unknown_model_has_no_price_and_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    name = "my-finetune-unpriced-7b"
    with caplog.at_level(logging.WARNING, logger="ai_assets.runtime.prices"):
        assert lookup(name) is None and lookup(name) is None and library_prices(name) is None
    said = [r.getMessage() for r in caplog.records if name in r.getMessage()]
    assert len(said) == 1 and "no price" in said[0] and "prices=Prices" in said[0]


def test_registered_prices_win_over_genai_prices_and_the_table() -> None:
    """A price ``register``ed in this process (what ``prices=`` / YAML ``prices:`` do per call) is used before
    genai-prices', for the model and its dated variants."""
    mine = Prices(9.0, 90.0)
    register("gpt-4o-mini", mine)
    try:
        assert lookup("gpt-4o-mini") is mine and lookup("gpt-4o-mini-2024-07-18") is mine
    finally:
        price_table._REGISTERED.pop("gpt-4o-mini")
    assert lookup("gpt-4o-mini") != mine


def test_a_model_only_the_table_knows_falls_back_to_it() -> None:
    register_name = "gpt-4o-mini"
    assert library_prices(register_name) is not None  # the library serves it
    price_table._TABLE["zz-table-only-model"] = Prices(1.0, 2.0)
    try:
        assert library_prices("zz-table-only-model") is None
        assert lookup("zz-table-only-model") == Prices(1.0, 2.0)
    finally:
        price_table._TABLE.pop("zz-table-only-model")


def test_prices_need_no_network_and_cost_nothing_to_import() -> None:
    """genai-prices' bundled snapshot answers with every socket refused; importing ai_assets (and its price
    module) does not import genai-prices: it is imported by the first price looked up."""
    code = ("import json, socket, sys\n"
            "def refuse(*a, **k):\n"
            "    raise OSError('network used')\n"
            "socket.socket.connect = refuse\n"
            "socket.create_connection = refuse\n"
            "import ai_assets, ai_assets.runtime.prices as p\n"
            "before = 'genai_prices' in sys.modules\n"
            "found = p.lookup('claude-sonnet-4-5')\n"
            "print(json.dumps([before, found.input_per_million, 'genai_prices' in sys.modules]))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          check=True)
    before, price, after = json.loads(done.stdout.strip().splitlines()[-1])
    assert before is False and after is True and price > 0
