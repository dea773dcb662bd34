"""Issue 28, read as a hostile user: failover, the circuit breaker, limits learned from headers and the native
Anthropic provider given what real servers, proxies and broken disks give them.

Each test names the documented behaviour it models: RFC 9110 (HTTP semantics: ``Retry-After`` is an HTTP-date or
``delta-seconds = 1*DIGIT``, and an HTTP-date may come in any of three formats a recipient MUST accept), RFC 5234
(``DIGIT = %x30-39``), OpenAI's and Anthropic's "Rate limits" headers (integer counts a minute), the circuit
breaker of Nygard's "Release It!" as resilience4j documents it (open for ``waitDurationInOpenState``, then a
probe), Python's ``time.time`` ("not guaranteed to be monotonic": the wall clock may be set back), Anthropic's
Messages API (``usage`` token counts are integers >= 0; with ``tool_choice: {"type": "tool"}`` and parallel tool
use on by default the model may answer with several ``tool_use`` blocks) and instructor's Anthropic TOOLS parsing
(exactly one ``tool_use`` block, else a validation error that is re-asked).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from ai_assets import ConfigError, ImageColumn, OpenAICompatibleProvider, RetryPolicy, RunOptions, prompt
from ai_assets.providers.anthropic import AnthropicProvider
from ai_assets.providers.failover import Failover
from ai_assets.runtime.errors import AIAssetsWarning
from ai_assets.runtime.ratelimit.breaker import BreakerRecord, BreakerSettings, breaker_name, step
from ai_assets.runtime.ratelimit.headers import go_duration_s, read_limits
from ai_assets.runtime.ratelimit.stores import FileStore
from ai_assets.runtime.retry import retry_after_seconds
from ai_assets.testing import FakeOpenAIServer, Fault
from tests.hostile import Answer, chat_body, hostile_server

KEY = "sk-ant-api03-" + "Hq7wT3pL" * 6
KEYS = ("sk-proj-" + "Xb4nR8vK" * 5, "sk-proj-" + "Qz9mW2cJ" * 5)  # random-looking, as real keys are
ROW_ERRORS = RunOptions(on_error="null", retry=RetryPolicy(max_attempts=2, base_wait=0.0))


# -- Retry-After and the rate-limit headers ---------------------------------------------------------------------
def _three_http_dates(when: datetime) -> list[str]:
    """RFC 9110 section 5.6.7: IMF-fixdate, the obsolete RFC 850 form and ANSI C's asctime() form."""
    return [format_datetime(when, usegmt=True), when.strftime("%A, %d-%b-%y %H:%M:%S GMT"),
            when.strftime("%a %b %d %H:%M:%S %Y").replace(" 0", "  ", 1) if when.day < 10
            else when.strftime("%a %b %d %H:%M:%S %Y")]


def test_a_retry_after_date_in_any_of_the_three_http_date_formats_is_the_same_wait() -> None:
    """RFC 9110 section 5.6.7: "A recipient that parses a timestamp value in an HTTP header field MUST accept all
    three HTTP-date formats"; the asctime form has no zone and is UTC like the others. Before: it (and a
    ``-0000`` zone) raised ``TypeError`` (naive minus aware datetime)."""
    when = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=40)
    waits = [retry_after_seconds({"retry-after": text}) for text in _three_http_dates(when)]
    waits.append(retry_after_seconds({"retry-after": format_datetime(when).replace("+0000", "-0000")}))
    assert all(w is not None and 30 < w <= 40 for w in waits), waits


def test_a_429_with_an_asctime_retry_after_fails_only_its_row() -> None:
    """The same header end to end: before, the ``TypeError`` out of the 429's parsing stopped the whole call (the
    engine stops on an unexpected exception) instead of retrying that row."""
    past = _three_http_dates(datetime(2020, 1, 5, 8, 49, 37, tzinfo=UTC))[2]
    with hostile_server() as server:
        server.reset(busy=Answer(b'{"error": {"message": "slow down"}}', status=429,
                                 headers={"retry-after": past}))
        provider = OpenAICompatibleProvider("m", base_url=server.base_url, api_key="sk-test-key-123456")
        out = prompt(pa.table({"q": ["busy 1", "calm 2"]}), "{q}", provider=provider, options=ROW_ERRORS)
        assert server.seen["busy 1"] == 2  # retried (the date is past: no wait), then the row failed
    errors = out.table.column("response_error").to_pylist()
    assert "429" in str(errors[0]) and errors[1] is None


@pytest.mark.parametrize("value", ["٦٠", "６０", "6_0", "1e2", "0x3c", "0.0001", "1e-9"])
def test_a_rate_limit_that_is_not_a_plain_ascii_count_of_at_least_one_is_ignored(value: str) -> None:
    """OpenAI's and Anthropic's rate-limit headers carry integer counts a minute; RFC 5234's ``DIGIT`` is
    ``%x30-39``. Python's ``float`` reads Arabic-Indic and full-width digits, ``_`` separators and exponents, so
    before these were paced by: a limit of 0.0001 a minute held the next request for a week."""
    reported = read_limits({"x-ratelimit-limit-requests": value, "x-ratelimit-remaining-requests": value,
                            "anthropic-ratelimit-tokens-limit": value})
    assert reported.requests.limit is None and reported.tokens.limit is None
    if not value.startswith("0."):  # a count left of 0.0001 reads (as none left); a bare 0.0001 is seconds
        assert reported.requests.remaining is None
        assert go_duration_s(value) is None and retry_after_seconds({"retry-after": value}) is None


@given(st.text(max_size=12))
def test_a_rate_limit_header_is_read_only_as_ascii_digits(text: str) -> None:
    limit = read_limits({"x-ratelimit-limit-requests": text}).requests.limit
    stripped = text.strip(" \t")
    plain = stripped.isascii() and stripped.replace(".", "", 1).isdigit() and not stripped.endswith(".")
    if limit is not None:
        assert plain and limit >= 1 and limit == float(stripped)


def test_a_go_duration_reads_only_ascii_digits_and_both_micro_signs() -> None:
    """Go's ``time.ParseDuration`` takes ``us``, ``µs`` (U+00B5) and ``μs`` (U+03BC), and ASCII digits only."""
    assert go_duration_s("1s500ms") == 1.5
    assert go_duration_s("250\u00b5s") == go_duration_s("250\u03bcs") == go_duration_s("250us") == 250e-6
    assert go_duration_s("١s") is None and go_duration_s("1_0s") is None


# -- the circuit breaker ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("opened_at", [1e12, float("inf"), float("nan")])
def test_a_breaker_record_from_the_future_or_not_finite_holds_at_most_one_cooldown(opened_at: float) -> None:
    """resilience4j: an open breaker waits ``waitDurationInOpenState`` and then lets a probe through. A store
    written by a machine whose clock was set back (``time.time`` is not monotonic), or edited by hand, held the
    breaker open forever before (``now - opened_at`` never reached the cool-down): the primary was never used
    again."""
    record = BreakerRecord(5, opened_at, 0.0)
    now = 1000.0
    held, verdict = step(record, "ask", now, 5, 30.0)
    assert verdict in ("open", "probe")
    assert step(held, "ask", now + 30.0, 5, 30.0)[1] == "probe"


def test_a_breaker_file_opened_in_the_future_lets_the_primary_back_after_one_cooldown(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    name = breaker_name({"x": 1})
    store._path(name).write_text(f"9 {time.time() + 10 * 365 * 86400!r} 0.0")
    asyncio.run(store.breaker(name, "ask", 3, 0.2))
    time.sleep(0.25)
    assert asyncio.run(store.breaker(name, "ask", 3, 0.2)) == "probe"


def test_a_redis_breaker_record_from_the_future_lets_the_primary_back_after_one_cooldown(redis: Any) -> None:
    """The same rule in Redis's Lua script (on the Redis server's clock, ``TIME``)."""
    from ai_assets.runtime.ratelimit.stores import RedisStore

    store = RedisStore(redis.url)
    name = breaker_name({"future": time.time()})
    store._client.set(store._key(name), f"9 {time.time() + 10 * 365 * 86400:.6f} 0.000000")
    asyncio.run(store.breaker(name, "ask", 3, 0.2))
    time.sleep(0.25)
    assert asyncio.run(store.breaker(name, "ask", 3, 0.2)) == "probe"


def _chain(primary: FakeOpenAIServer, fallback: FakeOpenAIServer, store: str) -> Failover:
    return Failover(OpenAICompatibleProvider("primary-model", base_url=primary.base_url, api_key=KEYS[0]),
                    OpenAICompatibleProvider("fallback-model", base_url=fallback.base_url, api_key=KEYS[1]),
                    breaker=BreakerSettings(threshold=3, cooldown_s=60.0, store=store))


def test_a_breaker_store_that_cannot_be_written_fails_open_and_says_so(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    """A breaker only saves the cost of a dead provider's timeouts; a store it cannot use (a full or read-only
    disk, a path that is a folder, Redis down) must not cost the run. Before: the ``OSError`` out of the store
    stopped the whole call. Now the row goes to the primary as if the breaker were closed, with a warning naming
    the store's problem (never a key)."""
    with FakeOpenAIServer() as primary, FakeOpenAIServer() as fallback:
        chain = _chain(primary, fallback, f"file://{tmp_path}")
        breaker = chain.breakers()[0]
        store = breaker._store
        assert isinstance(store, FileStore)
        store._path(breaker.name).mkdir()  # the breaker's file cannot be opened for writing
        with caplog.at_level(logging.WARNING):
            out = prompt(pa.table({"q": ["a", "b", "c"]}), "{q}", provider=chain, options=RunOptions(concurrency=1))
        assert out.table.column("response_provider").to_pylist() == ["openai-compatible:primary-model"] * 3
        assert fallback.stats().requests == 0
    warned = [r.getMessage() for r in caplog.records if "breaker" in r.getMessage()]
    assert len(warned) == 1 and "IsADirectoryError" in warned[0]
    assert KEYS[0] not in caplog.text and KEYS[1] not in caplog.text


def test_every_provider_down_names_each_one_tried_and_no_key(tmp_path: Path) -> None:
    with FakeOpenAIServer() as primary, FakeOpenAIServer() as fallback:
        primary.set_faults(Fault("503", attempts=None))
        fallback.set_faults(Fault("500", attempts=None))
        out = prompt(pa.table({"q": ["a"]}), "{q}", provider=_chain(primary, fallback, f"file://{tmp_path}"),
                     options=ROW_ERRORS)
    error = str(out.table.column("response_error")[0].as_py())
    assert "primary-model" in error and "fallback-model" in error and "every provider failed" in error
    assert "Xb4" not in error and "Qz9" not in error


# -- Anthropic --------------------------------------------------------------------------------------------------
class Verdict(BaseModel):
    label: str


def _message(content: list[dict[str, Any]], **fields: Any) -> bytes:
    body = {"type": "message", "role": "assistant", "stop_reason": "tool_use",
            "usage": {"input_tokens": 10, "output_tokens": 5}, "content": content, **fields}
    return json.dumps(body).encode()


def _claude(server_url: str) -> AnthropicProvider:
    return AnthropicProvider("claude-sonnet-4-5", base_url=server_url.removesuffix("/v1"), api_key=KEY)


def test_two_tool_use_blocks_are_reasked_not_a_silent_pick_of_the_first() -> None:
    """Anthropic ("Tool use": parallel tool use is on unless ``disable_parallel_tool_use``) may answer a forced
    tool with two ``tool_use`` blocks; instructor's Anthropic TOOLS parsing requires exactly one
    (``Field(min_length=1, max_length=1)``) and re-asks otherwise. Before: the first was kept silently, whichever
    of two different answers it was."""
    tool = _claude("http://127.0.0.1:9").chat_request([{"role": "user", "content": "x"}], Verdict, {})
    name = tool["tool_choice"]["name"]
    two = [{"type": "tool_use", "id": "t1", "name": name, "input": {"label": "spam"}},
           {"type": "tool_use", "id": "t2", "name": name, "input": {"label": "ham"}}]
    one = [{"type": "tool_use", "id": "t3", "name": name, "input": {"label": "ham"}}]
    with hostile_server() as server:
        server.reset(**{"exactly one": Answer(_message(one)), "mail 0": Answer(_message(two))})
        out = prompt(pa.table({"q": ["mail 0"]}), "{q}", provider=_claude(server.base_url), return_format=Verdict,
                     options=ROW_ERRORS)
        assert sum(n for text, n in server.seen.items() if "exactly one" in text) == 1
    assert out.table.column("response").to_pylist() == [{"label": "ham"}]
    assert out.usage.requests == 2 and out.usage.prompt_tokens == 20


def test_a_negative_cache_count_keeps_the_tokens_that_were_billed() -> None:
    """Anthropic's Messages API: every ``usage`` count is an integer >= 0. A negative
    ``cache_creation_input_tokens`` (a proxy's bug) makes the answer malformed (the row fails), but its
    ``input_tokens`` and ``output_tokens`` were billed and must still count (wire_shapes: "row errors that still
    carry the tokens the answer was billed"). Before: the whole usage was dropped, the call counted 0 tokens."""
    usage = {"input_tokens": 10, "output_tokens": 5, "cache_creation_input_tokens": -3}
    with hostile_server() as server:
        server.reset(**{"mail 0": Answer(_message([{"type": "text", "text": "ok"}], usage=usage,
                                                  stop_reason="end_turn"))})
        out = prompt(pa.table({"q": ["mail 0"]}), "{q}", provider=_claude(server.base_url), options=ROW_ERRORS)
    assert "cache_creation_input_tokens" in str(out.table.column("response_error")[0].as_py())
    assert (out.usage.prompt_tokens, out.usage.completion_tokens, out.usage.cache_write_tokens) == (10, 5, 0)


def test_an_answer_with_text_and_the_tool_call_uses_the_call_and_an_openai_body_is_malformed() -> None:
    """Anthropic's Messages API: a tool call may follow text ("I'll classify it." then ``tool_use``)."""
    tool = _claude("http://127.0.0.1:9").chat_request([{"role": "user", "content": "x"}], Verdict, {})
    name = tool["tool_choice"]["name"]
    content = [{"type": "text", "text": "I'll classify it."},
               {"type": "tool_use", "id": "t1", "name": name, "input": {"label": "ham"}}]
    with hostile_server() as server:
        server.reset(**{"mail 0": Answer(_message(content)), "mail 1": Answer(chat_body("not anthropic"))})
        out = prompt(pa.table({"q": ["mail 0", "mail 1"]}), "{q}", provider=_claude(server.base_url),
                     return_format=Verdict, options=ROW_ERRORS)
    assert out.table.column("response").to_pylist()[0] == {"label": "ham"}
    assert out.table.column("response_error")[1].as_py() is not None


def test_a_system_message_list_sends_only_non_empty_text_blocks_and_refuses_other_parts() -> None:
    """Anthropic's Messages API: ``system`` is a string or a list of ``text`` blocks, and an empty text block is
    refused with a 400 ("text content blocks must be non-empty") — on every row, since the system message is
    shared. OpenAI's chat format allows a system ``content`` list of text parts. Before: an empty part became an
    empty block (and took the cache breakpoint), an image part became an empty text block, both 400s."""
    claude = _claude("http://127.0.0.1:9")
    system = {"role": "system", "content": ["Be brief.", {"type": "text", "text": ""}, {"type": "text", "text": "X"}]}
    request = claude.chat_request([system, {"role": "user", "content": "hi"}], None, {})
    assert [block["text"] for block in request["system"]] == ["Be brief.", "X"]
    assert request["system"][-1]["cache_control"] == {"type": "ephemeral"}
    empty = claude.chat_request([{"role": "system", "content": [{"type": "text", "text": ""}]},
                                 {"role": "user", "content": "hi"}], None, {})
    assert "system" not in empty
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    with pytest.raises(ConfigError, match=r"system message.*an image part"):
        claude.chat_request([{"role": "system", "content": [image]}, {"role": "user", "content": "hi"}], None, {})


def test_a_100k_character_system_prompt_is_cut_in_the_asset_description_and_says_so() -> None:
    """The asset's description travels in the code location's snapshot over Dagster's gRPC (whose messages are
    capped: ``DAGSTER_GRPC_MAX_RX_BYTES``, 50 MB by default) to the webserver and the daemon, and into every run's
    snapshot. Before: a 100,000-character system prompt (or template) was copied into it whole, per asset. The
    request itself still carries the whole prompt (its code version hashes all of it)."""
    import dagster as dg

    from ai_assets.dagster import prompt_asset

    asset = prompt_asset("x", "up", template="T" * 100_000 + " {text}", system_message="S" * 100_000)
    description = asset.descriptions_by_key[dg.AssetKey("x")]
    assert len(description) < 6000
    assert description.count("cut: 100,00") == 2  # "cut: 100,007 characters" and "cut: 100,000 characters"


def test_an_image_over_anthropics_5_mb_limit_fails_its_row_before_it_is_uploaded() -> None:
    """Anthropic's "Vision" docs: an image may be at most 5 MB on the API; a larger one makes the request a 400.
    Before: the 7 MB image was uploaded (and the fake, which does not model the limit, even answered it). Now the
    row fails at once naming the size and the limit, without a request; the small image's row is answered."""
    big = b"\x89PNG\r\n\x1a\n" + bytes(7 * 1024 * 1024)
    small = b"\x89PNG\r\n\x1a\n" + bytes(1024)
    with hostile_server() as server:
        server.reset(**{'"type": "image"': Answer(_message([{"type": "text", "text": "seen"}],
                                                           stop_reason="end_turn"))})
        out = prompt(pa.table({"img": [big, small]}), [ImageColumn("img")], provider=_claude(server.base_url),
                     options=ROW_ERRORS)
        assert sum(server.seen.values()) == 1
    errors = out.table.column("response_error").to_pylist()
    assert "5,242,880-byte limit" in str(errors[0]) and "7,340,040 bytes" in str(errors[0])
    assert errors[1] is None


def test_answers_without_usage_say_once_that_their_tokens_are_not_counted() -> None:
    """Anthropic's Messages API always returns ``usage`` (``input_tokens`` and ``output_tokens`` are required
    fields of the response); an answer without it (a proxy that strips it) cannot be billed by us. Before: every
    such answer counted 0 tokens and $0 in silence, so a spending cap never tripped."""
    with hostile_server() as server:
        server.reset(mail=Answer(json.dumps({"type": "message", "role": "assistant", "stop_reason": "end_turn",
                                             "content": [{"type": "text", "text": "ok"}]}).encode()))
        with pytest.warns(AIAssetsWarning, match="report no usage") as caught:
            out = prompt(pa.table({"q": ["mail 0", "mail 1", "mail 2"]}), "{q}", provider=_claude(server.base_url),
                         options=ROW_ERRORS)
    assert out.table.column("response").to_pylist() == ["ok"] * 3
    assert len([w for w in caught if "report no usage" in str(w.message)]) == 1
