"""Built-in prices, so cost metadata appears without configuration.

US dollars per million tokens (input, output, cached input) at OpenAI's standard tier, as published on
openai.com/api/pricing on ``AS_OF``; Anthropic's (input, output, cache write, cache read) as published on
docs.anthropic.com "Pricing" on ``ANTHROPIC_AS_OF``: a 5-minute cache write costs 1.25x the input price and a cache
read 0.1x ("Prompt caching", pricing), the Message Batches API halves both.
Prices change: pass ``prices=Prices(...)`` to any function or factory to use your own, or ``register`` a model. A
dated snapshot, not a live feed. Model names match exactly or as a dated variant (``gpt-4o-mini-2024-07-18``).
"""

from __future__ import annotations

from typing import Any

from ai_assets.runtime.usage import Prices

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


def register(model: str, prices: Prices) -> None:
    """Add or replace a model's prices for this process."""
    _TABLE[model] = prices


def lookup(model: str) -> Prices | None:
    """The prices of ``model`` or of the model it is a dated variant of (longest name first)."""
    for name in sorted(_TABLE, key=len, reverse=True):
        if model == name or model.startswith(name + "-"):
            return _TABLE[name]
    return None


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
