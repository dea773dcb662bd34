"""Provider answers are untrusted input: against a hostile server, every row ends answered or with a row error,
``prompt`` / ``embed_text`` never raise with ``on_error="null"``, a re-run sends only the rows without an answer,
an answer that never ends costs a bounded amount of memory, and no wait is unbounded."""

from __future__ import annotations

import json
import resource
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from ai_assets import OpenAICompatibleProvider, ResultCache, RetryPolicy, RunOptions, embed_text, prompt
from tests.hostile import Answer, HostileServer, chat_body, hostile_server

POISON = "POISON-ROW"
USAGE = {"prompt_tokens": 3, "completion_tokens": 2}


class Verdict(BaseModel):
    label: str


MALFORMED: dict[str, bytes] = {
    "choices-is-a-string": b'{"choices": "x"}',
    "body-is-a-list": b"[1, 2, 3]",
    "body-is-null": b"null",
    "content-is-an-integer": chat_body(5),
    "usage-is-a-string": json.dumps({"choices": [{"message": {"content": "hi"}}], "usage": "lots"}).encode(),
    "usage-overflows": json.dumps({"choices": [{"message": {"content": "hi"}}],
                                   "usage": {"prompt_tokens": 10**30}}).encode(),
    "5000-digit-number": b'{"choices": [], "usage": {"prompt_tokens": ' + b"9" * 5000 + b"}}",
    "nested-100k-deep": b"[" * 100_000 + b"]" * 100_000,
    "not-utf8": b'\xff\xfe{"choices"',
    "not-json": b"<html>bad gateway</html>",
    "choices-null": b'{"choices": null}',
    "message-is-a-string": b'{"choices": [{"message": "hi"}]}',
    "tool-calls-not-a-list": b'{"choices": [{"message": {"content": null, "tool_calls": 7}}]}',
}
EMPTY: dict[str, tuple[bytes, str]] = {
    "no-choices": (json.dumps({"choices": [], "usage": USAGE}).encode(), "no choices"),
    "choice-without-message": (json.dumps({"choices": [{"index": 0, "finish_reason": "length"}],
                                           "usage": USAGE}).encode(), "finish_reason='length'"),
    "content-filtered": (json.dumps({"choices": [{"index": 0, "finish_reason": "content_filter", "message": {
        "role": "assistant", "content": None, "refusal": "I cannot help with that"}}], "usage": USAGE}).encode(),
        "I cannot help with that"),
    "empty-at-the-length-limit": (chat_body("", finish_reason="length"), "finish_reason='length'"),
}


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileServer]:
    with hostile_server() as server:
        yield server


def provider(server: HostileServer, **kwargs: Any) -> OpenAICompatibleProvider:
    return OpenAICompatibleProvider("m", base_url=server.base_url, api_key="sk-hostile-secret", **kwargs)


def table() -> pa.Table:
    return pa.table({"text": ["good one", POISON, "good two"]})


def run(server: HostileServer, cache: ResultCache | None = None, structured: bool = False,
        **provider_kwargs: Any) -> pa.Table:
    out = prompt(table(), "{text}", provider=provider(server, **provider_kwargs), cache=cache,
                 return_format=Verdict if structured else None,
                 options=RunOptions(on_error="null", retry=RetryPolicy(max_attempts=3, base_wait=0.01)))
    return out.table


def assert_only_poison_failed(result: pa.Table) -> str:
    values, errors = result.column("response").to_pylist(), result.column("response_error").to_pylist()
    assert values[0] is not None and values[2] is not None and errors[0] is None and errors[2] is None
    assert values[1] is None and errors[1], f"the poison row must be a row error, got {values[1]!r} / {errors[1]!r}"
    assert "sk-hostile-secret" not in errors[1]
    return str(errors[1])


@pytest.mark.parametrize("structured", [False, True], ids=["plain", "structured"])
@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_a_malformed_answer_is_that_rows_error_and_the_rerun_sends_only_it(
        hostile: HostileServer, tmp_path: Path, name: str, structured: bool) -> None:
    hostile.reset(**{POISON: Answer(MALFORMED[name])})
    cache = ResultCache(tmp_path / "journal.sqlite")
    error = assert_only_poison_failed(run(hostile, cache, structured))
    assert "answer" in error  # "malformed answer from ..." / "unreadable answer from ..."
    assert hostile.seen[POISON] == 1  # a malformed answer is not paid for again within the run
    hostile.seen.clear()
    assert_only_poison_failed(run(hostile, ResultCache(cache.path), structured))
    assert dict(hostile.seen) == {POISON: 1}  # the re-run sends exactly the row without an answer


@pytest.mark.parametrize("structured", [False, True], ids=["plain", "structured"])
@pytest.mark.parametrize("name", sorted(EMPTY))
def test_an_empty_answer_is_a_row_error_that_keeps_why_and_is_sent_again(
        hostile: HostileServer, tmp_path: Path, name: str, structured: bool) -> None:
    body, why = EMPTY[name]
    hostile.reset(**{POISON: Answer(body)})
    cache = ResultCache(tmp_path / "journal.sqlite")
    error = assert_only_poison_failed(run(hostile, cache, structured))
    assert "empty answer" in error and why in error
    hostile.seen.clear()
    run(hostile, ResultCache(cache.path), structured)
    assert dict(hostile.seen) == {POISON: 1}


RESPONSES_BAD = {
    "output-is-a-string": (b'{"status": "completed", "output": "x"}', "malformed answer"),
    "incomplete": (b'{"status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}, "output": []}',
                   "max_output_tokens"),
    "refusal-only": (json.dumps({"status": "completed", "output": [{"type": "message", "content": [
        {"type": "refusal", "refusal": "no can do"}]}]}).encode(), "no can do"),
    "null": (b"null", "malformed answer"),
}


@pytest.mark.parametrize("name", sorted(RESPONSES_BAD))
def test_responses_api_answers_are_checked_the_same_way(hostile: HostileServer, name: str) -> None:
    body, why = RESPONSES_BAD[name]
    hostile.reset(**{POISON: Answer(body)})
    assert why in assert_only_poison_failed(run(hostile, api="responses"))


EMBEDDINGS_BAD = {
    "data-is-a-string": b'{"data": "x"}',
    "index-is-a-string": b'{"data": [{"index": "0", "embedding": [1.0]}]}',
    "bad-base64": b'{"data": [{"index": 0, "embedding": "!!!not base64"}]}',
    "body-is-a-list": b"[]",
}


@pytest.mark.parametrize("name", sorted(EMBEDDINGS_BAD))
def test_a_malformed_embedding_answer_fails_only_its_batch(hostile: HostileServer, name: str) -> None:
    hostile.reset(**{POISON: Answer(EMBEDDINGS_BAD[name])})
    out = embed_text(table(), "text", provider=provider(hostile),
                     options=RunOptions(on_error="null", batch_size=1, retry=RetryPolicy(max_attempts=2,
                                                                                          base_wait=0.01)))
    vectors, errors = out.table.column("embedding").to_pylist(), out.table.column("embedding_error").to_pylist()
    assert vectors[0] is not None and vectors[2] is not None
    assert vectors[1] is None and errors[1]


def test_an_answer_that_never_ends_is_cut_at_the_cap_with_bounded_memory(hostile: HostileServer) -> None:
    hostile.reset(**{POISON: Answer(endless=True)})
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    error = assert_only_poison_failed(run(hostile, max_response_bytes=4 * 1024 * 1024))
    assert "max_response_bytes=4194304" in error
    assert time.monotonic() - started < 20
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 64, f"peak RSS grew {grown_mb:.0f} MB for a 4 MB cap"


@pytest.mark.parametrize("header", [{"retry-after": "999999999"}, {"retry-after": "40"}, {"retry-after": "inf"},
                                    {"retry-after-ms": "3600000"}])
def test_a_retry_after_over_max_wait_fails_the_row_at_once_naming_the_wait(hostile: HostileServer,
                                                                           header: dict[str, str]) -> None:
    hostile.reset(**{POISON: Answer(b'{"error": {"message": "slow down"}}', status=429, headers=header)})
    started = time.monotonic()
    out = prompt(table(), "{text}", provider=provider(hostile),
                 options=RunOptions(on_error="null", retry=RetryPolicy(max_wait=2)))
    assert time.monotonic() - started < 5
    error = out.table.column("response_error")[1].as_py()
    assert "Retry-After" in error and "max_wait=2s" in error
    assert hostile.seen[POISON] == 1


def test_a_retry_after_within_max_wait_is_honoured(hostile: HostileServer) -> None:
    hostile.reset(**{POISON: Answer(b"{}", status=429, headers={"retry-after": "1"})})
    started = time.monotonic()
    out = prompt(table(), "{text}", provider=provider(hostile),
                 options=RunOptions(on_error="null", retry=RetryPolicy(max_attempts=2, max_wait=2)))
    assert 1.0 <= time.monotonic() - started < 4
    assert hostile.seen[POISON] == 2 and out.table.column("response_error")[1].as_py()


@pytest.mark.parametrize("body", [b"[" * 100_000 + b"]" * 100_000, b'{"error": ' * 50_000 + b"1" + b"}" * 50_000,
                                  b'{"detail": "no error field"}', b"[1, 2]", b'{"error": null}'],
                         ids=["nested-100k-deep", "error-nested-50k-deep", "no-error-field", "a-list", "error-null"])
def test_an_error_body_of_any_json_shape_is_that_rows_error(hostile: HostileServer, body: bytes) -> None:
    """RFC 8259 section 9 lets a parser limit nesting depth, and a 4xx body may be any JSON at all (FastAPI and
    vLLM answer ``{"detail": ...}``, not OpenAI's ``{"error": ...}``): the row fails with the body's text, the
    call goes on."""
    hostile.reset(**{POISON: Answer(body, status=400)})
    error = assert_only_poison_failed(run(hostile))
    assert "HTTP 400" in error and "None" not in error


# -- property-based: any JSON at all, and chat-shaped bodies with any value in any field ---------------------------
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                                max_size=4), max_leaves=20)
FIELDS = st.sampled_from(["choices", "usage", "message", "content", "finish_reason", "refusal", "tool_calls"])


@st.composite
def chat_shaped(draw: st.DrawFn) -> Any:
    """A valid chat answer with one to three of its fields replaced by arbitrary JSON."""
    body: dict[str, Any] = {"choices": [{"index": 0, "finish_reason": "stop",
                                         "message": {"role": "assistant", "content": '{"label": "x"}'}}],
                            "usage": dict(USAGE)}
    depth = {"content": 0, "refusal": 0, "tool_calls": 0, "finish_reason": 1, "message": 1, "choices": 2, "usage": 2}
    for name in sorted(draw(st.lists(FIELDS, min_size=1, max_size=3, unique=True)), key=depth.__getitem__):
        value = draw(JSON)
        if name in ("choices", "usage"):
            body[name] = value
        elif name == "message":
            body["choices"][0]["message"] = value
        elif name == "finish_reason":
            body["choices"][0]["finish_reason"] = value
        else:
            body["choices"][0]["message"][name] = value
    return body


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(JSON, chat_shaped()), structured=st.booleans())
def test_whatever_the_server_answers_every_row_ends_answered_or_with_a_row_error(
        hostile: HostileServer, body: Any, structured: bool) -> None:
    hostile.reset(**{POISON: Answer(json.dumps(body).encode())})
    result = run(hostile, structured=structured)
    values, errors = result.column("response").to_pylist(), result.column("response_error").to_pylist()
    assert values[0] is not None and values[2] is not None
    assert (values[1] is None) != (errors[1] is None), (values[1], errors[1])
    if structured and values[1] is not None:
        Verdict.model_validate(values[1])


def test_the_resource_passes_its_response_cap_to_the_provider() -> None:
    from ai_assets.dagster import OpenAICompatibleResource

    resource = OpenAICompatibleResource(model="m", base_url="http://127.0.0.1:9/v1", api_key="k",
                                        max_response_bytes=2048)
    assert resource.build_provider().max_response_bytes == 2048
