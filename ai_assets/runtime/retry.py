"""Retry policy: exponential backoff with full jitter, or the server's Retry-After (never less, up to 10 % more).

Every wait is bounded by ``RetryPolicy.max_wait``: backoff is capped at it, and a ``Retry-After`` longer than it is
not waited at all: the row fails at once with a ``RetryAfterTooLongError`` naming the wait (the next run sends it
again). So the longest a row can wait between attempts is ``max_wait * 1.1 + 0.01`` seconds, whatever a server
answers (``Retry-After: 999999999`` included)."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from ai_assets.runtime.errors import ConfigError, InvalidOutputError, TransientError
from ai_assets.runtime.ratelimit.headers import ascii_number

RETRY_AFTER_MARGIN_S = 0.01
RETRY_AFTER_JITTER = 0.1


class RetryAfterTooLongError(TransientError):
    """A server asked for a wait longer than ``RetryPolicy.max_wait``: the row fails instead of waiting."""


@dataclass(frozen=True)
class RetryPolicy:
    """How many attempts a row may cost and how long to wait between them.

    ``max_attempts`` counts every request a row sends: transport retries and re-asks together. ``max_wait`` bounds
    every wait between attempts, a server's ``Retry-After`` included (see the module docstring).
    """

    max_attempts: int = 4
    base_wait: float = 0.5
    max_wait: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.base_wait < 0 or self.max_wait < 0:
            raise ConfigError(f"RetryPolicy: max_attempts >= 1, base_wait >= 0 and max_wait >= 0, got {self}")

    def delay(self, attempt: int, error: BaseException | None) -> float:
        """Seconds to wait after attempt number ``attempt`` failed with ``error``."""
        if isinstance(error, InvalidOutputError):
            return 0.0
        if isinstance(error, TransientError) and error.retry_after is not None:
            if error.retry_after > self.max_wait:
                raise RetryAfterTooLongError(
                    f"the server asked to wait {error.retry_after:g}s before retrying (Retry-After), longer than "
                    f"RetryPolicy.max_wait={self.max_wait:g}s: {error}", retry_after=error.retry_after) from error
            # Never sooner than the server asked: event loops fire timers up to a clock tick early, hence the
            # margin; the jitter spreads the rows a 429 burst throttled together.
            return error.retry_after * (1 + random.uniform(0, RETRY_AFTER_JITTER)) + RETRY_AFTER_MARGIN_S
        ceiling = min(self.max_wait, self.base_wait * 2 ** (attempt - 1))
        return random.uniform(0, ceiling)


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Read ``retry-after-ms`` (OpenAI) or ``retry-after`` (seconds or an HTTP date); None when absent or
    unreadable. Seconds are ASCII digits (RFC 9110 ``delta-seconds = 1*DIGIT``; a fraction is read too); an
    HTTP-date in any of its three formats (RFC 9110 section 5.6.7), the zone-less asctime form being UTC."""
    millis = headers.get("retry-after-ms")
    if millis is not None and (wait := ascii_number(millis)) is not None:
        return wait / 1000
    value = headers.get("retry-after")
    if value is None:
        return None
    if (wait := ascii_number(value)) is not None:
        return wait
    if value.strip(" \t").lower() in ("inf", "infinity"):  # no date either: a wait no policy will take
        return math.inf
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # asctime, or a "-0000" zone: an HTTP-date is always UTC
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)
