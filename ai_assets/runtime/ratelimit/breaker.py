"""A circuit breaker whose state lives in the shared rate-limit store, so every worker process of a provider sees
the same one.

The pattern is the one of Nygard's "Release It!" as Polly and resilience4j document it: **closed** (requests go;
consecutive transient failures are counted, a success resets the count) -> **open** once ``threshold`` failures
in a row were seen (no request goes; callers fail over at once instead of paying the dead provider's timeout) ->
**half-open** after ``cooldown_s`` (exactly one caller, across every process, is let through as a probe; the
others still fail over) -> **closed** when the probe (or any request) succeeds, **open** again, for another
cool-down, when it fails. A probe that never reports (its process was killed) is given up after another
``cooldown_s``, and a new one is let through.

The record is three numbers per breaker: consecutive failures, when it opened (0: closed), when the current probe
went out (0: none). It is keyed by a hash of the provider's identity (endpoint, model), never by its key, and
moved by one atomic step per event in each store (a lock in memory, ``flock`` on a file, a Lua script in Redis,
a row lock in Postgres), on the store's clock.

A record is never trusted to hold the breaker open past one cool-down from now: a time in the future (a clock set
back, as ``time.time`` may be; a hand-edited store) or not finite reads as "now". A store the breaker cannot use
(a folder it cannot write, Redis or Postgres down) fails open: the request is sent as if the breaker were closed,
and the run says so once (a warning naming the store's kind and the error), since a breaker only saves a dead
provider's timeouts and must not cost the rows of a live one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

from ai_assets.runtime.errors import ConfigError, bounded

logger = logging.getLogger(__name__)
Event = Literal["ask", "failure", "success"]
Verdict = Literal["closed", "suspect", "open", "probe"]
"""``closed``: send; ``suspect``: send (closed, with failures on record: report a success, which resets them);
``probe``: send, as the one probe of a half-open breaker; ``open``: do not send."""


@dataclass(frozen=True)
class BreakerRecord:
    failures: int = 0
    opened_at: float = 0.0
    probe_at: float = 0.0


def step(record: BreakerRecord, event: Event, now: float, threshold: int,
         cooldown_s: float) -> tuple[BreakerRecord, Verdict]:
    """The breaker's next record and its verdict for ``event`` at ``now`` (the one rule every store runs)."""
    record = BreakerRecord(max(record.failures, 0), _not_after(record.opened_at, now), _not_after(record.probe_at, now))
    if event == "success":
        return BreakerRecord(), "closed"
    if event == "failure":
        failures = record.failures + 1
        if record.opened_at or failures >= threshold:  # a failed probe (or a late failure) opens it anew
            return BreakerRecord(failures, now, 0.0), "open"
        return BreakerRecord(failures, 0.0, 0.0), "closed"
    if not record.opened_at:
        return record, "suspect" if record.failures else "closed"
    if now - record.opened_at < cooldown_s or (record.probe_at and now - record.probe_at < cooldown_s):
        return record, "open"
    return BreakerRecord(record.failures, record.opened_at, now), "probe"


def _not_after(moment: float, now: float) -> float:
    """A recorded time, at most ``now`` (0, none recorded, stays 0)."""
    return moment if moment == 0 or (math.isfinite(moment) and moment <= now) else now


class BreakerStore(Protocol):
    async def breaker(self, name: str, event: Event, threshold: int, cooldown_s: float) -> Verdict:
        """Apply ``event`` to breaker ``name`` atomically for everyone who shares the store; the verdict."""
        ...


@dataclass(frozen=True)
class BreakerSettings:
    """When a provider counts as down, and when it is tried again.

    ``threshold``: consecutive transient failures (5xx, 529, timeouts, refused connections) that open the breaker
    (default 5). ``cooldown_s``: seconds it stays open before one probe request is let through (default 30).
    ``store``: where its state lives, shared by every process that names the same store (``file:///folder``,
    ``redis://...``, ``postgresql+psycopg2://...``); default: the primary's ``RateLimit.store``, else this
    process only."""

    threshold: int = 5
    cooldown_s: float = 30.0
    store: str | None = None

    def __post_init__(self) -> None:
        if self.threshold < 1:
            raise ConfigError(f"BreakerSettings.threshold must be >= 1, got {self.threshold}")
        if not 0 <= self.cooldown_s < float("inf"):
            raise ConfigError(f"BreakerSettings.cooldown_s must be a finite number >= 0, got {self.cooldown_s}")


def breaker_name(identity: Mapping[str, Any]) -> str:
    """A breaker's key: a hash of the provider's identity (no key, no URL in clear in the store)."""
    return "breaker:" + hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:24]


class Breaker:
    """One provider's breaker in a store."""

    def __init__(self, identity: Mapping[str, Any], settings: BreakerSettings, store: str | None) -> None:
        from ai_assets.runtime.ratelimit import open_store

        self.settings = settings
        self.name = breaker_name(identity)
        self._store: BreakerStore = open_store(store)  # type: ignore[assignment]  # every store is one
        self._location = store
        self._warned = False

    async def _event(self, event: Event) -> Verdict:
        try:
            return await self._store.breaker(self.name, event, self.settings.threshold, self.settings.cooldown_s)
        except Exception as exc:  # a store it cannot use fails open (see the module docstring)
            if not self._warned:
                self._warned = True
                parts = urlsplit(self._location or "memory:")
                logger.warning("circuit breaker: its %s store cannot be used (%s); requests go on as if the "
                               "breaker were closed", parts.scheme or "file",
                               bounded(f"{type(exc).__name__}: {exc}", [p for p in (parts.password,) if p], 200))
            return "closed"

    async def ask(self) -> Verdict:
        """Whether to send (see ``Verdict``)."""
        return await self._event("ask")

    async def failed(self) -> Verdict:
        return await self._event("failure")

    async def succeeded(self) -> None:
        await self._event("success")


def record_of(raw: str | bytes | None) -> BreakerRecord:
    """A record as a store keeps it (``"failures opened_at probe_at"``); a fresh one when absent or unreadable."""
    if not raw:
        return BreakerRecord()
    try:
        failures, opened, probe = (raw.decode() if isinstance(raw, bytes) else raw).split()
        return BreakerRecord(int(failures), float(opened), float(probe))
    except ValueError:
        return BreakerRecord()


def text_of(record: BreakerRecord) -> str:
    return f"{record.failures} {record.opened_at!r} {record.probe_at!r}"
