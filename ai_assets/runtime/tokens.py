"""Token estimates for TPM limits, without downloading a tokenizer (tiktoken fetches its files at run time)."""

from __future__ import annotations

import json
from typing import Any

CHARS_PER_TOKEN = 4
IMAGE_TOKENS = 765  # OpenAI's cost of a high-detail 512x512 tile set; a deliberate over-estimate


def estimate_tokens(messages: list[dict[str, Any]], max_output_tokens: int | None) -> int:
    """About four characters a token for text, a flat cost per image, plus the output budget."""
    total = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            total += len(content)
        elif isinstance(content, list):
            for part in content:
                if part.get("type") == "text":
                    total += len(part.get("text", ""))
                else:
                    total += IMAGE_TOKENS * CHARS_PER_TOKEN
        else:
            total += len(json.dumps(content))
    return total // CHARS_PER_TOKEN + 4 * len(messages) + (max_output_tokens or 256)
