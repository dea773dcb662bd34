"""HTTP for the remote providers: one pooled session per connection, and bodies read within a cap (an answer or
a download that never ends costs ``limit`` bytes, not whatever arrives before the timeout)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import aiohttp

CHUNK = 64 * 1024
KEEPALIVE_S = 4.0
"""How long an idle connection is kept for the next request: under the 5 s after which uvicorn (vLLM), llama.cpp's
cpp-httplib and Node close one, so a request never races the server's close on a connection it is dropping
(RFC 9112 section 9.3; aiohttp's default, 15 s, lets a request go out on one in that moment)."""


@asynccontextmanager
async def client_session(headers: Mapping[str, str], concurrency: int,
                         timeout_s: float) -> AsyncIterator[aiohttp.ClientSession]:
    """A session of at most ``concurrency`` connections to one host, each request bounded by ``timeout_s``."""
    import aiohttp

    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency, keepalive_timeout=KEEPALIVE_S)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=dict(headers)) as session:
        yield session


async def read_capped(response: aiohttp.ClientResponse, limit: int, what: str, setting: str,
                      error: Callable[[str], Exception]) -> bytes:
    """The body of ``response``; ``error(message)`` is raised once it is declared or read past ``limit`` bytes
    (``what`` names the body and ``setting`` the cap in the message)."""
    declared = response.content_length
    if declared is not None and declared > limit:
        raise error(f"{what} is {declared} bytes, over {setting}={limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(CHUNK):
        size += len(chunk)
        if size > limit:
            raise error(f"{what} passed {setting}={limit}; aborted")
        chunks.append(chunk)
    return b"".join(chunks)
