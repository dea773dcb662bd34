"""HTTP bodies read within a cap: an answer or a download that never ends costs ``limit`` bytes, not whatever
arrives before the timeout."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import aiohttp

CHUNK = 64 * 1024


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
