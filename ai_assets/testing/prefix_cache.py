"""The fake server's prompt cache: which prompt prefixes it holds, reported as OpenAI reports them.

What it models, and from where:

* OpenAI's prompt caching guide: prompts are cached from 1,024 tokens on, in steps of 128, and the cached part of
  a prompt is reported as ``usage.prompt_tokens_details.cached_tokens``.
* When a prefix enters the cache: once a request *has run*, not when it arrives. vLLM's automatic prefix caching
  (docs, "Automatic Prefix Caching") hashes KV blocks as they are computed and frees them into the cache when the
  request finishes; llama.cpp's server keeps a prompt's KV in its slot after the request ends (``cache_prompt``).
  Requests that share a prefix and are in flight together therefore all miss it; only requests that arrive after
  one of them has been answered hit. ``write="completion"`` (the default) models this; ``write="arrival"`` (the
  cache written as a request arrives, which no real server does) is kept only to show the difference.
* Capacity: an LRU of ``capacity`` prefix blocks. A provider's cache also holds other traffic, so a small capacity
  models prefixes evicted between two uses; OpenAI keeps a prefix for minutes of inactivity, which a large
  capacity models.

A token is 4 characters of the prompt's text (as the server counts ``prompt_tokens``).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Literal

CHARS_PER_TOKEN = 4
MIN_TOKENS = 1024
STEP_TOKENS = 128
DEFAULT_CAPACITY = 4096
Write = Literal["completion", "arrival"]


class PrefixCache:
    def __init__(self, capacity: int = DEFAULT_CAPACITY, write: Write = "completion") -> None:
        self.capacity = capacity
        self.write = write
        self._blocks: OrderedDict[bytes, None] = OrderedDict()

    @staticmethod
    def blocks(text: str) -> list[tuple[int, bytes]]:
        """Each cacheable prefix of ``text``: its end (in characters) and a digest of everything up to it."""
        digest = hashlib.sha1()
        at = 0
        out = []
        for end in range(MIN_TOKENS * CHARS_PER_TOKEN, len(text) + 1, STEP_TOKENS * CHARS_PER_TOKEN):
            digest.update(text[at:end].encode())
            at = end
            out.append((end, digest.copy().digest()))
        return out

    def arrive(self, text: str) -> int:
        """The cached tokens of a prompt of ``text`` arriving now (blocks found become the most recent)."""
        if self.capacity <= 0:
            return 0
        cached = 0
        for end, block in self.blocks(text):
            if block not in self._blocks:
                break
            cached = end // CHARS_PER_TOKEN
            self._blocks.move_to_end(block)
        if self.write == "arrival":
            self._add(text)
        return cached

    def complete(self, text: str) -> None:
        """A request with prompt ``text`` has run: its prefix blocks enter the cache (``write="completion"``)."""
        if self.capacity > 0 and self.write == "completion":
            self._add(text)

    def _add(self, text: str) -> None:
        for _, block in self.blocks(text):
            self._blocks[block] = None
            self._blocks.move_to_end(block)
        while len(self._blocks) > self.capacity:
            self._blocks.popitem(last=False)
