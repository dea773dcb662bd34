"""An account's rate limits as the provider reports them in every answer's headers.

OpenAI ("Rate limits" guide) sends ``x-ratelimit-limit-requests`` / ``-tokens`` (the limit: requests or tokens a
minute), ``x-ratelimit-remaining-requests`` / ``-tokens`` (what is left before a 429) and
``x-ratelimit-reset-requests`` / ``-tokens`` (the time until the limit is back to its initial state, as a Go
duration: ``"6m0s"``, ``"1s"``, ``"250ms"``, ``"1h2m3.5s"``). Anthropic ("Rate limits" docs) sends
``anthropic-ratelimit-requests-limit`` / ``-remaining`` / ``-reset`` and the same for ``-tokens-`` (and
``-input-tokens-`` / ``-output-tokens-``), the reset an RFC 3339 time. Both limits are per minute.

Reading is forgiving: a header that is missing, not a number, negative, NaN or infinite is ignored (the answer is
still used); only the values that read cleanly count. A number is ASCII digits with an optional fraction (RFC 5234:
``DIGIT = %x30-39``; both vendors send integer counts): Python's ``float`` would also read ``"٦٠"``, ``"6_0"`` or
``"1e-9"``. A limit below 1 a minute is no limit either vendor has, and would hold the next request for days.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

MAX_HEADER_CHARS = 64
"""A header value longer than this is not read (a rate header is a number, a duration or a timestamp)."""
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)(h|ms|m|s|us|\u00b5s|\u03bcs|ns)")  # Go: both micro signs
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "ns": 1e-9}
RATE_HEADER_PREFIXES = ("x-ratelimit-", "anthropic-ratelimit-", "retry-after")


@dataclass(frozen=True)
class Reported:
    """One limit as reported: the limit a minute, what remains, and seconds until it is whole again (each None
    when not reported or unreadable)."""

    limit: float | None = None
    remaining: float | None = None
    reset_s: float | None = None


@dataclass(frozen=True)
class ReportedLimits:
    requests: Reported = Reported()
    tokens: Reported = Reported()

    @property
    def empty(self) -> bool:
        return self.requests.limit is None and self.tokens.limit is None


def rate_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The rate-limit headers of an answer (lower-cased names), and a refusal's ``retry-after`` /
    ``retry-after-ms``, for the engine to learn from."""
    return {k.lower(): v for k, v in headers.items() if k.lower().startswith(RATE_HEADER_PREFIXES)}


def go_duration_s(text: str) -> float | None:
    """Seconds of a Go duration (``"6m0s"``, ``"1s"``, ``"250ms"``, ``"1h2m3.5s"``) or a bare number of seconds;
    None when unreadable."""
    text = text.strip(" \t")
    if not text or len(text) > MAX_HEADER_CHARS:
        return None
    if (seconds := ascii_number(text)) is not None:
        return seconds
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return _finite(sum(float(n) * _UNIT_S[u] for n, u in parts))


def rfc3339_wait_s(text: str, now: datetime | None = None) -> float | None:
    """Seconds from ``now`` until an RFC 3339 time (``2026-12-05T08:30:00Z``); 0 for a time past; None when
    unreadable."""
    text = text.strip()
    if not text or len(text) > MAX_HEADER_CHARS:
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)


def read_limits(headers: Mapping[str, str], now: datetime | None = None) -> ReportedLimits:
    """The limits an answer's headers report, from either vendor's names."""
    h = {k.lower(): v for k, v in headers.items()}

    def one(kind: str) -> Reported:
        openai = (f"x-ratelimit-limit-{kind}", f"x-ratelimit-remaining-{kind}", f"x-ratelimit-reset-{kind}")
        anthropic = tuple(f"anthropic-ratelimit-{kind}-{part}" for part in ("limit", "remaining", "reset"))
        for (limit, remaining, reset), wait in ((openai, go_duration_s), (anthropic, rfc3339_wait)):
            if limit in h:
                return Reported(_count(h[limit], limit=True), _count(h.get(remaining)),
                                wait(h[reset]) if reset in h else None)
        return Reported()

    def rfc3339_wait(text: str) -> float | None:
        return rfc3339_wait_s(text, now)

    return ReportedLimits(one("requests"), one("tokens"))


def ascii_number(text: str) -> float | None:
    """A header's non-negative number (``"60"``, ``"1.5"``): ASCII digits, an optional fraction, optional spaces
    or tabs around (RFC 9110's OWS); None for anything else, whatever Python's ``float`` would read."""
    text = text.strip(" \t")
    if len(text) > MAX_HEADER_CHARS or not _NUMBER.fullmatch(text):
        return None
    return _finite(float(text))


def _count(text: str | None, *, limit: bool = False) -> float | None:
    """A count of requests or tokens; a ``limit`` must be at least 1 a minute."""
    value = None if text is None else ascii_number(text)
    if value is None or (limit and value < 1):
        return None
    return value


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) and value >= 0 else None
