"""The fake server's rate-limit headers: the account limit it enforces, reported the way each vendor does.

OpenAI ("Rate limits" guide, "Rate limits in headers"): ``x-ratelimit-limit-requests`` / ``-tokens`` (the limit a
minute), ``x-ratelimit-remaining-requests`` / ``-tokens`` (what may still be sent now) and
``x-ratelimit-reset-requests`` / ``-tokens`` (the time until the limit is back to its initial state, a Go duration
such as ``"1s"``, ``"6m0s"``, ``"250ms"``). Anthropic ("Rate limits", response headers):
``anthropic-ratelimit-requests-limit`` / ``-remaining`` / ``-reset`` (an RFC 3339 time) and ``-tokens-``.
OpenAI documents that a per-minute limit may be enforced over a shorter period ("60,000 requests/minute may be
enforced as 1,000 requests/second"), which is what a ``WindowLimit`` of a few seconds does: the limit reported is
still the per-minute one, what remains is what the current window still admits.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Literal

HeaderStyle = Literal["openai", "anthropic"]


def go_duration(seconds: float) -> str:
    """A Go ``time.Duration`` string as OpenAI sends it: ``"250ms"``, ``"1.5s"``, ``"6m0s"``."""
    seconds = max(seconds, 0.0)
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    minutes, rest = divmod(seconds, 60.0)
    text = f"{rest:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{int(minutes)}m{text}" if minutes else text


def report(style: HeaderStyle, limits: dict[str, tuple[float, float, float]]) -> dict[str, str]:
    """Headers for ``{"requests" | "tokens": (limit a minute, remaining now, seconds to a full reset)}``."""
    headers: dict[str, str] = {}
    for kind, (limit, remaining, reset_s) in limits.items():
        if style == "openai":
            headers[f"x-ratelimit-limit-{kind}"] = _count(limit)
            headers[f"x-ratelimit-remaining-{kind}"] = str(max(int(remaining), 0))
            headers[f"x-ratelimit-reset-{kind}"] = go_duration(reset_s)
        else:
            when = datetime.now(UTC) + timedelta(seconds=max(reset_s, 0.0))
            headers[f"anthropic-ratelimit-{kind}-limit"] = _count(limit)
            headers[f"anthropic-ratelimit-{kind}-remaining"] = str(max(int(remaining), 0))
            headers[f"anthropic-ratelimit-{kind}-reset"] = when.isoformat(timespec="milliseconds").replace(
                "+00:00", "Z")
    return headers


def _count(value: float) -> str:
    """A count as both vendors write it: plain digits (``1000000``, never ``1e+06``)."""
    return str(int(value)) if float(value).is_integer() else f"{value:f}".rstrip("0")


def window_state(arrivals: list[tuple[float, float]], window_s: float, rpm: float | None, tpm: float | None,
                 now: float | None = None) -> dict[str, tuple[float, float, float]]:
    """(limit a minute, remaining in the current window, seconds until the window is empty) of a sliding-window
    limiter holding ``arrivals`` (arrival time, tokens)."""
    now = time.monotonic() if now is None else now
    inside = [(at, tokens) for at, tokens in arrivals if at > now - window_s]
    reset = max((at + window_s - now for at, _ in inside), default=0.0)
    out: dict[str, tuple[float, float, float]] = {}
    if rpm:
        out["requests"] = (rpm, rpm * window_s / 60.0 - len(inside), reset)
    if tpm:
        out["tokens"] = (tpm, tpm * window_s / 60.0 - sum(t for _, t in inside), reset)
    return out
