"""What may be sent when: a slot among ``concurrency`` in flight, then room in every RPM and TPM limit.

Limits come from two places: ``RunOptions(rpm=, tpm=)`` pace one run in this process, and a provider's
``RateLimit`` paces every process that shares its account (see ``ai_assets.runtime.ratelimit``). A request waits
for the latest of its reservations and is checked once more just before it goes: if its process was kept off the
CPU past its slot (by more than ``Pacer.late_s``), the slot is given up and a new one taken, so that the limit holds
on a busy machine (see ``ai_assets.runtime.ratelimit``). After the answer, the TPM reservation is corrected with
the tokens the server billed.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from ai_assets.runtime.errors import AttemptUsage, PermanentError
from ai_assets.runtime.ratelimit import DEFAULT_HEADROOM, Pacer, Permit, RateLimit, open_store, sleep_until

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


class Limits:
    def __init__(self, concurrency: int, rpm: Sequence[Pacer] = (), tpm: Sequence[Pacer] = ()) -> None:
        self._slots = asyncio.Semaphore(concurrency)
        self._rpm = list(rpm)
        self._tpm = list(tpm)
        self.given_up = 0  # slots given up because the request would have gone too late

    @classmethod
    def build(cls, concurrency: int, rpm: float | None, tpm: float | None,
              account: tuple[RateLimit, str] | None = None, headroom: float = DEFAULT_HEADROOM) -> Limits:
        """Per-run limits (a bucket of their own in this process) plus the account's shared ones."""
        local = open_store(None)
        run = f"run:{uuid.uuid4().hex}"
        rpms = [Pacer(rpm, local, f"{run}:rpm", headroom)] if rpm else []
        tpms = [Pacer(tpm, local, f"{run}:tpm", headroom)] if tpm else []
        if account is not None:
            limit, name = account
            store = open_store(limit.store)
            if limit.rpm:
                rpms.append(Pacer(limit.rpm, store, f"{name}:rpm", limit.headroom))
            if limit.tpm:
                tpms.append(Pacer(limit.tpm, store, f"{name}:tpm", limit.headroom))
        return cls(concurrency, rpms, tpms)

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
