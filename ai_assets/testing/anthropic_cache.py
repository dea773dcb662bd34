"""The Anthropic fake's prompt cache: prefixes written at ``cache_control`` breakpoints, read by later requests.

What it models, and from where (Anthropic's "Prompt caching" docs):

* A prefix is cached only up to a block marked ``cache_control`` (a breakpoint), in the order tools, system,
  messages; at most 4 breakpoints a request. A hit is looked for at each breakpoint and, walking back, at up to 20
  block boundaries before it (the "automatic prefix checking" lookback).
* A prefix shorter than the model's minimum is not cached (no error, nothing written): ``min_tokens``, 1,024 tokens
  for Sonnet- and Opus-class models (the default; Haiku-class models need more).
* Usage: ``cache_read_input_tokens`` (the prefix found), ``cache_creation_input_tokens`` (what this request
  writes: from the end of the hit to its last cacheable breakpoint) and ``input_tokens`` (the rest, after the last
  breakpoint), which excludes both.
* When: the entry is available once the first response begins; requests sent together before that all miss and
  all write. Here a request's prefixes enter the cache when it completes (``complete``), which is that moment for
  a non-streamed answer.
* Lifetime: 5 minutes, refreshed at each read (``ttl_s``).

A token is 4 characters of the blocks' JSON (as the fake OpenAI server counts).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

CHARS_PER_TOKEN = 4
MIN_TOKENS = 1024
TTL_S = 300.0
LOOKBACK_BLOCKS = 20
MAX_BREAKPOINTS = 4


@dataclass(frozen=True)
class Billing:
    """A request's input tokens as Anthropic reports them, and the prefixes it writes once it completes."""

    input_tokens: int
    cache_read: int
    cache_write: int
    writes: tuple[bytes, ...] = ()


def blocks_of(data: dict[str, Any]) -> list[tuple[str, bool]]:
    """Each cacheable block of a request in cache order (tools, system, messages): its text and whether it is a
    breakpoint."""
    out: list[tuple[str, bool]] = []

    def add(block: Any, prefix: str = "") -> None:
        if isinstance(block, dict):
            marked = isinstance(block.get("cache_control"), dict)
            plain = {k: v for k, v in block.items() if k != "cache_control"}
            out.append((prefix + json.dumps(plain, sort_keys=True), marked))
        else:
            out.append((prefix + json.dumps(block), False))

    for tool in data.get("tools") or []:
        add(tool)
    system = data.get("system")
    for block in [system] if isinstance(system, str) else system or []:
        add(block)
    for message in data.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        role = str(message.get("role")) if isinstance(message, dict) else ""
        for block in [content] if isinstance(content, str) else content or []:
            add(block, role)
    return out


def count_breakpoints(data: dict[str, Any]) -> int:
    return sum(marked for _, marked in blocks_of(data))


@dataclass
class AnthropicCache:
    min_tokens: int = MIN_TOKENS
    ttl_s: float = TTL_S
    _entries: dict[bytes, float] = field(default_factory=dict)

    def arrive(self, model: str, data: dict[str, Any], now: float | None = None) -> Billing:
        """What a request arriving now reads and would write (written only by ``complete``)."""
        now = time.monotonic() if now is None else now
        blocks = blocks_of(data)
        digest = hashlib.sha256(model.encode())
        ends: list[tuple[int, bytes]] = []  # per block: tokens up to its end, digest of everything up to it
        chars = 0
        for text, _ in blocks:
            digest.update(text.encode())
            chars += len(text)
            ends.append((chars // CHARS_PER_TOKEN, digest.copy().digest()))
        total = 1 + chars // CHARS_PER_TOKEN
        breakpoints = [i for i, (_, marked) in enumerate(blocks) if marked]
        read = 0
        for point in breakpoints:
            for at in range(point, max(-1, point - LOOKBACK_BLOCKS), -1):
                tokens, key = ends[at]
                if self._entries.get(key, -1.0) > now:
                    self._entries[key] = now + self.ttl_s  # a read refreshes the entry
                    read = max(read, tokens)
                    break
        cacheable = [ends[i] for i in breakpoints if ends[i][0] >= self.min_tokens and ends[i][0] > read]
        write = max((tokens for tokens, _ in cacheable), default=read) - read
        return Billing(total - read - write, read, write, tuple(key for _, key in cacheable))

    def complete(self, billing: Billing, now: float | None = None) -> None:
        """A request has been answered: the prefixes it wrote are cached from now on."""
        now = time.monotonic() if now is None else now
        for key in billing.writes:
            self._entries[key] = now + self.ttl_s
        if len(self._entries) > 100_000:  # bounded: expired entries go first
            for key in [k for k, until in self._entries.items() if until <= now]:
                del self._entries[key]
