"""Reading llama.cpp's streamed chat answers (``ai_assets.providers.llama_stream``), without a server.

Modelled: OpenAI-style server-sent events as llama.cpp writes them (``data: {chunk}`` lines, ``data: [DONE]`` last;
an error during generation arrives as ``data: {"error": {"code": 500, "message": ...}}``, llama.cpp server
README, "Streaming"), and a hostile stream (a non-object event, bytes that are not JSON).
"""

from __future__ import annotations

from typing import Any

import instructor
import pytest

from ai_assets.providers.llama_stream import LlamaChatConnection, Progress, SlotPool
from ai_assets.providers.openai_wire import ChatConnection, Endpoint
from ai_assets.runtime.errors import MalformedAnswerError, PermanentError, TransientError
from ai_assets.runtime.pace import Pace


def connection() -> LlamaChatConnection:
    endpoint = Endpoint("http://127.0.0.1:9/v1", (), 1 << 20, instructor.Mode.JSON_SCHEMA)
    pool = SlotPool(2, "http://127.0.0.1:9/slots", None)  # type: ignore[arg-type]  # never polled here
    return LlamaChatConnection(ChatConnection(endpoint, None, None), pool, Pace(), context=512)


def test_chunks_assemble_into_one_answer_with_usage_and_timings() -> None:
    conn = connection()
    progress = Progress()
    lines = [b'data: {"id":"c1","created":5,"model":"m","choices":[{"index":0,"delta":{"content":"Hel"}}]}',
             b"", b": keep-alive",
             b'data: {"choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":"stop"}]}',
             b'data: {"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":2},'
             b'"timings":{"prompt_per_second":100.0,"predicted_per_second":20.0}}']
    assert not any(conn._event(line, progress) for line in lines)
    assert conn._event(b"data: [DONE]", progress)
    reply = conn.parse({}, conn._body(progress))
    assert reply.value == "Hello" and progress.tokens == 2
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (7, 2)
    assert progress.timings["predicted_per_second"] == 20.0


@pytest.mark.parametrize(("line", "error"), [
    (b'data: {"error": {"code": 500, "message": "slot crashed"}}', TransientError),
    (b'data: {"error": {"code": 400, "message": "bad grammar"}}', PermanentError),
    (b'data: {"error": "no code"}', TransientError),
    (b"data: [1, 2]", MalformedAnswerError),
    (b"data: {not json", MalformedAnswerError),
])
def test_a_bad_event_is_one_row_error_of_the_right_kind(line: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        connection()._event(line, Progress())


def test_the_deadline_uses_max_tokens_or_the_slot_context() -> None:
    conn = connection()
    conn.pace.observe(100.0, 10.0)
    conn.pace.floor_s = 0.0
    messages: list[dict[str, Any]] = [{"role": "user", "content": "x" * 400}]
    capped = conn.deadline_s({"messages": messages, "max_tokens": 50})
    uncapped = conn.deadline_s({"messages": messages})  # up to the slot's context: far longer
    assert capped == pytest.approx(4 * (conn.pace.expected_s(105, 50)), rel=0.05)
    assert uncapped > capped * 5
