"""Neutral messages as OpenAI's wire shapes: Chat Completions ``messages`` and the Responses API's ``instructions``
and ``input``.

Shapes from OpenAI's API reference: a Chat Completions message is ``{"role", "content"}``, the content a string or
parts: ``text``, ``image_url`` (``{"url", "detail"}``; image bytes as a base64 ``data:`` URL), ``file``
(``{"filename", "file_data"}`` as a data URL, or ``{"file_id"}``) and ``input_audio`` (``{"data", "format"}``, wav
or mp3). The Responses API takes ``input_text``, ``input_image`` and ``input_file`` parts, and the system text as
``instructions``.

These are the exact bodies built before messages were neutral (``tests/test_messages_pins.py`` pins them): the
journal key is a hash of the body, so a changed byte would re-send every journaled row.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from typing import Any

from ai_assets.providers.messages import (
    AudioPart,
    FilePart,
    ImagePart,
    Message,
    Part,
    TextPart,
    UnsupportedPartError,
    data_url,
)


def openai_messages(messages: Sequence[Message], provider: str = "openai-compatible",
                    unsupported: tuple[type, ...] = ()) -> list[dict[str, Any]]:
    """Chat Completions messages; a part of an ``unsupported`` kind is an ``UnsupportedPartError``."""
    if unsupported:
        refuse(messages, unsupported, provider)
    return [{"role": m.role, "content": m.text() if m.plain else openai_parts(m.parts)} for m in messages]


def refuse(messages: Sequence[Message], unsupported: tuple[type, ...], provider: str, first: int = 0) -> None:
    """An ``UnsupportedPartError`` for the first part of ``messages`` (numbered from ``first``) of an
    ``unsupported`` kind."""
    for i, message in enumerate(messages, first):
        for j, part in enumerate(message.parts):
            if isinstance(part, unsupported):
                raise UnsupportedPartError(part, provider, i, j)


def openai_parts(parts: Iterable[Part]) -> list[dict[str, Any]]:
    """Chat Completions content parts."""
    out: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, TextPart):
            out.append({"type": "text", "text": part.text})
        elif isinstance(part, ImagePart):
            image = {"url": image_url(part), **({"detail": part.detail} if part.detail is not None else {})}
            out.append({"type": "image_url", "image_url": image})
        elif isinstance(part, FilePart):
            out.append({"type": "file", "file": _file(part)})
        else:
            out.append({"type": "input_audio", "input_audio": _audio(part)})
    return out


def image_url(part: ImagePart) -> str:
    return part.url if part.url is not None else data_url(part.mime, part.data or b"")


def _file(part: FilePart) -> dict[str, Any]:
    named = {"filename": part.name} if part.name is not None else {}
    if part.file_id is not None:
        return {**named, "file_id": part.file_id}
    return {**named, "file_data": data_url(part.mime, part.data or b"")}


def _audio(part: AudioPart) -> dict[str, Any]:
    return {"data": base64.b64encode(part.data).decode(), "format": part.format}


def responses_input(messages: Sequence[Message]) -> tuple[str, list[dict[str, Any]]]:
    """``(instructions, input)`` of a Responses API request: system texts joined by blank lines, the other turns
    with ``input_*`` parts (an assistant turn's text as ``output_text``: OpenAI refuses ``input_text`` there); an
    image, file or audio part in a system or assistant message is an ``UnsupportedPartError``, never dropped.
    Audio goes as Chat Completions' ``input_audio`` part (the Responses API judges it)."""
    for i, m in enumerate(messages):  # instructions are a string; an assistant turn's parts are output_text
        if m.role != "user":
            refuse([m], (ImagePart, FilePart, AudioPart), f"openai-compatible (Responses API, {m.role}: text only)", i)
    system = "\n\n".join(m.text() for m in messages if m.role == "system")
    turns = []
    for m in messages:
        if m.role == "system":
            continue
        content: Any = m.text() if m.plain else [_responses_part(p, m.role) for p in m.parts]
        turns.append({"role": m.role, "content": content})
    return system, turns


def _responses_part(part: Part, role: str) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "output_text" if role == "assistant" else "input_text", "text": part.text}
    if isinstance(part, ImagePart):
        return {"type": "input_image", "image_url": image_url(part), "detail": part.detail or "auto"}
    if isinstance(part, FilePart):
        return {"type": "input_file", **_file(part)}
    return {"type": "input_audio", "input_audio": _audio(part)}
