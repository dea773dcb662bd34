"""The resolver ``download`` connects through: aiohttp's, with every address it answers checked before a connection
may use it, so a host name that resolves (or re-resolves: DNS rebinding) to a refused address is refused.

Its own module because it subclasses aiohttp's resolver: importing ``download`` costs no aiohttp until a download
runs."""

from __future__ import annotations

import socket

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from ai_assets.functions.url_guard import check_address


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver, with every answer checked before a connection may use it."""

    def __init__(self, allow_private: bool) -> None:
        self._inner = aiohttp.ThreadedResolver()
        self._allow_private = allow_private

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        answers = await self._inner.resolve(host, port, family)
        for answer in answers:
            check_address(answer["host"], allow_private=self._allow_private)
        return answers

    async def close(self) -> None:
        await self._inner.close()
