"""Usage accounting for one call of an AI function: requests, retries, tokens, cache hits, errors, latency.

Memory stays flat however many rows a call streams: latencies are kept as a fixed-size uniform sample. With a
group column (``_partition`` in Dagster), every row's counts and tokens are also kept per group, so a run over a
range of partitions reports each partition's own usage and cost.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

from ai_assets.runtime.errors import AttemptUsage, ConfigError
from ai_assets.runtime.guarantees import Certificate

LATENCY_SAMPLE = 4096


@dataclass(frozen=True)
class Prices:
    """US dollars per million tokens, for cost estimates; ``batch_discount`` is the Batch API's share off;
    ``cached_input_per_million`` the price of prompt tokens served from the provider's prompt cache (None: the
    input price, no discount); ``cache_write_per_million`` the price of prompt tokens written to the cache (None:
    the input price, as OpenAI bills them; Anthropic bills 1.25x the input price for its 5-minute cache)."""

    input_per_million: float = 0.0
    output_per_million: float = 0.0
    batch_discount: float = 0.5
    cached_input_per_million: float | None = None
    cache_write_per_million: float | None = None

    def __post_init__(self) -> None:
        """A price is a finite amount >= 0 (a NaN or negative one made every cost, and the spend ledger, wrong)."""
        for name in ("input_per_million", "output_per_million", "batch_discount", "cached_input_per_million",
                     "cache_write_per_million"):
            value = getattr(self, name)
            if value is None and name.startswith("cache"):
                continue
            if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                    or value < 0 or (name == "batch_discount" and value > 1)):
                raise ConfigError(f"Prices.{name} must be a finite number >= 0"
                                  f"{' and <= 1' if name == 'batch_discount' else ''}, got {value!r}")

    def cost(self, prompt_tokens: int, completion_tokens: int, *, batch: bool = False,
             cached_tokens: int = 0, cache_write_tokens: int = 0) -> float:
        """Dollars for ``prompt_tokens`` input tokens (of which ``cached_tokens`` read from and
        ``cache_write_tokens`` written to the prompt cache, each at its own price) and ``completion_tokens``."""
        cached_rate = self.input_per_million if self.cached_input_per_million is None \
            else self.cached_input_per_million
        write_rate = self.input_per_million if self.cache_write_per_million is None \
            else self.cache_write_per_million
        cached = min(cached_tokens, prompt_tokens)
        written = min(cache_write_tokens, prompt_tokens - cached)
        dollars = ((prompt_tokens - cached - written) * self.input_per_million + cached * cached_rate
                   + written * write_rate + completion_tokens * self.output_per_million) / 1e6
        return dollars * (1 - self.batch_discount) if batch else dollars

    def usage_cost(self, usage: AttemptUsage, *, batch: bool = False) -> float:
        """What one attempt's (or a row's) ``usage`` cost."""
        return self.cost(usage.prompt_tokens, usage.completion_tokens, batch=batch,
                         cached_tokens=usage.cached_tokens, cache_write_tokens=usage.cache_write_tokens)


COUNTERS = ("rows", "sent_rows", "requests", "retries", "reasks", "prompt_tokens", "completion_tokens",
            "cached_tokens", "cache_write_tokens", "reasoning_tokens", "cache_hits", "deduplicated", "skipped",
            "errors", "answered")


@dataclass
class Usage:
    rows: int = 0
    sent_rows: int = 0
    requests: int = 0
    retries: int = 0
    reasks: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    """Of ``prompt_tokens``, those the provider served from its prompt cache."""
    cache_write_tokens: int = 0
    """Of ``prompt_tokens``, those written to the provider's prompt cache (billed at the cache-write price)."""
    reasoning_tokens: int = 0
    """Of ``completion_tokens``, those spent reasoning."""
    cache_hits: int = 0
    deduplicated: int = 0
    skipped: int = 0
    errors: int = 0
    answered: int = 0
    """Rows sent or read from the journal that have a value (neither skipped nor failed)."""
    elapsed_s: float = 0.0
    batch: bool = False
    """Answered through the Batch API (priced at its discount)."""
    estimated: bool = False
    """An estimate (``mode="estimate"``): nothing was sent; tokens are what sending would cost."""
    groups: dict[str, Usage] = field(default_factory=dict, repr=False)
    models: dict[str, Usage] = field(default_factory=dict, repr=False)
    """A cascade's usage per model (what each model was sent and billed); cost sums them at their own prices."""
    model_prices: dict[str, Prices | None] = field(default_factory=dict, repr=False)
    certificate: Certificate | None = None
    """A certified cascade's threshold, oracle share, costs and guarantee (``Cascade(target=...)``)."""
    _latencies: list[float] = field(default_factory=list, repr=False)
    _latency_count: int = field(default=0, repr=False)

    def add_tokens(self, usage: AttemptUsage) -> None:
        self.prompt_tokens += usage.prompt_tokens
        self.completion_tokens += usage.completion_tokens
        self.cached_tokens += usage.cached_tokens
        self.cache_write_tokens += usage.cache_write_tokens
        self.reasoning_tokens += usage.reasoning_tokens

    def latency(self, seconds: float) -> None:
        """Record one request's latency (a uniform sample of at most ``LATENCY_SAMPLE`` is kept)."""
        self._latency_count += 1
        if len(self._latencies) < LATENCY_SAMPLE:
            self._latencies.append(seconds)
        else:
            slot = random.randrange(self._latency_count)
            if slot < LATENCY_SAMPLE:
                self._latencies[slot] = seconds

    def latency_percentile(self, q: float) -> float | None:
        if not self._latencies:
            return None
        ordered = sorted(self._latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def group(self, name: str) -> Usage:
        """The usage of one group (created on first use)."""
        if name not in self.groups:
            self.groups[name] = Usage(batch=self.batch, estimated=self.estimated)
        return self.groups[name]

    def add_elapsed(self, seconds: float) -> None:
        """Wall time of the call; groups (partitions streamed together) share it."""
        self.elapsed_s += seconds
        for part in self.groups.values():
            part.elapsed_s += seconds

    @property
    def attempted(self) -> int:
        """Rows that were meant to get a value (not skipped for a null or empty input)."""
        return self.rows - self.skipped

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def absorb(self, other: Usage, model: str, prices: Prices | None) -> None:
        """Add what ``other`` (one model's stage of a cascade) sent and was billed, also per group; rows, skips,
        answers and errors are the cascade's own (counted once, from its output)."""
        for name in ("sent_rows", "requests", "retries", "reasks", "prompt_tokens", "completion_tokens",
                     "cached_tokens", "cache_write_tokens", "reasoning_tokens", "cache_hits", "deduplicated"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self._latencies.extend(other._latencies[:max(0, LATENCY_SAMPLE - len(self._latencies))])
        self.elapsed_s += other.elapsed_s
        self.batch = self.batch or other.batch
        self.estimated = self.estimated or other.estimated
        part = self.models.setdefault(model, Usage(batch=other.batch, estimated=other.estimated))
        for name in COUNTERS:
            setattr(part, name, getattr(part, name) + getattr(other, name))
        self.model_prices[model] = prices
        for group, usage in other.groups.items():
            self.group(group).absorb(usage, model, prices)

    def cost(self, prices: Prices | None) -> float:
        """What the tokens cost at ``prices`` (a cascade: each model's tokens at its own prices, where known)."""
        if self.models:
            return sum(part.cost(self.model_prices.get(name) or prices) for name, part in self.models.items())
        if prices is None:
            return 0.0
        return prices.cost(self.prompt_tokens, self.completion_tokens, batch=self.batch,
                           cached_tokens=self.cached_tokens, cache_write_tokens=self.cache_write_tokens)

    def summary(self) -> dict[str, Any]:
        """Plain numbers, ready for logs or Dagster metadata."""
        p50, p95 = self.latency_percentile(0.5), self.latency_percentile(0.95)
        return {
            **{name: getattr(self, name) for name in COUNTERS},
            "elapsed_s": round(self.elapsed_s, 3), "rows_per_s": round(self.rows_per_s, 2),
            "latency_p50_s": None if p50 is None else round(p50, 4),
            "latency_p95_s": None if p95 is None else round(p95, 4),
        }
