"""The pipeline's side of row leases (``ai_assets.runtime.cache.lease``): claim before sending, wait for rows
another run holds, take them over when its claims lapse, renew ours while the run lives, release at the end."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from ai_assets.runtime.cache import CachedResult
from ai_assets.runtime.cache.lease import LEASE_S, Claims, new_owner

POLL_S = 0.5
"""How often the journal is read for answers another run is sending."""
TAKEOVER_EVERY_S = 2.0
"""How often the rows still held elsewhere are claimed again (a claim is a journal write)."""
logger = logging.getLogger(__name__)
Resolve = Callable[[str, CachedResult], bool]
"""Hand a journal entry another run wrote (an answer or a failure) to the rows waiting for it; False when this run
sends the row anyway (a failure it retries), once the other run's claim lapses."""
Send = Callable[[list[str]], Awaitable[None]]
Fail = Callable[[list[str], BaseException], None]


class Leases:
    def __init__(self, journal: Claims, ttl_s: float = LEASE_S) -> None:
        self.journal = journal
        self.owner = new_owner()
        self.ttl_s = ttl_s
        self.elsewhere: set[str] = set()
        """Keys this run needs that another live run holds: their answers are awaited in the journal."""
        self._renewed = time.monotonic()
        self._tried = time.monotonic()
        self._said = False

    async def claim(self, keys: Sequence[str]) -> list[str]:
        """The keys of ``keys`` this run may send now; the others join ``elsewhere``."""
        held = await asyncio.to_thread(self.journal.claim, list(keys), self.owner, self.ttl_s)
        others = [k for k in keys if k not in held]
        if others and not self._said:
            self._said = True
            logger.info("%d row(s) are being sent by another run of this journal: waiting for its answers",
                        len(others))
        self.elsewhere.update(others)
        return [k for k in keys if k in held]

    async def watch(self, lookup: Callable[[list[str]], dict[str, CachedResult]], resolve: Resolve, send: Send,
                    fail: Fail) -> None:
        """Until cancelled: renew this run's claims, hand over what other runs wrote (answers, and failures that
        are final: ``lookup`` includes failures, ``resolve`` decides), take over lapsed keys. A journal error is
        tried again next round while the claims still hold (a third of their lifetime); past that the rows
        waited for fail and the error stops the watch."""
        failing_since: float | None = None
        while True:
            await asyncio.sleep(POLL_S)
            try:
                await self._round(lookup, resolve, send)
                failing_since = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a journal blip: renew again next round, while the claims still hold
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since < self.ttl_s / 3:
                    logger.warning("the journal failed while renewing or watching row claims (%s); trying again",
                                   type(exc).__name__)
                    continue
                fail(sorted(self.elsewhere), exc)  # the rows waited for fail instead of hanging
                raise

    async def _round(self, lookup: Callable[[list[str]], dict[str, CachedResult]], resolve: Resolve,
                     send: Send) -> None:
        if time.monotonic() - self._renewed >= self.ttl_s / 3:
            await asyncio.to_thread(self.journal.renew, self.owner, self.ttl_s)
            self._renewed = time.monotonic()
        if not self.elsewhere:
            return
        keys = sorted(self.elsewhere)
        hits = await asyncio.to_thread(lookup, keys)
        for key in keys:
            hit = hits.get(key)
            if hit is not None and resolve(key, hit):
                self.elsewhere.discard(key)
        waiting = [k for k in keys if k in self.elsewhere]
        if waiting and time.monotonic() - self._tried >= TAKEOVER_EVERY_S:
            self._tried = time.monotonic()
            taken = await self.claim(waiting)
            self.elsewhere.difference_update(taken)
            # A run writes its outcomes before it releases its claims: what it wrote since the lookup above (a
            # final failure: a claim refuses only answered keys) is read now, not sent again.
            hits = await asyncio.to_thread(lookup, taken) if taken else {}
            taken = [k for k in taken if k not in hits or not resolve(k, hits[k])]
            if taken:
                await send(taken)

    async def release(self) -> None:
        await asyncio.to_thread(self.journal.release, self.owner)
