"""Prompt-cache warm-up: one request per new prompt prefix goes first, and the rest of its group follows once it
has been answered.

Providers write a prefix into their prompt cache when a request *has run*, not when it arrives (OpenAI's prompt
caching guide; vLLM's automatic prefix caching frees a finished request's blocks into the cache; llama.cpp keeps a
finished prompt in its slot). Rows of one prefix sent together therefore all miss the cache: grouping alone made
cache hits worse than a shuffled order on such a server (cached share 0.66 against 0.94). So a group's first row
(its leader) is sent alone; the group is released when the leader is answered, fails, or after ``wait_s`` (a
leader stuck in retries must not stall its group for long). Prefixes under the provider's minimum cacheable size
(OpenAI: 1,024 tokens) are never held: there is nothing to warm. A prefix answered once stays warm for the rest of
the run, so later windows send its rows at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from ai_assets.runtime.task import Prefix

CACHE_MIN_TOKENS = 1024
"""The shortest prompt prefix a provider caches (OpenAI's prompt caching guide: 1,024 tokens)."""
CACHE_STEP_TOKENS = 128
"""Past the minimum, OpenAI caches prefixes in steps of 128 tokens."""
WAIT_S = 10.0
"""The longest a group waits for its leader's answer before it is sent anyway."""

Send = Callable[[list[str]], Awaitable[None]]
Fail = Callable[[list[str], BaseException], None]


@dataclass
class PrefixGate:
    """Which prompt prefixes are warm, which have a leader in flight, and the rows held behind each leader."""

    wait_s: float = WAIT_S
    min_tokens: int = CACHE_MIN_TOKENS
    _warm: set[str] = field(default_factory=set)
    _leaders: dict[str, str] = field(default_factory=dict)
    """Leader key -> the prefix it warms."""
    _answered: dict[str, asyncio.Event] = field(default_factory=dict)
    """Prefix -> set once its leader has been answered (or has failed)."""
    _releases: set[asyncio.Task[None]] = field(default_factory=set)
    _released: asyncio.Queue[tuple[list[str], Send]] = field(default_factory=asyncio.Queue)
    _sender: asyncio.Task[None] | None = None

    def split(self, keys: Sequence[str], prefixes: Mapping[str, Prefix]) -> tuple[list[str], dict[str, list[str]]]:
        """``keys`` (in sending order) as the keys to send now and, per prefix, the keys held behind its leader."""
        now: list[str] = []
        held: dict[str, list[str]] = {}
        for key in keys:
            prefix = prefixes.get(key)
            if prefix is None or prefix.tokens < self.min_tokens or prefix.name in self._warm:
                now.append(key)
            elif prefix.name in self._answered:
                held.setdefault(prefix.name, []).append(key)
            else:
                self._answered[prefix.name] = asyncio.Event()
                self._leaders[key] = prefix.name
                now.append(key)
        return now, held

    def answered(self, key: str) -> None:
        """A row's request has an outcome: if it led a prefix, that prefix is warm and its group is released."""
        name = self._leaders.pop(key, None)
        if name is not None:
            self._warm.add(name)
            self._answered[name].set()

    def release(self, held: dict[str, list[str]], send: Send, fail: Fail) -> None:
        """Send each held group once its leader is answered, or after ``wait_s``. Groups go one after the other,
        each whole, in the order they are released: rows of one prefix stay together on the wire (a small cache,
        or llama.cpp's one prompt per slot, keeps only the prefixes used last)."""
        if self._sender is None:
            self._sender = asyncio.ensure_future(self._send_released(fail))
        for name, keys in held.items():
            task = asyncio.ensure_future(self._release(self._answered[name], keys, send))
            self._releases.add(task)
            task.add_done_callback(self._releases.discard)

    async def _release(self, answered: asyncio.Event, keys: list[str], send: Send) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(answered.wait(), self.wait_s)
        self._released.put_nowait((keys, send))

    async def _send_released(self, fail: Fail) -> None:
        while True:
            keys, send = await self._released.get()
            try:
                await send(keys)
            except Exception as exc:
                fail(keys, exc)

    async def close(self) -> None:
        """Cancel the groups still held (the run is ending)."""
        tasks = [*self._releases, *([self._sender] if self._sender is not None else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._sender = None
