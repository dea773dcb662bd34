"""Portable (OpenAI-shaped) chat messages as Anthropic Messages content, and the cache breakpoints placed in them.

Shapes from Anthropic's Messages API docs: ``system`` is a top-level list of text blocks; a user turn's content is
a string or blocks: ``text``, ``image`` (``source`` ``base64`` with a ``media_type``, or ``url``) and ``document``
(a PDF as ``base64`` ``application/pdf``, a text file as ``text`` ``text/plain``). A part Anthropic does not take
(audio, an image type it does not read) is sent as is, so the API's 400 fails that row alone, naming it.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
from typing import Any

from pydantic import BaseModel

from ai_assets.runtime.errors import ConfigError

EPHEMERAL = {"type": "ephemeral"}
"""Anthropic's cache breakpoint (the 5-minute cache)."""


def anthropic_messages(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(system blocks, turns)`` of ``messages``: system (and developer) text moves to the top level."""
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        role, content = message.get("role"), message.get("content")
        if role in ("system", "developer"):
            system += [{"type": "text", "text": text} for text in _system_texts(content) if text]
            continue
        blocks = content if isinstance(content, str) else [_block(part) for part in content or []]
        turns.append({"role": "assistant" if role == "assistant" else "user", "content": blocks})
    return system, turns


def _system_texts(content: Any) -> list[str]:
    """The texts of a system message (a string, or a list of strings and ``text`` parts). Anthropic's ``system``
    takes text blocks only, each non-empty ("text content blocks must be non-empty"): empty texts are left out,
    and any other part is a ``ConfigError`` naming it, rather than a 400 on every row."""
    parts = [content] if isinstance(content, str) else list(content or [])
    texts = []
    for part in parts:
        if isinstance(part, str) or (isinstance(part, dict) and part.get("type") == "text"):
            texts.append(part if isinstance(part, str) else str(part.get("text") or ""))
        else:
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise ConfigError(f"system message: Anthropic takes text only there, got a {kind!r} part")
    return texts


def _block(part: dict[str, Any]) -> dict[str, Any]:
    kind = part.get("type")
    if kind == "text":
        return {"type": "text", "text": part.get("text", "")}
    if kind == "image_url":
        url = str((part.get("image_url") or {}).get("url", ""))
        media, data = _data_url(url)
        if data is None:
            return {"type": "image", "source": {"type": "url", "url": url}}
        return {"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}
    if kind == "file":
        file = part.get("file") or {}
        media, data = _data_url(str(file.get("file_data", "")))
        block: dict[str, Any]
        if media == "text/plain" and data is not None:
            try:
                text = base64.b64decode(data, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):  # not UTF-8 text: sent as it came, the API judges it
                block = {"type": "document", "source": {"type": "base64", "media_type": media, "data": data}}
            else:
                block = {"type": "document", "source": {"type": "text", "media_type": media, "data": text}}
        else:
            block = {"type": "document", "source": {"type": "base64", "media_type": media, "data": data or ""}}
        if file.get("filename"):
            block["title"] = str(file["filename"])
        return block
    return dict(part)


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
