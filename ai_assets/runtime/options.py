"""How a function talks to its provider: ``RunOptions`` (and the Batch API's ``BatchOptions``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from ai_assets.runtime.errors import ConfigError
from ai_assets.runtime.ratelimit import DEFAULT_HEADROOM, check_headroom
from ai_assets.runtime.retry import RetryPolicy

OnError = Literal["raise", "null"]


@dataclass(frozen=True)
class BatchOptions:
    """``max_requests`` / ``max_bytes``: a file's size limits (OpenAI's: 50,000 requests, 200 MB); ``poll_s``:
    how often a batch is polled; ``max_wait_s``: how long one run waits before failing (the next run resumes);
    ``on_expired``: resubmit the lines of an expired batch, or make them row errors."""

    max_requests: int = 50_000
    max_bytes: int = 200 * 1024 * 1024
    poll_s: float = 30.0
    max_wait_s: float = 24 * 3600.0
    on_expired: Literal["resubmit", "error"] = "resubmit"

    def __post_init__(self) -> None:
        if self.max_requests < 1 or self.max_bytes < 1024:
            raise ConfigError(f"BatchOptions: max_requests >= 1 and max_bytes >= 1024, got {self}")


@dataclass(frozen=True)
class RunOptions:
    """How a function talks to its provider. None of these change an answer, so none enter cache keys.

    ``concurrency``: requests in flight. ``rpm`` / ``tpm``: this run's pace (any rate, ``rate_headroom`` below
    it; a provider's ``RateLimit`` paces a whole account). ``timeout_s``: per request. ``retry``: attempts per row
    and waits.
    ``on_error``: ``"raise"`` fails the call on the first failed row; ``"null"`` gives it a null value and an error
    text. ``batch_size``: inputs per embedding request (default 64, split further to the provider's limits), or per
    forward pass of a local model (default: the provider's own ``batch_size``).
    ``retry_failed_rows``: a later run sends rows that failed before (a retry of the same run never does).
    ``window_rows`` / ``window_bytes``: how much of a stream is alive at a time. ``max_cost`` (US dollars, with
    ``prices``) / ``max_tokens``: stop sending once this run's spending reaches the cap. ``mode="batch"``: send
    through the provider's Batch API (``batch`` sets its file sizes, polling and expiry; see
    ``ai_assets.runtime.batch``); ``mode="estimate"``: send nothing, count and price what would be sent (see
    ``ai_assets.runtime.estimate``). ``order_by_prefix``: send a window's rows grouped by their prompt prefix
    (system message and the template's text before its last field), so a provider's prompt cache serves the
    shared part of each group (OpenAI bills cached tokens at a discount; vLLM and llama.cpp skip their
    prefill)."""

    concurrency: int = 16
    rpm: float | None = None
    tpm: float | None = None
    rate_headroom: float = DEFAULT_HEADROOM
    timeout_s: float = 120.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    on_error: OnError = "raise"
    batch_size: int | None = None
    retry_failed_rows: bool = True
    window_rows: int = 8192
    window_bytes: int = 64 * 1024 * 1024
    max_cost: float | None = None
    max_tokens: int | None = None
    mode: Literal["live", "batch", "estimate"] = "live"
    batch: BatchOptions = field(default_factory=BatchOptions)
    order_by_prefix: bool = True

    def __post_init__(self) -> None:
        if self.mode not in ("live", "batch", "estimate"):
            raise ConfigError(f"RunOptions.mode must be 'live', 'batch' or 'estimate', got {self.mode!r}")
        for name in ("concurrency", "batch_size", "window_rows", "window_bytes"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"RunOptions.{name} must be >= 1, got {getattr(self, name)}")
        check_headroom(self.rate_headroom, "RunOptions.rate_headroom")
        if self.on_error not in ("raise", "null"):
            raise ConfigError(f"RunOptions.on_error must be 'raise' or 'null', got {self.on_error!r}")
        for name in ("rpm", "tpm", "timeout_s", "max_cost", "max_tokens"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and 0 < value < math.inf):
                raise ConfigError(f"RunOptions.{name} must be > 0, got {value!r} (a finite number)")
