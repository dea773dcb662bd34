"""Hostile review of the neutral messages (fe5fce6): each test fails on that commit and names the documented
behaviour it models.

Sources: RFC 2397 ("The data URL scheme": ``data:[<mediatype>][;base64],<data>``, the media type with its
parameters, data without ``;base64`` percent-encoded, ``text/plain;charset=US-ASCII`` when no media type is
written) and RFC 3986 (a scheme is case-insensitive); Anthropic's Messages API (image media types ``image/jpeg``,
``image/png``, ``image/gif``, ``image/webp``, and its 400 "Image does not match the provided media type" when the
bytes are another type: BerriAI/litellm#24900, home-assistant/core#167208); OpenAI's Chat Completions reference (a
message's optional ``name``; a ``file`` part takes ``file_data`` or ``file_id``) and Responses reference (an
assistant turn's text is ``output_text``; ``input_text`` there is refused; ``instructions`` is a string); the
Python packaging "Entry points" spec (a provider another package registers in ``ai_assets.providers``).
"""

from __future__ import annotations

import base64
import io
import json
import sys
import tempfile
import urllib.parse
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from ai_assets import FileColumn, ImageColumn, OpenAICompatibleProvider, PromptParams, RunOptions, prompt
from ai_assets.functions.prompt import PromptTask
from ai_assets.providers import registry
from ai_assets.providers.anthropic import AnthropicProvider
from ai_assets.providers.anthropic_messages import anthropic_messages
from ai_assets.providers.failover import Failover
from ai_assets.providers.messages import (
    AudioPart,
    FilePart,
    ImagePart,
    Message,
    MessageError,
    Part,
    TextPart,
    UnsupportedPartError,
    neutral,
)
from ai_assets.providers.openai_messages import openai_messages
from ai_assets.runtime.errors import ConfigError
from ai_assets.runtime.ratelimit.breaker import BreakerSettings
from ai_assets.runtime.retry import RetryPolicy
from ai_assets.testing import FakeOpenAIServer, Fault
from ai_assets.testing.anthropic_server import FakeAnthropicServer

PNG = b"\x89PNG\r\n\x1a\n" + bytes(24)
JPEG = b"\xff\xd8\xff\xe0" + bytes(24)
TAKEN = {"image/jpeg", "image/png", "image/gif", "image/webp"}


def bmp() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (2, 2)).save(out, "BMP")
    return out.getvalue()


def openai_provider() -> OpenAICompatibleProvider:
    return OpenAICompatibleProvider("m", base_url="http://127.0.0.1:9/v1", api_key="k")


def responses() -> OpenAICompatibleProvider:
    return OpenAICompatibleProvider("gpt-4o-mini", base_url="http://127.0.0.1:9/v1", api_key="k", api="responses")


def claude() -> AnthropicProvider:
    return AnthropicProvider("claude-sonnet-4-5", base_url="http://127.0.0.1:9", api_key="k")


def user(*parts: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": list(parts)}]


def image_source(body: dict[str, Any], index: int = 0) -> dict[str, Any]:
    source: dict[str, Any] = body["messages"][0]["content"][index]["source"]
    return source


# -- Anthropic checks an image's bytes against its media type -------------------------------------------------------
def test_anthropic_is_sent_the_media_type_the_image_bytes_have() -> None:
    """Anthropic answers 400 "Image does not match the provided media type image/jpeg" for a PNG declared as JPEG
    (litellm#24900: tools and pasteboards mislabel images; ``image/jpg`` is a common label). Before: the declared
    type was sent as given, so every such row came back a 400. The bytes' magic number decides."""
    b64 = base64.b64encode(PNG).decode()
    by_hand = claude().chat_request([Message.user("What is it?", image=PNG, mime="image/jpeg")], None, {})
    assert image_source(by_hand, 1) == {"type": "base64", "media_type": "image/png", "data": b64}
    raw = claude().chat_request(user({"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{b64}"}}),
                                None, {})
    assert image_source(raw) == {"type": "base64", "media_type": "image/png", "data": b64}
    jpg = claude().chat_request([Message("user", (ImagePart(data=JPEG, mime="image/jpg"),))], None, {})
    assert image_source(jpg)["media_type"] == "image/jpeg"


@pytest.mark.parametrize("url", [f"data:image/bmp;base64,{base64.b64encode(bmp()).decode()}",
                                 "data:image/svg+xml,%3Csvg%20xmlns%3D%22http%3A%2F%2Fwww.w3.org%2F2000%2Fsvg%22%2F%3E"])
def test_an_image_type_anthropic_does_not_take_is_the_row_s_error_before_sending(url: str) -> None:
    """Anthropic takes jpeg, png, gif and webp only ("Input should be 'image/jpeg', 'image/png', 'image/gif' or
    'image/webp'"). Before: a BMP or SVG data URL was sent and came back a 400; now it is refused before sending,
    as audio is, naming the part and never its bytes."""
    with pytest.raises(UnsupportedPartError, match=r"an image part \(url\) \(messages\[0\]\.parts\[1\]\) is not "
                                                   r"supported by provider anthropic") as raised:
        claude().chat_request(user({"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": url}}),
                              None, {})
    assert "base64" not in str(raised.value) and "svg" not in str(raised.value)


def test_a_document_anthropic_cannot_read_is_refused_before_sending_and_utf8_text_is_read() -> None:
    """Anthropic's ``document`` blocks: a PDF as ``base64`` ``application/pdf`` or text as a ``text`` source of
    ``text/plain`` (``FakeAnthropicServer`` answers any other a 400 "unsupported media_type"). Before: an HTML or
    CSV file went as base64 of ``text/html`` and a binary file as ``application/octet-stream``, each a request and
    a 400; now UTF-8 text of any ``text/*`` type is read as text, and other bytes are refused before sending."""
    table = pa.table({"f": [b"%PDF-1.4\n%%EOF", b"<!doctype html><p>warranty: 2 years</p>", b"\x00\xff\x10binary"],
                      "name": ["a.pdf", "b.html", "c.bin"]})
    with FakeAnthropicServer(in_process=True) as server:
        out = prompt(table, ["Read:", FileColumn("f", filename_column="name")],
                     provider=AnthropicProvider("claude-sonnet-4-5", base_url=server.base_url, api_key="k"),
                     options=RunOptions(on_error="null"))
        errors = out.table.column("response_error").to_pylist()
        assert errors[:2] == [None, None]
        assert errors[2] == ("refused before sending: column 'f': a file part (application/octet-stream, c.bin) "
                             "(messages[0].parts[1]) is not supported by provider anthropic")
        assert server.stats().chat_requests == 2
        assert [p["mime"] for p in server.stats().file_parts] == ["application/pdf", "text/plain"]


# -- RFC 2397 data URLs ------------------------------------------------------------------------------------------
def test_a_data_url_is_read_as_rfc_2397_writes_it() -> None:
    """RFC 2397: data without ``;base64`` is percent-encoded (``hello%20world`` is "hello world"), and the scheme
    is case-insensitive (RFC 3986). Before: the text file reached Claude as ``hello%20world``, OpenAI got the
    base64 of the still-encoded text, a percent-encoded PNG was base64 of its escapes, and ``DATA:`` was sent to
    Anthropic as a URL to fetch."""
    text_file = {"type": "file", "file": {"filename": "a.txt", "file_data": "data:text/plain,hello%20w%C3%B6rld"}}
    document = claude().chat_request(user(text_file), None, {})["messages"][0]["content"][0]
    assert document["source"] == {"type": "text", "media_type": "text/plain", "data": "hello wörld"}
    sent = openai_provider().chat_request(user(text_file), None, {})["messages"][0]["content"][0]["file"]
    assert base64.b64decode(sent["file_data"].partition(",")[2]) == "hello wörld".encode()
    escaped = {"type": "image_url", "image_url": {"url": "data:image/png," + urllib.parse.quote(PNG)}}
    assert base64.b64decode(image_source(claude().chat_request(user(escaped), None, {}))["data"]) == PNG
    upper = {"type": "image_url", "image_url": {"url": "DATA:image/png;BASE64," + base64.b64encode(PNG).decode()}}
    assert image_source(claude().chat_request(user(upper), None, {}))["type"] == "base64"


def test_one_row_s_unreadable_data_url_is_that_row_s_error_not_the_whole_call() -> None:
    """RFC 2397 base64 data, in a column of image URLs (``ImageColumn(as_url=True)``), one row's value corrupt
    (RFC 4648: ``@`` is outside the alphabet). The row is refused naming its column and part, never its data; the
    other rows (a valid data: URL, an https URL, which Anthropic fetches itself: ``source.type: url``) are sent.
    Reading data: URLs as RFC 2397 says must not turn one bad value into a failed call."""
    good = "data:image/png;base64," + base64.b64encode(PNG).decode()
    table = pa.table({"u": [good, "data:image/png;base64,@@secret-ish@@", "https://example.com/a.png"]})
    with FakeAnthropicServer(in_process=True) as server:
        out = prompt(table, ["What is it?", ImageColumn("u", as_url=True)],
                     provider=AnthropicProvider("claude-sonnet-4-5", base_url=server.base_url, api_key="k"),
                     options=RunOptions(on_error="null"))
        errors = out.table.column("response_error").to_pylist()
        assert errors[0] is None and errors[2] is None and server.stats().chat_requests == 2
        assert errors[1] is not None and errors[1].startswith(
            "refused before sending: column 'u': an image part (url) (messages[0].parts[1]) cannot be read: its "
            "data: URL: data is not valid base64")
        assert "secret-ish" not in errors[1]


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["application/pdf", "text/plain;charset=utf-8", "", "application/pdf;name=report.pdf",
                        "text/csv;header=present;charset=utf-8"]), st.binary(max_size=48))
def test_a_file_data_url_with_parameters_round_trips_byte_for_byte(mediatype: str, data: bytes) -> None:
    """RFC 2397's media type carries parameters (``;charset=utf-8``) and may be empty. Before: the parameters were
    dropped and an empty type became ``application/octet-stream``, so a user's own dict messages gave a new body,
    a new journal key, and every journaled row was paid for again."""
    messages = user({"type": "file", "file": {"filename": "f", "file_data":
                                              f"data:{mediatype};base64,{base64.b64encode(data).decode()}"}})
    assert json.dumps(openai_messages(neutral(messages))) == json.dumps(messages)


# -- what a neutral message cannot carry is refused, never dropped ------------------------------------------------
@pytest.mark.parametrize(("message", "where"), [
    ({"role": "user", "name": "alice", "content": "hi"}, r"messages\[0\]: 'name' is not taken"),
    (user({"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}})[0],
     r"messages\[0\]\.content\[0\]: 'cache_control' is not taken"),
    (user({"type": "file", "file": {"file_id": "file-abc", "file_data": "data:application/pdf;base64,JVBE"}})[0],
     r"messages\[0\]\.content\[0\]\.file: give file_data or file_id, not both"),
    (user({"type": "image_url", "image_url": {"url": "https://example.com/a.png", "dimensions": "1x1"}})[0],
     r"messages\[0\]\.content\[0\]\.image_url: 'dimensions' is not taken"),
])
def test_a_field_a_neutral_message_cannot_carry_is_an_error_naming_it(message: dict[str, Any], where: str) -> None:
    """OpenAI's Chat Completions messages take an optional ``name`` ("provides the model information to
    differentiate between participants"), OpenAI-compatible gateways take ``cache_control`` on a text part, and a
    ``file`` takes ``file_data`` or ``file_id``. Before: each was dropped without a word (the model lost the
    speaker's name, the gateway its cache breakpoint, the file its id) and the body, so the journal key,
    changed."""
    for provider in (openai_provider(), claude()):
        with pytest.raises(MessageError, match=where):
            provider.chat_request([message], None, {})


def test_an_error_cuts_a_huge_hostile_value_instead_of_echoing_it() -> None:
    """Errors go into tables, logs and Dagster metadata. Before: a 1 MB role or part type came back whole in the
    error text."""
    for bad in ({"role": "x" * 1_000_000, "content": "hi"}, user({"type": "v" * 1_000_000})[0]):
        with pytest.raises(MessageError) as raised:
            openai_provider().chat_request([bad], None, {})
        assert len(str(raised.value)) < 300 and "characters, cut" in str(raised.value)


# -- the Responses API -------------------------------------------------------------------------------------------
def test_the_responses_api_gets_assistant_text_as_output_text_and_refuses_what_instructions_cannot_hold() -> None:
    """OpenAI's Responses API: an assistant turn's text parts are ``output_text`` (``input_text`` there is a 400:
    "Supported values are: 'output_text' and 'refusal'"), and ``instructions`` is a string. Before: a few-shot
    assistant turn of parts was a 400 on every row, and an image in a system message was dropped silently."""
    shot: list[dict[str, Any]] = [{"role": "user", "content": "2+2?"},
                                  {"role": "assistant", "content": [{"type": "text", "text": "4"}]},
                                  {"role": "user", "content": "3+3?"}]
    body = responses().chat_request(shot, None, {})
    assert body["input"][1] == {"role": "assistant", "content": [{"type": "output_text", "text": "4"}]}
    assert body["input"][2] == {"role": "user", "content": "3+3?"}
    with pytest.raises(UnsupportedPartError, match=r"an image part \(image/png\) \(messages\[0\]\.parts\[1\]\)"):
        responses().chat_request([Message("system", (TextPart("Be brief."), ImagePart(data=PNG, mime="image/png"))),
                                  Message.user("hi")], None, {})


# -- a provider written for the old dict contract ------------------------------------------------------------------
PLUGIN = '''
from contextlib import asynccontextmanager

class DictShout:
    """Written for the contract before fe5fce6: messages as OpenAI-shaped dicts."""
    secrets = ()
    def identity(self):
        return {"provider": "dict-shout"}
    def chat_request(self, messages, response_model, params):
        return {"prompt": "\\n".join(m["content"] for m in messages)}
    @asynccontextmanager
    async def connect(self, response_model, concurrency, timeout_s):
        yield self
    async def send(self, request):
        raise AssertionError("never sent: the plan fails first")

class PassOn(DictShout):
    def chat_request(self, messages, response_model, params):
        return {"model": "x", "messages": messages}
'''


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Two providers another package registers through the ``ai_assets.providers`` entry-point group (an installed
    distribution's ``entry_points.txt``, the packaging spec's format)."""
    (tmp_path / "dict_shout.py").write_text(PLUGIN)
    info = tmp_path / "dict_shout-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: dict-shout\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[ai_assets.providers]\ndict_shout = dict_shout:DictShout\n"
                                           "pass_on = dict_shout:PassOn\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.plugins.cache_clear()
    yield
    registry.plugins.cache_clear()
    sys.modules.pop("dict_shout", None)


@pytest.mark.usefixtures("plugins")
def test_a_provider_written_for_dict_messages_fails_loudly_naming_the_fix() -> None:
    """A plugin written to the documented contract before fe5fce6 reads ``message["content"]`` or passes the
    messages into its body. Before: a bare ``TypeError: 'Message' object is not subscriptable`` from inside the
    plugin, or, silently, a journal key hashed from the ``repr`` of ``Message`` values (``cache_key`` falls back
    to ``str``) and a body that is not JSON. Now a ``ConfigError`` names the provider and the one-line fix."""
    table = pa.table({"q": ["a", "b"]})
    for name in ("dict_shout", "pass_on"):
        with pytest.raises(ConfigError, match=r"dict_shout\.\w+ .*openai_messages\(messages\)"):
            prompt(table, "Say {q}", provider=registry.load_provider(name))
    chain = Failover(openai_provider(), registry.load_provider("dict_shout"))
    with pytest.raises(ConfigError, match=r"provider dict_shout\.DictShout failed reading a message"):
        PromptTask("Say {q}", chain, None, None, "out", PromptParams(), RunOptions()).plan(table.to_batches()[0])


# -- a failover chain whose members take different parts ---------------------------------------------------------
def wav() -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as sound:
        sound.setnchannels(1)
        sound.setsampwidth(2)
        sound.setframerate(8000)
        sound.writeframes(b"\0" * 800)
    return out.getvalue()


def test_a_failover_chain_sends_a_row_to_the_members_that_can_take_it() -> None:
    """OpenAI's Chat Completions take ``input_audio``; Anthropic's Messages API has no audio block. A chain
    ``Failover(openai, anthropic)`` answers a row with the first member that is up. Before fe5fce6 an audio row was
    answered by the primary; fe5fce6 refused every audio row of such a chain before sending, though the primary
    could answer it. Now the member that cannot take the row is passed over for it: with the primary up the audio
    row is answered; with the primary down (503) it fails naming both, and the text row goes to Anthropic."""
    table = pa.table({"f": [wav(), b"%PDF-1.4\n%%EOF"]})
    template: list[str | FileColumn] = ["Describe:", FileColumn("f")]
    with FakeOpenAIServer() as primary, FakeAnthropicServer(in_process=True) as fallback:
        chain = Failover(OpenAICompatibleProvider("m", base_url=primary.base_url, api_key="k"),
                         AnthropicProvider("claude-sonnet-4-5", base_url=fallback.base_url, api_key="k"),
                         breaker=BreakerSettings(store=f"file://{tempfile.mkdtemp(prefix='breakers-')}"))
        out = prompt(table, template, provider=chain, options=RunOptions(on_error="null"))
        assert out.table.column("response_error").to_pylist() == [None, None]
        assert out.table.column("response_provider").to_pylist() == ["openai-compatible:m"] * 2
        primary.set_faults(Fault("503", attempts=None))
        down = prompt(table, ["Now describe:", FileColumn("f")], provider=chain,
                      options=RunOptions(on_error="null", retry=RetryPolicy(max_attempts=1)))
        errors = down.table.column("response_error").to_pylist()
        assert errors[1] is None and down.table.column("response_provider")[1].as_py() == "anthropic:claude-sonnet-4-5"
        assert errors[0] is not None and "anthropic:claude-sonnet-4-5: cannot send this row's parts" in errors[0]
        assert fallback.stats().chat_requests == 1


# -- any sequence of parts ---------------------------------------------------------------------------------------
_images = st.builds(lambda data, mime: ImagePart(data=data, mime=mime),
                    st.sampled_from([PNG, JPEG, bmp(), b"GIF89a" + bytes(8), b"not an image"]),
                    st.sampled_from(["image/png", "image/jpeg", "image/jpg", "image/bmp", "image/heic"]))
_data_urls = st.builds(lambda data, mime: ImagePart(url=f"data:{mime};base64,{base64.b64encode(data).decode()}"),
                       st.sampled_from([PNG, JPEG, bmp()]), st.sampled_from(["image/png", "image/jpeg", ""]))
_parts = st.lists(st.one_of(st.builds(TextPart, st.text(max_size=8)), _images, _data_urls,
                            st.just(ImagePart(url="https://example.com/a.png")),
                            st.just(FilePart(b"%PDF-1.4", "application/pdf", "a.pdf")),
                            st.just(AudioPart(b"RIFF", "audio/wav"))), max_size=5)


@settings(max_examples=150, deadline=None)
@given(_parts)
def test_any_parts_reach_anthropic_in_order_with_a_type_it_takes_or_the_first_it_cannot_is_named(
        parts: list[Part]) -> None:
    """Anthropic's content blocks: text, image (a type in ``TAKEN``, matching the bytes) and document; no audio.
    Every part is sent, in order, as a block Anthropic takes, or the first it cannot take is the row's error."""
    def takes(part: Part) -> bool:
        if isinstance(part, AudioPart):
            return False
        if isinstance(part, ImagePart):
            data = part.data if part.data is not None else base64.b64decode((part.url or ",").partition(",")[2])
            return data[:4] in (PNG[:4], JPEG[:4], b"GIF8") or bool(part.url and part.url.startswith("https:"))
        return True

    refused = next((j for j, p in enumerate(parts) if not takes(p)), None)
    try:
        _, turns = anthropic_messages([Message("user", tuple(parts))])
    except UnsupportedPartError as exc:
        assert exc.part_index == refused
        return
    assert refused is None
    blocks = turns[0]["content"]
    assert len(blocks) == len(parts)
    for part, block in zip(parts, blocks, strict=True):
        assert block["type"] == {TextPart: "text", ImagePart: "image", FilePart: "document"}[type(part)]
        if block["type"] == "image" and block["source"]["type"] == "base64":
            data = base64.b64decode(block["source"]["data"])
            assert block["source"]["media_type"] in TAKEN and data[:4] in (PNG[:4], JPEG[:4], b"GIF8")
            assert block["source"]["media_type"] == {PNG[:4]: "image/png", JPEG[:4]: "image/jpeg"}.get(
                data[:4], "image/gif")
