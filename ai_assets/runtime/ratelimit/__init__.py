"""Requests-per-minute and tokens-per-minute limits, exact at any rate and any request size, optionally shared
by every process that uses one provider account.

The algorithm is GCRA (the generic cell rate algorithm) in its reservation form. A bucket holds one number, the
theoretical arrival time ``tat``. A request of cost ``c`` (1 for RPM, its tokens for TPM) on a limit of ``r`` per
second reserves ``start = max(tat, now) + c / r``, sets ``tat = start`` and waits until ``start``. So:

* any rate is paced exactly, 1 request a minute included, and a run starts with no burst: credit never builds up
  while idle (``max(tat, now)``), and the first request waits for its own cost;
* a request larger than one second's budget waits for all the tokens it needs (``c / r`` seconds of budget);
* limits are paced ``headroom`` (2 % by default) below the stated rate: a provider's sliding-window limiter counts
  arrivals, and requests spaced exactly at the limit arrive a few milliseconds inside its window once the network
  jitters them; 2 % of a minute is 1.2 s of slack, the rate stays within 2 % of the limit;
* a request is sent at its slot, not later: one whose process was kept off the CPU past its slot by more than
  ``Pacer.late_s`` (half the headroom's slack over a ``SHORTEST_WINDOW_S`` window: 50 ms at 2 %) gives the slot
  up and takes a new one (see ``Limits.slot``), since a permit taken at one instant and a request sent later
  bunches with the requests sent on time after it, past what a sliding window allows; a slot given up is never
  used, which only lowers the rate;
* after the answer, ``adjust`` moves ``tat`` by the difference between the estimate and what the server billed, so
  the estimate is corrected with real usage.

One bucket is one float, so the same few lines run against a process-local dict, a file locked with ``flock`` (one
machine, many processes), Redis (a Lua script using the server's clock) or Postgres (one ``INSERT ... ON CONFLICT``
statement using ``clock_timestamp()``): see ``open_store``. aiolimiter was used before; its leaky bucket raised
rates below one a second to one a second and capped a large request at one second's budget, and it cannot be
shared between processes, which is the whole point of an account-wide limit.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass
from typing import Protocol

from ai_assets.runtime.errors import ConfigError

DEFAULT_HEADROOM = 0.02
SHORTEST_WINDOW_S = 5.0  # the shortest sliding window a provider's per-minute limit is taken to be counted over


class RateStore(Protocol):
    """Where buckets live. Both methods are atomic across everyone who shares the store."""

    async def reserve(self, bucket: str, interval_s: float) -> float:
        """Reserve ``interval_s`` seconds of the bucket's time line; return how long from now to wait before
        sending (below zero when the answer came back after the slot: the request is already late)."""
        ...

    async def adjust(self, bucket: str, delta_s: float) -> None:
        """Move the bucket's time line by ``delta_s`` (negative: give back an over-estimate)."""
        ...

    async def raise_to(self, bucket: str, wait_s: float) -> None:
        """Let nothing more through the bucket for ``wait_s`` seconds from now (a provider said its limit is
        used up until then); a time line already later stays."""
        ...


@dataclass(frozen=True)
class RateLimit:
    """Limits for one provider account.

    ``store`` is where the limit's state lives: None for this process only; ``file:///dir`` for every process on
    one machine; ``redis://host:6379/0`` or ``postgresql+psycopg2://user:pass@host/db`` for every process
    anywhere. ``account`` names the buckets; processes that share a store and an account share the limit
    (default: derived from the provider's endpoint and key, so every user of one key shares it). ``headroom``:
    the share of the limit left unused, so that a sliding-window limiter at the provider refuses nothing."""

    rpm: float | None = None
    tpm: float | None = None
    store: str | None = None
    account: str | None = None
    headroom: float = DEFAULT_HEADROOM

    def __post_init__(self) -> None:
        check_headroom(self.headroom, "RateLimit.headroom")
        for name in ("rpm", "tpm"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"{name} must be > 0, got {value}")


def account_limit(limit: RateLimit | None, endpoint: str, key: str | None) -> tuple[RateLimit, str] | None:
    """``limit`` and the account it holds for: its ``account``, else a name derived from the endpoint and the key
    (a hash: the key never appears in a store)."""
    if limit is None:
        return None
    return limit, limit.account or hashlib.sha256(f"{endpoint}\n{key or ''}".encode()).hexdigest()[:16]


def check_headroom(value: float, name: str) -> None:
    if not 0 <= value < 0.5:
        raise ConfigError(f"{name} must be in [0, 0.5), got {value}")


@dataclass(frozen=True)
class Permit:
    """A reservation on one pacer: ``slot``, in this process's ``time.monotonic()``, is when the request may go,
    and the instant a late send is measured from."""

    slot: float
    pacer: Pacer


class Pacer:
    """One limit (``per_minute`` units a minute) on one bucket of a store, paced ``headroom`` below it.

    ``late_s`` is how far past its slot a request may still go: half the slack the headroom leaves over the
    shortest window a provider is taken to count over (``SHORTEST_WINDOW_S``), the other half left for the way to
    the server. None when there is no headroom (nothing to keep a late request inside of)."""

    def __init__(self, per_minute: float, store: RateStore, bucket: str, headroom: float = DEFAULT_HEADROOM) -> None:
        if per_minute <= 0:
            raise ConfigError(f"a rate limit must be > 0 a minute, got {per_minute}")
        self.per_minute = per_minute
        self.per_second = per_minute * (1 - headroom) / 60.0
        self.store = store
        self.bucket = bucket
        self.late_s = headroom * SHORTEST_WINDOW_S / 2 if headroom > 0 else None

    async def reserve(self, amount: float) -> Permit:
        """Reserve ``amount`` units: the slot the request was given."""
        wait = await self.store.reserve(self.bucket, amount / self.per_second)
        return Permit(slot=time.monotonic() + wait, pacer=self)

    async def adjust(self, amount: float) -> None:
        if amount:
            await self.store.adjust(self.bucket, amount / self.per_second)


async def sleep_until(deadline: float) -> None:
    """Sleep until ``time.monotonic() >= deadline`` (event-loop timers can fire a clock tick early)."""
    while (remaining := deadline - time.monotonic()) > 0:
        await asyncio.sleep(remaining)


def open_store(location: str | None) -> RateStore:
    """The store for a location (see ``RateLimit.store``); one instance per location and process."""
    from ai_assets.runtime.ratelimit.stores import open_store as _open

    return _open(location)
