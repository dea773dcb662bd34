"""Concurrency, requests-per-minute and tokens-per-minute limits (aiolimiter leaky buckets).

The buckets drain per second (``rpm / 60`` requests, ``tpm / 60`` tokens), so a run is paced from its first
second instead of bursting a whole minute's quota and then meeting 429s. A request estimated at more tokens than
one second's budget waits for a full bucket.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiolimiter import AsyncLimiter


class Limits:
    """A slot among ``concurrency`` in flight, then room in the RPM and TPM buckets."""

    def __init__(self, concurrency: int, rpm: int | None = None, tpm: int | None = None) -> None:
        self._slots = asyncio.Semaphore(concurrency)
        self._rpm = AsyncLimiter(max(rpm / 60, 1.0), 1) if rpm else None
        self._tpm = AsyncLimiter(max(tpm / 60, 1.0), 1) if tpm else None

    @asynccontextmanager
    async def slot(self, tokens: int) -> AsyncIterator[None]:
        async with self._slots:
            if self._rpm is not None:
                await self._rpm.acquire()
            if self._tpm is not None:
                await self._tpm.acquire(min(float(tokens), self._tpm.max_rate))
            yield
