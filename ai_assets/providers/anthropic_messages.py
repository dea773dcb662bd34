"""Neutral messages as Anthropic Messages content, and the cache breakpoints placed in them.

Shapes from Anthropic's Messages API docs: ``system`` is a top-level list of text blocks; a user turn's content is
a string or blocks: ``text``, ``image`` (``source`` ``base64`` with a ``media_type``, or ``url``) and ``document``
(a PDF as ``base64`` ``application/pdf``, a text file as ``text`` ``text/plain``; no other type). Audio is not a
content block Anthropic takes, nor is an OpenAI ``file_id``, nor another document type: such a part is an
``UnsupportedPartError`` (the row's error, before anything is sent), never dropped. Several system messages
become several system blocks, in order; consecutive turns of one role are sent as they are (the API combines them
into one turn).
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
    MessageError,
    Part,
    PartError,
    TextPart,
    UnsupportedPartError,
    describe,
    image_mime,
    media_type,
    parse_data_url,
)
from ai_assets.runtime.errors import ConfigError

EPHEMERAL = {"type": "ephemeral"}
"""Anthropic's cache breakpoint (the 5-minute cache)."""
PROVIDER = "anthropic"
IMAGE_TYPES = {"image/jpeg", "image/png", "image/gif", "image/webp"}
"""The image media types Anthropic takes ("Input should be 'image/jpeg', 'image/png', 'image/gif' or
'image/webp'"); it also checks the bytes against the declared type ("Image does not match the provided media
type"), so the type sent is the one the bytes' magic number says (``image_mime`` knows all four), never the
declared one: bytes of any other type, or of none, are not an image Anthropic reads."""


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
        return _image(part, message, index)
    if isinstance(part, FilePart) and part.data is not None:
        return _document(part, part.data, message, index)
    raise UnsupportedPartError(part, PROVIDER, message, index)


def _document(part: FilePart, data: bytes, message: int, index: int) -> dict[str, Any]:
    """A ``document`` block: a PDF as ``base64``, a UTF-8 text file (any ``text/*``: plain, CSV, HTML, Markdown)
    as a ``text`` source of ``text/plain``. Anthropic reads no other document (a 400 "unsupported media_type"
    after a request), so any other type, or text that is not UTF-8, is an ``UnsupportedPartError`` before
    sending."""
    media = media_type(part.mime)
    block: dict[str, Any]
    if media == "application/pdf":
        block = {"type": "document", "source": {"type": "base64", "media_type": media,
                                                "data": base64.b64encode(data).decode()}}
    else:
        try:
            text = data.decode("utf-8") if media.startswith("text/") else None
        except UnicodeDecodeError:
            text = None
        if text is None:
            raise UnsupportedPartError(part, PROVIDER, message, index)
        block = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": text}}
    if part.name:
        block["title"] = part.name
    return block


def _image(part: ImagePart, message: int, index: int) -> dict[str, Any]:
    """An ``image`` block: ``url`` source for a URL, else ``base64`` (bytes, or a ``data:`` URL's data: RFC 2397,
    percent-decoded when not base64) typed by the bytes' magic number (``IMAGE_TYPES``); bytes of a type Anthropic
    does not take (BMP, SVG, HEIC, not an image) are an ``UnsupportedPartError``, the row's error before
    sending."""
    try:
        parsed = parse_data_url(part.url, "its data: URL") if part.url is not None else None
    except MessageError as exc:  # one row's bad data: URL (an ImageColumn(as_url=True) value): that row's error
        raise PartError(part, message, index, f"cannot be read: {exc}") from exc
    if part.url is not None and parsed is None:
        return {"type": "image", "source": {"type": "url", "url": part.url}}
    data = parsed[1] if parsed is not None else part.data or b""
    media = image_mime(data)
    if media not in IMAGE_TYPES:
        raise UnsupportedPartError(part, PROVIDER, message, index)
    head, _, given = (part.url or "").partition(",")  # base64 kept as given: the body (the journal key) is as before
    payload = given if head.lower().endswith(";base64") else base64.b64encode(data).decode()
    return {"type": "image", "source": {"type": "base64", "media_type": media, "data": payload}}


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
