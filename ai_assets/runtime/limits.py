"""Concurrency, requests-per-minute and tokens-per-minute limits (aiolimiter leaky buckets)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiolimiter import AsyncLimiter


class Limits:
    """A slot among ``concurrency`` in flight, then room in the RPM and TPM buckets."""

    def __init__(self, concurrency: int, rpm: int | None = None, tpm: int | None = None) -> None:
        self._slots = asyncio.Semaphore(concurrency)
        self._rpm = AsyncLimiter(rpm, 60) if rpm else None
        self._tpm = AsyncLimiter(tpm, 60) if tpm else None
        self._tpm_capacity = tpm or 0

    @asynccontextmanager
    async def slot(self, tokens: int) -> AsyncIterator[None]:
        async with self._slots:
            if self._rpm is not None:
                await self._rpm.acquire()
            if self._tpm is not None:
                await self._tpm.acquire(min(tokens, self._tpm_capacity))
            yield
