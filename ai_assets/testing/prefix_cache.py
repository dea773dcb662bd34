"""The fake server's prompt cache: which prompt prefixes it has "seen recently", as OpenAI reports them.

OpenAI caches prompts from 1,024 tokens on, in steps of 128, and reports the cached part of a prompt as
``usage.prompt_tokens_details.cached_tokens``; vLLM and llama.cpp reuse KV cache for shared prefixes the same way.
Here a token is 4 characters of the prompt's text (as the server counts ``prompt_tokens``), and the cache is an
LRU of the last ``capacity`` prefix blocks: rows that share a prefix hit it when they arrive close together, and
miss it when many other prefixes came in between, so the order requests are sent in changes the figure.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

CHARS_PER_TOKEN = 4
MIN_TOKENS = 1024
STEP_TOKENS = 128


class PrefixCache:
    def __init__(self, capacity: int = 8) -> None:
        self.capacity = capacity
        self._blocks: OrderedDict[bytes, None] = OrderedDict()

    def lookup_and_add(self, text: str) -> int:
        """The cached tokens of a prompt of ``text``, after which its prefixes are the most recent ones."""
        if self.capacity <= 0:
            return 0
        cached = 0
        digest = hashlib.sha1()
        at = 0
        ends = range(MIN_TOKENS * CHARS_PER_TOKEN, len(text) + 1, STEP_TOKENS * CHARS_PER_TOKEN)
        for end in ends:
            digest.update(text[at:end].encode())
            at = end
            block = digest.copy().digest()
            if block in self._blocks:
                cached = end // CHARS_PER_TOKEN
                self._blocks.move_to_end(block)
            else:
                self._blocks[block] = None
        while len(self._blocks) > self.capacity:
            self._blocks.popitem(last=False)
        return cached
