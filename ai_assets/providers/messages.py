"""Provider-neutral chat messages: what a ``Prompter`` receives, before any vendor's wire format.

A ``Message`` is a role (``system``, ``user``, ``assistant``) and a tuple of parts: ``TextPart``, ``ImagePart``
(bytes or a URL), ``FilePart`` (a PDF, a text file...) and ``AudioPart``. Each vendor module translates them to its
own wire shape (``openai_wire.openai_messages``, ``anthropic_messages.anthropic_messages``); a part a vendor does
not take is an ``UnsupportedPartError`` naming the part and the provider, which ``prompt`` turns into that row's
error before anything is sent.

The OpenAI Chat Completions shape (``{"role", "content"}``, content a string or ``text`` / ``image_url`` / ``file``
/ ``input_audio`` parts) is still accepted wherever messages are (``from_openai``); a message or part that does
not fit is a ``MessageError`` naming it (``messages[1].content[2]``). Roles: OpenAI's ``developer`` is read as
``system`` (OpenAI's docs: "developer messages replace the previous system messages" for o1 and newer; both give
the instructions the model follows); ``tool`` and ``function`` (tool-call results) are refused: a row's prompt has
no tool-calling turns.

``Message.plain`` keeps the one distinction the wire shapes make that parts alone do not: a single text sent as a
string (OpenAI's string ``content``) or as a list of one ``text`` part. The request body, and so the journal key,
depends on it.
"""

from __future__ import annotations

import base64
import binascii
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from ai_assets.runtime.errors import ConfigError

Role = Literal["system", "user", "assistant"]
ROLES: dict[str, Role] = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
AUDIO_FORMATS = {"audio/wav": "wav", "audio/mpeg": "mp3"}
"""OpenAI's ``input_audio`` formats, by MIME type."""


class MessageError(ConfigError):
    """A message (or one of its parts) that is not a valid chat message; the text names which one."""


class PartError(ConfigError):
    """A part that cannot be sent as it is (a ``data:`` URL that is not valid base64): the row fails, naming the
    part and why, never its content."""

    def __init__(self, part: Part, message_index: int, part_index: int, why: str) -> None:
        super().__init__(f"{describe(part)} (messages[{message_index}].parts[{part_index}]) {why}")
        self.part = part
        self.message_index = message_index
        self.part_index = part_index


class UnsupportedPartError(PartError):
    """A part the provider cannot send (audio to Anthropic, a file to llama.cpp): the row fails, naming both."""

    def __init__(self, part: Part, provider: str, message_index: int, part_index: int) -> None:
        super().__init__(part, message_index, part_index, f"is not supported by provider {provider}")


@dataclass(frozen=True)
class TextPart:
    text: str

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise MessageError(f"a text part's text must be a string, got {type(self.text).__name__}")


@dataclass(frozen=True)
class ImagePart:
    """An image: encoded ``data`` with its ``mime`` type, or a ``url`` (an https URL, or a ``data:`` URL kept as
    given). ``detail`` is OpenAI's vision detail (``low`` / ``high`` / ``auto``), None: not said."""

    data: bytes | None = None
    url: str | None = None
    mime: str = ""
    detail: str | None = None

    def __post_init__(self) -> None:
        _check_bytes(self.data, "an image part")
        if (self.data is None) == (self.url is None):
            raise MessageError("an image part needs exactly one of data (bytes) or url")
        if self.data is not None and not self.mime:
            raise MessageError("an image part with data needs its mime type (image/png, image/jpeg, ...)")


@dataclass(frozen=True)
class FilePart:
    """A document sent whole (a PDF, a text file): ``data`` and ``mime``, or an uploaded ``file_id`` (OpenAI's
    Files API). ``name`` is its file name, shown to the model where the vendor takes one."""

    data: bytes | None = None
    mime: str = "application/octet-stream"
    name: str | None = None
    file_id: str | None = None

    def __post_init__(self) -> None:
        _check_bytes(self.data, "a file part")
        if (self.data is None) == (self.file_id is None):
            raise MessageError("a file part needs exactly one of data (bytes) or file_id")


@dataclass(frozen=True)
class AudioPart:
    data: bytes
    mime: str

    def __post_init__(self) -> None:
        _check_bytes(self.data, "an audio part")
        if self.data is None:
            raise MessageError("an audio part needs its data (bytes)")

    @property
    def format(self) -> str:
        """OpenAI's ``input_audio`` format (``wav``, ``mp3``)."""
        return AUDIO_FORMATS.get(self.mime, self.mime.removeprefix("audio/"))


Part: TypeAlias = TextPart | ImagePart | FilePart | AudioPart


def _check_bytes(data: object, what: str) -> None:
    if data is not None and not isinstance(data, bytes):
        raise MessageError(f"{what}'s data must be bytes, got {type(data).__name__}")


@dataclass(frozen=True)
class Message:
    role: Role
    parts: tuple[Part, ...]
    plain: bool = False
    """One text sent as a plain string (OpenAI's string ``content``), not a list of parts."""

    def __post_init__(self) -> None:
        if not isinstance(self.parts, tuple):  # a list given: kept as a tuple, so the message stays a value
            object.__setattr__(self, "parts", tuple(self.parts))
        if self.role not in ("system", "user", "assistant"):
            raise MessageError(f"message role must be system, user or assistant, got {self.role!r}")
        bad = next((p for p in self.parts if not isinstance(p, TextPart | ImagePart | FilePart | AudioPart)), None)
        if bad is not None:
            raise MessageError(f"a message part must be TextPart, ImagePart, FilePart or AudioPart, got "
                               f"{type(bad).__name__}")
        if self.plain and (len(self.parts) != 1 or not isinstance(self.parts[0], TextPart)):
            raise MessageError("a plain message holds exactly one text part")

    @classmethod
    def system(cls, text: str) -> Message:
        return cls("system", (TextPart(text),), plain=True)

    @classmethod
    def user(cls, text: str | None = None, *, image: bytes | str | None = None, mime: str | None = None,
             parts: Sequence[Part] = ()) -> Message:
        """A user message: ``Message.user("hi")`` (a plain string), ``Message.user("What is this?",
        image=png_bytes)`` (text then the image; a ``str`` image is a URL), or any ``parts``."""
        if image is None and not parts and text is not None:
            return cls("user", (TextPart(text),), plain=True)
        out: list[Part] = [TextPart(text)] if text is not None else []
        if isinstance(image, str):
            out.append(ImagePart(url=image))
        elif image is not None:
            out.append(ImagePart(data=image, mime=mime or image_mime(image)))
        return cls("user", (*out, *parts))

    @classmethod
    def assistant(cls, text: str) -> Message:
        return cls("assistant", (TextPart(text),), plain=True)

    def text(self) -> str:
        """The text parts joined by blank lines (a system message's instructions)."""
        return "\n\n".join(p.text for p in self.parts if isinstance(p, TextPart))


MessagesIn: TypeAlias = "Sequence[Message | Mapping[str, Any]]"
"""What a built-in provider's ``chat_request`` takes: neutral messages, or OpenAI-shaped dicts (parsed first)."""


def describe(part: Part) -> str:
    """A part named for an error: its kind and type, never its content."""
    if isinstance(part, TextPart):
        return f"a text part ({len(part.text):,} characters)"
    if isinstance(part, ImagePart):
        return f"an image part ({part.mime or 'url'})"
    if isinstance(part, FilePart):
        return f"a file part ({part.mime}{', ' + part.name if part.name else ''})"
    return f"an audio part ({part.mime})"


def image_mime(data: bytes) -> str:
    """The MIME type of encoded image bytes, from their magic number."""
    signatures = {b"\x89PNG": "image/png", b"\xff\xd8\xff": "image/jpeg", b"GIF8": "image/gif", b"BM": "image/bmp"}
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":  # RIFF is WAV audio too
        return "image/webp"
    return next((mime for magic, mime in signatures.items() if data.startswith(magic)), "application/octet-stream")


def data_url(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def parse_data_url(url: str, where: str = "data: URL") -> tuple[str, bytes] | None:
    """``(media type as written, with its parameters; bytes)`` of a ``data:`` URL, None for any other URL.

    RFC 2397: ``data:[<mediatype>][;base64],<data>``; the scheme is case-insensitive (RFC 3986), the media type
    keeps its parameters (``text/plain;charset=utf-8``: written back as given, so a body round-trips byte for
    byte), and data without ``;base64`` is percent-encoded text (``hello%20world`` is ``hello world``)."""
    if url[:5].lower() != "data:":
        return None
    head, comma, payload = url[5:].partition(",")
    if not comma:
        raise MessageError(f"{where}: a data: URL needs a comma before its data (RFC 2397)")
    encoded = head.lower().endswith(";base64")
    mediatype = head[:-len(";base64")] if encoded else head
    return mediatype, _b64(payload, where) if encoded else urllib.parse.unquote_to_bytes(payload)


def media_type(mime: str) -> str:
    """The bare, lower-case ``type/subtype`` of a media type (parameters dropped); RFC 2397's default
    ``text/plain`` where none is written."""
    return mime.split(";", maxsplit=1)[0].strip().lower() or "text/plain"


def shown(value: object, limit: int = 40) -> str:
    """``repr(value)`` for an error, cut at ``limit`` characters (saying so): a hostile or huge value is never
    echoed whole into errors and logs."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters, cut)"


def _only(obj: Mapping[str, Any], keys: set[str], where: str) -> None:
    """A ``MessageError`` for a key the neutral message would not carry: never dropped silently (it would leave
    the body, and so the journal key, and the model's input, changed without a word)."""
    extra = sorted(str(k) for k in obj if k not in keys)
    if extra:
        raise MessageError(f"{where}: {shown(extra[0])} is not taken (only {', '.join(sorted(keys))}); it would be "
                           "dropped from the request")


def neutral(messages: MessagesIn) -> list[Message]:
    """``messages`` as neutral messages: ``Message`` values as they are, OpenAI-shaped dicts parsed
    (``from_openai``)."""
    if isinstance(messages, str | bytes | Mapping):
        raise MessageError(f"messages must be a list of messages, got {type(messages).__name__}")
    return [m if isinstance(m, Message) else from_openai(m, i) for i, m in enumerate(messages)]


def from_openai(message: Mapping[str, Any], index: int = 0) -> Message:
    """One OpenAI Chat Completions message as a ``Message``; a ``MessageError`` naming what does not fit."""
    where = f"messages[{index}]"
    if not isinstance(message, Mapping):
        raise MessageError(f"{where}: a message must be a dict with role and content, got {type(message).__name__}")
    role = message.get("role")
    if role not in ROLES:
        raise MessageError(f"{where}: role {shown(role)} is not taken (system, developer, user or assistant; tool "
                           "results have no place in a row's prompt)")
    _only(message, {"role", "content"}, where)
    content = message.get("content")
    if isinstance(content, str):
        return Message(ROLES[role], (TextPart(content),), plain=True)
    if not isinstance(content, list | tuple):
        raise MessageError(f"{where}.content must be a string or a list of parts, got {type(content).__name__}")
    return Message(ROLES[role], tuple(_part(p, f"{where}.content[{i}]") for i, p in enumerate(content)))


def _part(part: Any, where: str) -> Part:
    if isinstance(part, TextPart | ImagePart | FilePart | AudioPart):
        return part
    if isinstance(part, str) or not isinstance(part, Mapping):
        if isinstance(part, str):
            return TextPart(part)
        raise MessageError(f"{where}: a content part must be a dict with a type, got {type(part).__name__}")
    kind = part.get("type")
    if kind in ("text", "image_url", "file", "input_audio"):
        _only(part, {"type", str(kind)}, where)
    if kind == "text":
        text = part.get("text")
        if not isinstance(text, str):
            raise MessageError(f"{where}: a text part's text must be a string, got {type(text).__name__}")
        return TextPart(text)
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, Mapping) else None
        if not isinstance(image, Mapping) or not isinstance(url, str) or not url:
            raise MessageError(f"{where}: an image_url part needs image_url.url (a URL or a data: URL)")
        _only(image, {"url", "detail"}, f"{where}.image_url")
        detail = image.get("detail")
        return ImagePart(url=url, detail=None if detail is None else str(detail))
    if kind == "file":
        return _file(part.get("file"), where)
    if kind == "input_audio":
        audio = part.get("input_audio")
        data = audio.get("data") if isinstance(audio, Mapping) else None
        fmt = audio.get("format") if isinstance(audio, Mapping) else None
        if not isinstance(audio, Mapping) or not isinstance(data, str) or not isinstance(fmt, str):
            raise MessageError(f"{where}: an input_audio part needs input_audio.data (base64) and .format")
        _only(audio, {"data", "format"}, f"{where}.input_audio")
        mime = next((m for m, f in AUDIO_FORMATS.items() if f == fmt), f"audio/{fmt}")
        return AudioPart(_b64(data, where), mime)
    raise MessageError(f"{where}: unknown content part type {shown(kind)} (text, image_url, file or input_audio)")


def _file(file: Any, where: str) -> FilePart:
    if not isinstance(file, Mapping):
        raise MessageError(f"{where}: a file part needs a file object (file_data or file_id)")
    _only(file, {"file_data", "file_id", "filename"}, f"{where}.file")
    if "file_data" in file and "file_id" in file:
        raise MessageError(f"{where}.file: give file_data or file_id, not both (one would be dropped)")
    name = file.get("filename")
    name = None if name is None else str(name)
    if isinstance(file.get("file_id"), str):
        return FilePart(file_id=file["file_id"], name=name)
    url = file.get("file_data")
    parsed = parse_data_url(url, where) if isinstance(url, str) else None
    if parsed is None:
        raise MessageError(f"{where}: a file part's file_data must be a data: URL (data:<mime>;base64,...)")
    return FilePart(parsed[1], parsed[0], name)


def _b64(payload: str, where: str) -> bytes:
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MessageError(f"{where}: data is not valid base64 ({exc})") from exc
