"""What may be sent when: a slot among ``concurrency`` in flight, then room in every RPM and TPM limit.

Limits come from two places: ``RunOptions(rpm=, tpm=)`` pace one run in this process, and a provider's
``RateLimit`` paces every process that shares its account (see ``ai_assets.runtime.ratelimit``). A request waits
for the latest of its reservations and is checked once more just before it goes: if its process was kept off the
CPU past its slot (by more than ``Pacer.late_s``), the slot is given up and a new one taken, so that the limit holds
on a busy machine (see ``ai_assets.runtime.ratelimit``). After the answer, the TPM reservation is corrected with
the tokens the server billed.

A third source is the provider itself: every answer's rate-limit headers (OpenAI's ``x-ratelimit-*``, Anthropic's
``anthropic-ratelimit-*``; see ``ai_assets.runtime.ratelimit.headers``) are read by ``learn``, which paces the
account at the limit they report, on the account's store (``RateLimit.store``: every process sharing it paces
together), beside any limit the user set (a request waits for every pacer, so the lower limit holds). A refusal
with a ``Retry-After`` (429, 503) holds the account's bucket (the spent one: ``remaining`` 0) for that long, so
that every process waits rather than each paying a refusal of its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from ai_assets.runtime.errors import AttemptUsage, PermanentError
from ai_assets.runtime.ratelimit import DEFAULT_HEADROOM, Pacer, Permit, RateLimit, RateStore, open_store, sleep_until
from ai_assets.runtime.ratelimit.headers import read_limits
from ai_assets.runtime.retry import retry_after_seconds

logger = logging.getLogger(__name__)
SLOTS_PER_REQUEST = 4  # a request late for this many slots in a row goes anyway, with a warning


@dataclass(frozen=True)
class TokenCost:
    """A request's token estimate: ``prompt`` from its text, ``output`` the completion budget. Where ``output`` is
    a hard cap (``max_tokens``), servers count all of it against TPM whatever the answer's length."""

    prompt: int
    output: int = 0
    output_is_cap: bool = False

    @property
    def total(self) -> int:
        return self.prompt + self.output

    def billed(self, usage: AttemptUsage) -> int:
        """What the server counts against TPM, from the usage it reported."""
        return usage.prompt_tokens + (self.output if self.output_is_cap else usage.completion_tokens)


class Learned:
    """Limits an account's answers report in their headers, paced on the account's buckets in ``store``."""

    def __init__(self, store: RateStore, account: str, headroom: float = DEFAULT_HEADROOM) -> None:
        self.store, self.account, self.headroom = store, account, headroom
        self.pacers: dict[str, Pacer] = {}
        """``"rpm"`` / ``"tpm"``: the pacer of each limit reported so far."""

    async def observe(self, headers: Mapping[str, str]) -> None:
        reported = read_limits(headers)
        kinds = (("rpm", reported.requests), ("tpm", reported.tokens))
        for kind, one in kinds:
            if one.limit is not None and (kind not in self.pacers or self.pacers[kind].per_minute != one.limit):
                if kind not in self.pacers:
                    logger.info("rate limit: the provider reports %s=%g; pacing the account at it", kind, one.limit)
                self.pacers[kind] = Pacer(one.limit, self.store, f"{self.account}:learned-{kind}", self.headroom)
        refused = retry_after_seconds(headers)  # only a refusal (429, 503) carries one among the headers kept
        if refused is None:
            return
        spent = [kind for kind, one in kinds if one.remaining is not None and one.remaining < 1] or ["rpm"]
        for kind in spent:
            if kind in self.pacers:  # nothing more goes on the account until the server said it would take it
                await self.store.raise_to(self.pacers[kind].bucket, min(refused, MAX_RESET_S))


MAX_RESET_S = 60.0
"""The longest a 429's ``Retry-After`` holds the account's bucket (a per-minute limit is whole again within a
minute; a longer wait fails the row in the retry policy anyway)."""


class Limits:
    def __init__(self, concurrency: int, rpm: Sequence[Pacer] = (), tpm: Sequence[Pacer] = (),
                 learned: Learned | None = None) -> None:
        self._slots = asyncio.Semaphore(concurrency)
        self._user_rpm = list(rpm)
        self._user_tpm = list(tpm)
        self.learned = learned
        self.given_up = 0  # slots given up because the request would have gone too late

    @property
    def _rpm(self) -> list[Pacer]:
        learned = self.learned.pacers.get("rpm") if self.learned is not None else None
        return self._user_rpm + ([learned] if learned is not None else [])

    @property
    def _tpm(self) -> list[Pacer]:
        learned = self.learned.pacers.get("tpm") if self.learned is not None else None
        return self._user_tpm + ([learned] if learned is not None else [])

    async def learn(self, headers: Mapping[str, str] | None) -> None:
        """Pace by the limits an answer's headers report (see the module docstring)."""
        if headers and self.learned is not None:
            await self.learned.observe(headers)

    @classmethod
    def build(cls, concurrency: int, rpm: float | None, tpm: float | None,
              account: tuple[RateLimit, str] | None = None, headroom: float = DEFAULT_HEADROOM,
              learn: bool = True) -> Limits:
        """Per-run limits (a bucket of their own in this process) plus the account's shared ones, plus (``learn``)
        those the provider reports in its headers, on the account's store (this run's, without an account)."""
        local = open_store(None)
        run = f"run:{uuid.uuid4().hex}"
        rpms = [Pacer(rpm, local, f"{run}:rpm", headroom)] if rpm else []
        tpms = [Pacer(tpm, local, f"{run}:tpm", headroom)] if tpm else []
        learned = Learned(local, run, headroom)
        if account is not None:
            limit, name = account
            store = open_store(limit.store)
            if limit.rpm:
                rpms.append(Pacer(limit.rpm, store, f"{name}:rpm", limit.headroom))
            if limit.tpm:
                tpms.append(Pacer(limit.tpm, store, f"{name}:tpm", limit.headroom))
            learned = Learned(store, name, limit.headroom)
        return cls(concurrency, rpms, tpms, learned if learn else None)

    @asynccontextmanager
    async def slot(self, cost: TokenCost) -> AsyncIterator[None]:
        for pacer in self._tpm:
            if cost.total > pacer.per_minute:  # would wait for more than a whole minute's budget, and be refused
                raise PermanentError(f"the request needs about {cost.total} tokens, more than the whole limit of "
                                     f"tpm={pacer.per_minute:g}: shorten the input or lower max_output_tokens")
        async with self._slots:
            await self._wait_for_a_slot(cost)
            yield

    async def _wait_for_a_slot(self, cost: TokenCost) -> None:
        """Reserve on every pacer, sleep until the latest permit, and check just before the request goes that it
        is not late for that permit's slot; a late one gives its slots up (they stay unused) and takes new ones."""
        if not self._rpm and not self._tpm:
            return
        late = 0.0
        for _ in range(SLOTS_PER_REQUEST):
            permits: list[Permit] = [await pacer.reserve(1) for pacer in self._rpm]
            permits += [await pacer.reserve(cost.total) for pacer in self._tpm]
            binding = max(permits, key=lambda permit: permit.slot)
            await sleep_until(binding.slot)
            late = time.monotonic() - binding.slot
            if binding.pacer.late_s is None or late <= binding.pacer.late_s:
                return
            self.given_up += 1
        logger.warning("rate limit: a request goes %.0f ms after its slot (%d slots in a row came too late on a "
                       "busy machine); a provider counting over a short window may refuse it with a 429",
                       late * 1000, SLOTS_PER_REQUEST)

    async def settle(self, cost: TokenCost, usage: AttemptUsage) -> None:
        """Correct the TPM reservations with what the server billed (when it reported usage)."""
        if not self._tpm or usage.prompt_tokens <= 0:
            return
        delta = cost.billed(usage) - cost.total
        for pacer in self._tpm:
            await pacer.adjust(delta)
