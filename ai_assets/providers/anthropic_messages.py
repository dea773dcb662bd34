"""Neutral messages as Anthropic Messages content, and the cache breakpoints placed in them.

Shapes from Anthropic's Messages API docs: ``system`` is a top-level list of text blocks; a user turn's content is
a string or blocks: ``text``, ``image`` (``source`` ``base64`` with a ``media_type``, or ``url``) and ``document``
(a PDF as ``base64`` ``application/pdf``, a text file as ``text`` ``text/plain``). Audio is not a content block
Anthropic takes, nor is an OpenAI ``file_id``: such a part is an ``UnsupportedPartError`` (the row's error, before
anything is sent), never dropped. Several system messages become several system blocks, in order; consecutive
turns of one role are sent as they are (the API combines them into one turn).
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from ai_assets.providers.messages import (
    FilePart,
    ImagePart,
    Message,
    Part,
    TextPart,
    UnsupportedPartError,
    describe,
)
from ai_assets.runtime.errors import ConfigError

EPHEMERAL = {"type": "ephemeral"}
"""Anthropic's cache breakpoint (the 5-minute cache)."""
PROVIDER = "anthropic"


def anthropic_messages(messages: Sequence[Message]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(system blocks, turns)`` of ``messages``: system text moves to the top level."""
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        if message.role == "system":
            system += [{"type": "text", "text": text} for text in _system_texts(message) if text]
            continue
        blocks: Any = message.text() if message.plain else [_block(p, i, j) for j, p in enumerate(message.parts)]
        turns.append({"role": message.role, "content": blocks})
    return system, turns


def _system_texts(message: Message) -> list[str]:
    """The texts of a system message. Anthropic's ``system`` takes text blocks only, each non-empty ("text content
    blocks must be non-empty"): empty texts are left out, and any other part is a ``ConfigError`` naming it,
    rather than a 400 on every row."""
    for part in message.parts:
        if not isinstance(part, TextPart):
            raise ConfigError(f"system message: Anthropic takes text only there, got {describe(part)}")
    return [p.text for p in message.parts if isinstance(p, TextPart)]


def _block(part: Part, message: int, index: int) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    if isinstance(part, ImagePart):
        if part.data is not None:
            return {"type": "image", "source": {"type": "base64", "media_type": part.mime,
                                                "data": base64.b64encode(part.data).decode()}}
        url = part.url or ""
        media, data = _data_url(url)
        if data is None:
            return {"type": "image", "source": {"type": "url", "url": url}}
        return {"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}
    if isinstance(part, FilePart) and part.data is not None:
        block: dict[str, Any]
        try:
            text = part.data.decode("utf-8") if part.mime == "text/plain" else None
        except UnicodeDecodeError:  # not UTF-8 text: sent as base64, the API judges it
            text = None
        if text is not None:
            block = {"type": "document", "source": {"type": "text", "media_type": part.mime, "data": text}}
        else:
            block = {"type": "document", "source": {"type": "base64", "media_type": part.mime,
                                                    "data": base64.b64encode(part.data).decode()}}
        if part.name:
            block["title"] = part.name
        return block
    raise UnsupportedPartError(part, PROVIDER, message, index)


def _data_url(url: str) -> tuple[str, str | None]:
    """``(media type, base64 data)`` of a ``data:`` URL; ``("", None)`` for any other URL."""
    if not url.startswith("data:"):
        return "", None
    head, _, data = url[5:].partition(",")
    media, *flags = head.split(";")
    return (media or "application/octet-stream"), (data if "base64" in flags else
                                                     base64.b64encode(data.encode()).decode())


@functools.lru_cache(maxsize=256)
def _forced_tool_json(response_model: type[BaseModel], thinking: bool) -> str:
    from instructor.v2.providers.anthropic.handlers import AnthropicToolsHandler

    kwargs: dict[str, Any] = {"messages": []}
    if thinking:
        kwargs["thinking"] = {"type": "enabled"}
    _, prepared = AnthropicToolsHandler().prepare_request(response_model, kwargs)
    system = prepared.get("system") if thinking else None
    return json.dumps({"tools": prepared["tools"], "tool_choice": prepared["tool_choice"],
                       "system": system if isinstance(system, list) else []})


def forced_tool(response_model: type[BaseModel],
                thinking: bool) -> tuple[list[dict[str, Any]], dict[str, Any], list[dict[str, Any]]]:
    """``(tools, tool_choice, extra system blocks)`` forcing the answer into ``response_model``'s tool, as
    instructor's Anthropic TOOLS mode shapes them (with extended thinking a forced tool is refused, so the choice
    is ``auto`` and the system asks for the tool call alone). Built once per model, copied per row."""
    shaped = json.loads(_forced_tool_json(response_model, thinking))
    return shaped["tools"], shaped["tool_choice"], shaped["system"]


def mark_head(request: dict[str, Any], head: str) -> dict[str, Any]:
    """``request`` with a ``cache_control`` breakpoint at the end of ``head`` in its first user turn: the text
    before the template's last field (a string's start, or its leading text blocks joined by newlines)."""
    turns = request.get("messages") or []
    first = next((i for i, turn in enumerate(turns) if turn.get("role") == "user"), None)
    if first is None:
        return request
    content = turns[first]["content"]
    if isinstance(content, str):
        if not content.startswith(head):
            return request
        blocks = [{"type": "text", "text": head, "cache_control": EPHEMERAL}]
        if content[len(head):]:
            blocks.append({"type": "text", "text": content[len(head):]})
    else:
        at = _head_end(content, head)
        if at is None:
            return request
        blocks = [*content[:at], {**content[at], "cache_control": EPHEMERAL}, *content[at + 1:]]
    marked = [*turns[:first], {**turns[first], "content": blocks}, *turns[first + 1:]]
    return {**request, "messages": marked}


def _head_end(blocks: list[dict[str, Any]], head: str) -> int | None:
    """The index of the text block where ``head`` (leading text blocks joined by newlines) ends, if it does."""
    joined: str | None = None
    for index, block in enumerate(blocks):
        if block.get("type") != "text":
            return None
        text = str(block.get("text", ""))
        joined = text if joined is None else f"{joined}\n{text}"
        if joined == head:
            return index
        if not head.startswith(joined):
            return None
    return None
