"""Usage accounting for one call of an AI function: requests, retries, tokens, cache hits, errors, latency."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ai_assets.runtime.errors import AttemptUsage


@dataclass(frozen=True)
class Prices:
    """US dollars per million tokens, for cost estimates."""

    input_per_million: float = 0.0
    output_per_million: float = 0.0


@dataclass
class Usage:
    rows: int = 0
    sent_rows: int = 0
    requests: int = 0
    retries: int = 0
    reasks: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_hits: int = 0
    deduplicated: int = 0
    skipped: int = 0
    errors: int = 0
    elapsed_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list, repr=False)

    def add_tokens(self, usage: AttemptUsage) -> None:
        self.prompt_tokens += usage.prompt_tokens
        self.completion_tokens += usage.completion_tokens

    def latency_percentile(self, q: float) -> float | None:
        if not self.latencies_s:
            return None
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def cost(self, prices: Prices) -> float:
        return (self.prompt_tokens * prices.input_per_million
                + self.completion_tokens * prices.output_per_million) / 1_000_000

    def merge(self, other: Usage) -> None:
        for name in ("rows", "sent_rows", "requests", "retries", "reasks", "prompt_tokens", "completion_tokens",
                     "cache_hits", "deduplicated", "skipped", "errors"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.elapsed_s += other.elapsed_s
        self.latencies_s.extend(other.latencies_s)

    def summary(self) -> dict[str, Any]:
        """Plain numbers, ready for logs or Dagster metadata."""
        p50, p95 = self.latency_percentile(0.5), self.latency_percentile(0.95)
        return {
            "rows": self.rows, "sent_rows": self.sent_rows, "requests": self.requests, "retries": self.retries,
            "reasks": self.reasks, "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
            "cache_hits": self.cache_hits, "deduplicated": self.deduplicated, "skipped": self.skipped,
            "errors": self.errors, "elapsed_s": round(self.elapsed_s, 3), "rows_per_s": round(self.rows_per_s, 2),
            "latency_p50_s": None if p50 is None else round(p50, 4),
            "latency_p95_s": None if p95 is None else round(p95, 4),
        }
