"""List prices, so cost metadata appears without configuration.

Where a model's price comes from, first found wins: the prices ``register``ed in this process (a function's
``prices=`` / YAML ``prices:`` override all of this, per call), then genai-prices (pydantic's price data, kept up to
date by its maintainers and shipped inside the package: nothing is fetched at run time) for OpenAI, Anthropic and
Google (Gemini) models, then the built-in table below. A model none of them knows has no price (its cost is not
estimated); a log line says so once per model and process.

genai-prices prices some models in tiers by a request's input size (e.g. a long-context rate above 200k tokens);
``Prices`` is flat, so such a model is priced at its base tier, and the log line says so once.

The built-in table: US dollars per million tokens (input, output, cached input) at OpenAI's standard tier, as
published on openai.com/api/pricing on ``AS_OF``; Anthropic's (input, output, cache write, cache read) as published on
docs.anthropic.com "Pricing" on ``ANTHROPIC_AS_OF``: a 5-minute cache write costs 1.25x the input price and a cache
read 0.1x ("Prompt caching", pricing), the Message Batches API halves both.
Prices change: pass ``prices=Prices(...)`` to any function or factory to use your own, or ``register`` a model. A
dated snapshot, not a live feed. Model names match exactly or as a dated variant (``gpt-4o-mini-2024-07-18``).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from ai_assets.runtime.usage import Prices

logger = logging.getLogger(__name__)

AS_OF = "2025-08-07"
_TABLE: dict[str, Prices] = {
    "gpt-5": Prices(1.25, 10.00, cached_input_per_million=0.125),
    "gpt-5-mini": Prices(0.25, 2.00, cached_input_per_million=0.025),
    "gpt-5-nano": Prices(0.05, 0.40, cached_input_per_million=0.005),
    "gpt-4.1": Prices(2.00, 8.00, cached_input_per_million=0.5),
    "gpt-4.1-mini": Prices(0.40, 1.60, cached_input_per_million=0.1),
    "gpt-4.1-nano": Prices(0.10, 0.40, cached_input_per_million=0.025),
    "gpt-4o": Prices(2.50, 10.00, cached_input_per_million=1.25),
    "gpt-4o-mini": Prices(0.15, 0.60, cached_input_per_million=0.075),
    "o3": Prices(2.00, 8.00, cached_input_per_million=0.5),
    "o3-mini": Prices(1.10, 4.40, cached_input_per_million=0.55),
    "o4-mini": Prices(1.10, 4.40, cached_input_per_million=0.275),
    "text-embedding-3-small": Prices(0.02, 0.0),
    "text-embedding-3-large": Prices(0.13, 0.0),
    "text-embedding-ada-002": Prices(0.10, 0.0),
}
ANTHROPIC_AS_OF = "2025-11-24"
CACHE_WRITE_5M = 1.25
"""Anthropic's 5-minute cache write, as a multiple of the input price."""
CACHE_READ = 0.1
"""Anthropic's cache read, as a multiple of the input price."""


def anthropic_prices(input_per_million: float, output_per_million: float) -> Prices:
    """A Claude model's prices: cache writes and reads priced off the input price as Anthropic documents."""
    return Prices(input_per_million, output_per_million,
                  cached_input_per_million=round(input_per_million * CACHE_READ, 6),
                  cache_write_per_million=round(input_per_million * CACHE_WRITE_5M, 6))


_TABLE.update({
    "claude-opus-4-5": anthropic_prices(5.00, 25.00),
    "claude-opus-4-1": anthropic_prices(15.00, 75.00),
    "claude-opus-4": anthropic_prices(15.00, 75.00),
    "claude-sonnet-4-5": anthropic_prices(3.00, 15.00),
    "claude-sonnet-4": anthropic_prices(3.00, 15.00),
    "claude-haiku-4-5": anthropic_prices(1.00, 5.00),
    "claude-3-5-haiku": anthropic_prices(0.80, 4.00),
})


_REGISTERED: dict[str, Prices] = {}
LIBRARY_VENDORS = ("openai", "anthropic", "google")
"""genai-prices' provider ids whose list prices are used, in this order."""
_SAID: set[str] = set()


def register(model: str, prices: Prices) -> None:
    """Add or replace a model's prices for this process (before genai-prices' and the built-in ones)."""
    _REGISTERED[model] = prices


def _match(table: dict[str, Prices], model: str) -> Prices | None:
    """The prices of ``model`` or of the model it is a dated variant of (longest name first)."""
    for name in sorted(table, key=len, reverse=True):
        if model == name or model.startswith(name + "-"):
            return table[name]
    return None


def _say_once(model: str, message: str, *args: Any) -> None:
    if model not in _SAID:
        _SAID.add(model)
        logger.warning(message, *args)


def _per_million(model: str, value: Any) -> float | None:
    """A genai-prices price (a Decimal, or tiers by input size) in dollars per million tokens: a tiered one at its
    base tier, said once."""
    if value is None:
        return None
    tiers = getattr(value, "tiers", None)
    if tiers is not None:
        _say_once(model, "%s: genai-prices prices it in tiers by input size (from %s input tokens a request); "
                         "ai_assets prices every request at its base tier", model,
                  min(int(tier.start) for tier in tiers) if tiers else "?")
        value = value.base
    return float(value)


@lru_cache(maxsize=1024)
def library_prices(model: str) -> Prices | None:
    """``model``'s list prices today in genai-prices' data (the snapshot bundled in the package, or one the user
    keeps updated with ``genai_prices.UpdatePrices``), for OpenAI, Anthropic and Google models; None when it has
    none, or genai-prices is not installed."""
    try:
        import genai_prices
    except ImportError:
        return None
    for vendor in LIBRARY_VENDORS:
        try:  # the price of no tokens names the model's price set (``PriceCalculation.model_price``)
            calculation = genai_prices.calc_price(genai_prices.Usage(input_tokens=0, output_tokens=0), model,
                                                  provider_id=vendor, genai_request_timestamp=datetime.now(UTC))
        except (LookupError, ValueError):  # not this vendor's model
            continue
        given = {name: _per_million(model, getattr(calculation.model_price, name, None))
                 for name in ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok")}
        if given["input_mtok"] is None and given["output_mtok"] is None:  # priced per image or request only
            return None
        return Prices(given["input_mtok"] or 0.0, given["output_mtok"] or 0.0,
                      cached_input_per_million=given["cache_read_mtok"],
                      cache_write_per_million=given["cache_write_mtok"])
    return None


def lookup(model: str) -> Prices | None:
    """The list prices of ``model`` (or of the model it is a dated variant of): ``register``ed, else genai-prices',
    else the built-in table's; None, logged once per model, when none knows it."""
    found = _match(_REGISTERED, model) or library_prices(model) or _match(_TABLE, model)
    if found is None:
        _say_once(model, "no price known for model %r (neither genai-prices nor the built-in table has it): its "
                         "cost is not estimated; pass prices=Prices(...) to price it", model)
    return found


FREE = Prices(0.0, 0.0, batch_discount=0.0)
"""A model in this process: no API bill (its cost is the machine's)."""


def prices_for(provider: Any, *, embeddings: bool = False) -> Prices | None:
    """The prices of a provider: its own (``FREE`` for a local model), else the built-in ones of its chat (or
    embedding) model, if any."""
    own = getattr(provider, "prices", None)
    if isinstance(own, Prices):
        return own
    identity = provider.embedding_identity() if embeddings else provider.identity()
    model = identity.get("model")
    return lookup(str(model)) if model else None
