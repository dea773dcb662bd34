"""Neutral messages against hostile input: OpenAI-shaped dicts that do not fit, parts a vendor does not take, huge
and wrong-typed content. Each test names the documented behaviour it models.

Sources: OpenAI's API reference, Chat Completions "messages" (roles ``developer`` / ``system`` / ``user`` /
``assistant`` / ``tool``; user content a string or parts ``text``, ``image_url`` {``url``, ``detail``},
``input_audio`` {``data``, ``format``: wav | mp3}, ``file`` {``file_data`` | ``file_id``, ``filename``}; "developer
messages replace the previous system messages" for o1 and newer), and "Responses" (``instructions`` a string);
Anthropic's Messages API docs (``system`` a top-level string or text blocks; user content ``text``, ``image``,
``document`` blocks, no audio block; "consecutive user or assistant turns in your request will be combined into a
single turn"); llama.cpp's server README ("multimodal": ``image_url`` and ``input_audio`` parts; any other content
type is refused by ``oaicompat_chat_params_parse``).
"""

from __future__ import annotations

import base64
import io
import json
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ai_assets import FileColumn, ImageColumn, OpenAICompatibleProvider, PromptParams, RunOptions, prompt
from ai_assets.functions.prompt import PromptTask
from ai_assets.providers.anthropic import AnthropicProvider
from ai_assets.providers.anthropic_messages import anthropic_messages
from ai_assets.providers.failover import Failover
from ai_assets.providers.llama_cpp import LlamaCppProvider
from ai_assets.providers.messages import (
    AudioPart,
    FilePart,
    ImagePart,
    Message,
    MessageError,
    TextPart,
    UnsupportedPartError,
    neutral,
)
from ai_assets.providers.openai_messages import openai_messages
from ai_assets.testing.anthropic_server import FakeAnthropicServer

KEY = "sk-ant-api03-" + "Hx7pQ2wE" * 6
PNG = b"\x89PNG\r\n\x1a\n" + bytes(40)


def openai_provider() -> OpenAICompatibleProvider:
    return OpenAICompatibleProvider("m", base_url="http://127.0.0.1:9/v1", api_key="k")


def claude(base_url: str = "http://127.0.0.1:9") -> AnthropicProvider:
    return AnthropicProvider("claude-sonnet-4-5", base_url=base_url, api_key=KEY)


def wav() -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as sound:
        sound.setnchannels(1)
        sound.setsampwidth(2)
        sound.setframerate(8000)
        sound.writeframes(b"\0" * 800)
    return out.getvalue()


@pytest.fixture(scope="module")
def anthropic() -> Iterator[FakeAnthropicServer]:
    with FakeAnthropicServer(in_process=True) as server:
        yield server


# -- OpenAI-shaped dicts that do not fit ---------------------------------------------------------------------------
@pytest.mark.parametrize("provider", [openai_provider(), claude()], ids=["openai", "anthropic"])
def test_an_unknown_part_type_is_an_error_naming_the_part(provider: Any) -> None:
    """OpenAI's user content parts are text, image_url, input_audio and file. Before: an unknown part was sent as
    it came (a 400 for the row at OpenAI, an unknown block at Anthropic) with nothing naming it."""
    messages = [{"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "video_url", "url": "x"}]}]
    with pytest.raises(MessageError, match=r"messages\[0\]\.content\[1\]: unknown content part type 'video_url'"):
        provider.chat_request(messages, None, {})


@pytest.mark.parametrize("bad", [{"type": "image_url", "image_url": {}}, {"type": "image_url"},
                                 {"type": "image_url", "image_url": {"url": ""}}])
def test_an_image_part_with_neither_data_nor_url_is_refused(bad: dict[str, Any]) -> None:
    """OpenAI's image_url part requires ``image_url.url``. Before: Anthropic sent ``{"type": "url", "url": ""}``
    and OpenAI the empty part, a 400 per row."""
    with pytest.raises(MessageError, match=r"messages\[0\]\.content\[0\]: an image_url part needs image_url\.url"):
        claude().chat_request([{"role": "user", "content": [bad]}], None, {})
    with pytest.raises(MessageError, match="exactly one of data"):
        ImagePart()
    with pytest.raises(MessageError, match="exactly one of data"):
        ImagePart(data=PNG, url="https://example.com/a.png", mime="image/png")


@pytest.mark.parametrize("text", [5, None, ["a"], b"bytes"])
def test_a_text_that_is_not_a_string_is_refused(text: Any) -> None:
    """OpenAI's text part: ``text`` is a string. Before: an int or null went into the body as it was."""
    with pytest.raises(MessageError, match=r"messages\[1\]\.content\[0\]: a text part's text must be a string"):
        openai_provider().chat_request([{"role": "system", "content": "x"},
                                        {"role": "user", "content": [{"type": "text", "text": text}]}], None, {})
    with pytest.raises(MessageError, match="must be a string"):
        TextPart(text)


@pytest.mark.parametrize("message", [{"role": "user"}, {"role": "user", "content": None}, {"content": "x"},
                                     "hello", {"role": "user", "content": 3}])
def test_a_message_missing_its_role_or_content_is_refused(message: Any) -> None:
    """A Chat Completions user message requires ``role`` and ``content``. Before: a KeyError or an invalid body."""
    with pytest.raises(MessageError, match=r"messages\[0\]"):
        openai_provider().chat_request([message], None, {})
    with pytest.raises(MessageError, match="a list of messages"):
        neutral("hello")  # type: ignore[arg-type]


def test_tool_messages_are_refused_and_developer_is_read_as_system() -> None:
    """OpenAI: ``developer`` messages "replace the previous system messages" for o1 and newer (both carry the
    instructions); ``tool`` messages answer a tool call, which a row's prompt never makes. Before: a tool message
    went to OpenAI as it was (a 400: no preceding tool call) and to Anthropic as a user turn."""
    for provider in (openai_provider(), claude()):
        with pytest.raises(MessageError, match=r"messages\[1\]: role 'tool' is not taken"):
            provider.chat_request([{"role": "user", "content": "hi"},
                                   {"role": "tool", "content": "42", "tool_call_id": "c1"}], None, {})
    developer = [{"role": "developer", "content": "Answer in French."}, {"role": "user", "content": "hi"}]
    assert openai_provider().chat_request(developer, None, {})["messages"][0] == {
        "role": "system", "content": "Answer in French."}
    body = claude().chat_request(developer, None, {})
    assert body["system"][0]["text"] == "Answer in French." and [t["role"] for t in body["messages"]] == ["user"]


def test_a_huge_text_part_is_sent_whole_in_linear_time() -> None:
    """Nothing is cut on our side: a prompt over the model's context window is the provider's 400
    (``context_length_exceeded`` at OpenAI, ``prompt is too long`` at Anthropic), that row's error. 64 MB of text
    is parsed and written into each vendor's body in well under the time a request takes."""
    text = "é" * (32 * 1024 * 1024)
    started = time.perf_counter()
    for provider in (openai_provider(), claude()):
        body = provider.chat_request([{"role": "user", "content": [{"type": "text", "text": text}]}], None, {})
        assert body["messages"][0]["content"][0]["text"] is text  # not copied, not cut
    assert time.perf_counter() - started < 5.0


# -- vendors' own rules ------------------------------------------------------------------------------------------
def test_two_system_messages_reach_anthropic_as_top_level_blocks_in_order() -> None:
    """Anthropic: ``system`` is top level (a ``system`` role inside ``messages`` is a 400); several system
    messages become text blocks in order, one cache breakpoint after the last; consecutive user turns are sent as
    they are (the API combines them into one turn)."""
    messages = [Message.system("One."), Message.user("q1"), Message.system("Two."), Message.user("q2")]
    body = claude().chat_request(messages, None, {})
    assert [b["text"] for b in body["system"]] == ["One.", "Two."]
    assert [("cache_control" in b) for b in body["system"]] == [False, True]
    assert body["messages"] == [{"role": "user", "content": "q1"}, {"role": "user", "content": "q2"}]


def test_a_system_message_of_parts_is_the_responses_api_s_instructions_text() -> None:
    """The Responses API's ``instructions`` is a string. Before: a system message whose content was a list of
    text parts became its Python repr (``"[{'type': 'text', ...}]"``), paid for and meaningless."""
    provider = OpenAICompatibleProvider("gpt-4o-mini", base_url="http://127.0.0.1:9/v1", api_key="k",
                                        api="responses")
    body = provider.chat_request([{"role": "system", "content": [{"type": "text", "text": "Be brief."},
                                                                 {"type": "text", "text": "Use French."}]},
                                  {"role": "user", "content": "hi"}], None, {})
    assert body["instructions"] == "Be brief.\n\nUse French."


def test_audio_to_anthropic_is_that_row_s_error_before_anything_is_sent(anthropic: FakeAnthropicServer) -> None:
    """Anthropic's Messages API has no audio content block. Before: the audio part was sent and the API's 400 came
    back per row, after a request; now the row is refused before sending, naming the column, the part and the
    provider, and the other rows are answered."""
    anthropic.reset()
    table = pa.table({"f": [wav(), b"%PDF-1.4\n%%EOF", wav()]})
    out = prompt(table, ["Transcribe:", FileColumn("f")], provider=claude(anthropic.base_url),
                 options=RunOptions(on_error="null"))
    errors = out.table.column("response_error").to_pylist()
    assert errors[1] is None and errors[0] == errors[2]
    assert errors[0] == ("refused before sending: column 'f': an audio part (audio/wav) (messages[0].parts[1]) is "
                         "not supported by provider anthropic")
    assert anthropic.stats().chat_requests == 1 and out.usage.errors == 2


def test_a_file_to_llama_cpp_is_that_row_s_error_and_a_failover_chain_refuses_what_a_member_cannot_send(
        tmp_path: Path) -> None:
    """llama.cpp's server takes text, image_url and input_audio parts only; a failover chain refuses a row none of
    its members can send (Anthropic: audio); one that some member can send is sent (tests/test_messages_review.py)."""
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + bytes(16))
    batch = pa.table({"f": [b"%PDF-1.4\n%%EOF", wav()], "q": ["a", "b"]}).to_batches()[0]
    params, options = PromptParams(), RunOptions()
    plan = PromptTask(["{q}", FileColumn("f")], LlamaCppProvider(gguf), None, None, "out", params,
                      options).plan(batch)
    assert plan.keys[0] is None and plan.keys[1] is not None
    assert plan.skips[0] is not None and plan.skips[0].is_error
    assert str(plan.skips[0]) == ("refused before sending: column 'f': a file part (application/pdf, f.pdf) "
                                  "(messages[0].parts[1]) is not supported by provider llama.cpp")
    chain = Failover(claude(), claude("http://127.0.0.1:8"))
    plan = PromptTask(["{q}", FileColumn("f")], chain, None, None, "out", params, options).plan(batch)
    assert plan.keys[0] is not None and plan.keys[1] is None and "provider anthropic" in str(plan.skips[1])


def test_an_unsupported_part_error_names_the_part_never_its_content() -> None:
    """Errors go into tables and logs: they name a part's kind, type and size, never its bytes or text."""
    secret = b"sk-live-" + b"Q" * 40
    with pytest.raises(UnsupportedPartError) as raised:
        anthropic_messages([Message("user", (TextPart("sk-proj-SECRET"), AudioPart(secret, "audio/wav")))])
    assert "SECRET" not in str(raised.value) and "QQQQ" not in str(raised.value)
    assert str(raised.value) == ("an audio part (audio/wav) (messages[0].parts[1]) is not supported by provider "
                                 "anthropic")


def test_message_user_builds_the_body_an_image_column_builds() -> None:
    """``Message.user(text, image=bytes)`` is the same request as a template of text and ``ImageColumn``: the same
    body, so the same journal key."""
    by_hand = openai_provider().chat_request([Message.user("What is this?", image=PNG)], None, {})
    column = ImageColumn("img", detail="auto").part(PNG, 0)
    templated = openai_provider().chat_request([Message("user", (TextPart("What is this?"), column))], None, {})
    assert by_hand["messages"][0]["content"][1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert {**by_hand["messages"][0]["content"][1]["image_url"], "detail": "auto"} == \
        templated["messages"][0]["content"][1]["image_url"]


# -- the OpenAI shape round-trips --------------------------------------------------------------------------------
_b64 = st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode())
_parts = st.one_of(
    st.builds(lambda t: {"type": "text", "text": t}, st.text(max_size=40)),
    st.builds(lambda u, d: {"type": "image_url", "image_url": {"url": u, **({"detail": d} if d else {})}},
              st.sampled_from(["https://example.com/a.png", "data:image/png;base64,iVBORw0KGgo="]),
              st.sampled_from([None, "low", "high", "auto"])),
    st.builds(lambda data, name: {"type": "file", "file": {**({"filename": name} if name else {}),
                                                         "file_data": f"data:application/pdf;base64,{data}"}},
              _b64, st.sampled_from([None, "a.pdf"])),
    st.builds(lambda data, fmt: {"type": "input_audio", "input_audio": {"data": data, "format": fmt}},
              _b64, st.sampled_from(["wav", "mp3"])),
)
_messages = st.lists(st.builds(lambda role, content: {"role": role, "content": content},
                               st.sampled_from(["system", "user", "assistant"]),
                               st.one_of(st.text(max_size=40), st.lists(_parts, max_size=4))), max_size=4)


@settings(max_examples=200, deadline=None)
@given(_messages)
def test_openai_shaped_messages_come_back_byte_for_byte(messages: list[dict[str, Any]]) -> None:
    """Users who pass Chat Completions messages keep their journal keys: parsed to neutral messages and written
    back, every message (strings, text, image URLs with or without ``detail``, base64 files with or without a
    name, audio) is the same JSON."""
    back = openai_messages(neutral(messages))
    assert json.dumps(back, sort_keys=True) == json.dumps(messages, sort_keys=True)


def test_neutral_parts_are_values() -> None:
    """Frozen and comparable: the same row builds equal messages (and so the same body)."""
    one = Message("user", (TextPart("a"), FilePart(b"%PDF", "application/pdf", "a.pdf")))
    assert one == Message("user", (TextPart("a"), FilePart(b"%PDF", "application/pdf", "a.pdf")))
    with pytest.raises(AttributeError):
        one.role = "system"  # type: ignore[misc]
    with pytest.raises(MessageError, match="role must be system, user or assistant"):
        Message("tool", ())  # type: ignore[arg-type]
    with pytest.raises(MessageError, match="data must be bytes"):
        FilePart("not bytes", "application/pdf")  # type: ignore[arg-type]
