"""Token estimates for TPM limits and budgets, without downloading a tokenizer (tiktoken fetches its files at run
time): about four characters a token, a few tokens a message, a flat cost per image or file."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ai_assets.runtime.limits import TokenCost

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4
IMAGE_TOKENS = 765  # OpenAI's price of a 1024x1024 image at high detail (85 + 4 tiles x 170): a deliberate ceiling
DEFAULT_OUTPUT_TOKENS = 256  # reserved for an answer when no max_output_tokens caps it


def text_tokens(text: str) -> int:
    return len(text) // CHARS_PER_TOKEN + 1


def message_tokens(messages: Sequence[dict[str, Any]]) -> int:
    """The prompt tokens of chat messages (text, images and files)."""
    chars = 0
    images = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            for part in content:
                if part.get("type") in ("text", "input_text"):
                    chars += len(part.get("text", ""))
                elif part.get("type") in ("file", "input_file"):
                    data = part.get("file", part).get("file_data", "")
                    chars += len(data) * 3 // 4 // 2  # a file: about half its bytes come back as text
                else:
                    images += 1
        elif content is not None:
            chars += len(json.dumps(content))
    return chars // CHARS_PER_TOKEN + TOKENS_PER_MESSAGE * len(messages) + IMAGE_TOKENS * images


def request_messages(request: dict[str, Any]) -> list[dict[str, Any]]:
    """The messages of a Chat Completions body (or a Messages body: Anthropic's ``system`` is top-level), or of a
    Responses body (``instructions`` and ``input``)."""
    if "messages" in request:
        system = request.get("system")
        return ([{"role": "system", "content": system}] if system else []) + list(request["messages"])
    raw = request.get("input", "")
    messages = [{"role": "user", "content": raw}] if isinstance(raw, str) else list(raw)
    if request.get("instructions"):
        messages.insert(0, {"role": "system", "content": request["instructions"]})
    return messages


def estimate_cost(messages: Sequence[dict[str, Any]], max_output_tokens: int | None) -> TokenCost:
    """A chat request's estimate: its prompt, and its output cap (or a default reservation when uncapped)."""
    output = max_output_tokens if max_output_tokens is not None else DEFAULT_OUTPUT_TOKENS
    return TokenCost(message_tokens(messages), output, output_is_cap=max_output_tokens is not None)
