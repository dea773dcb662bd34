"""Retry policy: exponential backoff with full jitter, or the server's Retry-After (never less, up to 10 % more)."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from ai_assets.runtime.errors import InvalidOutputError, TransientError

RETRY_AFTER_MARGIN_S = 0.01
RETRY_AFTER_JITTER = 0.1


@dataclass(frozen=True)
class RetryPolicy:
    """How many attempts a row may cost and how long to wait between them.

    ``max_attempts`` counts every request a row sends: transport retries and re-asks together.
    """

    max_attempts: int = 4
    base_wait: float = 0.5
    max_wait: float = 30.0

    def delay(self, attempt: int, error: BaseException | None) -> float:
        """Seconds to wait after attempt number ``attempt`` failed with ``error``."""
        if isinstance(error, InvalidOutputError):
            return 0.0
        if isinstance(error, TransientError) and error.retry_after is not None:
            # Never sooner than the server asked: event loops fire timers up to a clock tick early, hence the
            # margin; the jitter spreads the rows a 429 burst throttled together.
            return error.retry_after * (1 + random.uniform(0, RETRY_AFTER_JITTER)) + RETRY_AFTER_MARGIN_S
        ceiling = min(self.max_wait, self.base_wait * 2 ** (attempt - 1))
        return random.uniform(0, ceiling)


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Read ``retry-after-ms`` (OpenAI) or ``retry-after`` (seconds or an HTTP date); None when absent."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(float(millis) / 1000, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)
