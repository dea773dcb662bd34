"""Anthropic, natively: the Messages API request, structured output through a forced tool with re-asks, errors,
secrets, rate headers and prompt caching, against the fake Anthropic server (and a hostile one).

Documented behaviour modelled (docs.anthropic.com): Messages API (``x-api-key``, ``anthropic-version``, top-level
``system``, required ``max_tokens``, ``image`` / ``document`` blocks, ``tool_choice: {"type": "tool"}``), "Errors"
(429 / 500 / 529 retried, 400 a request's own error, 401 / 403 for every request), "Rate limits"
(``anthropic-ratelimit-*``, ``retry-after``) and "Prompt caching" (breakpoints, 1,024-token minimum, an entry usable
once a response has begun, cache writes 1.25x and reads 0.1x the input price). The fake's own modelling is in
``ai_assets.testing.anthropic_cache`` / ``anthropic_server``.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import wave
from collections.abc import Iterator, Mapping
from typing import Any

import pyarrow as pa
import pytest
from PIL import Image
from pydantic import BaseModel, Field

from ai_assets import (
    FileColumn,
    ImageColumn,
    OpenAICompatibleProvider,
    PromptParams,
    RetryPolicy,
    RunOptions,
    prompt,
)
from ai_assets.providers.anthropic import AnthropicProvider
from ai_assets.providers.anthropic_wire import MessagesConnection
from ai_assets.providers.registry import load_provider
from ai_assets.runtime.cache.sqlite import ResultCache
from ai_assets.runtime.errors import (
    AIAssetsWarning,
    FatalProviderError,
    InvalidOutputError,
    MalformedAnswerError,
)
from ai_assets.runtime.prices import lookup
from ai_assets.runtime.usage import Prices, Usage
from ai_assets.testing import FakeOpenAIServer, Fault, ServerStats
from ai_assets.testing.anthropic_cache import AnthropicCache
from ai_assets.testing.anthropic_server import FakeAnthropicServer
from tests.hostile import Answer, hostile_server

KEY = "sk-ant-api03-" + "Zq8vR2mK" * 6
MODEL = "claude-sonnet-4-5"
ROW_ERRORS = RunOptions(on_error="null")


class Insight(BaseModel):
    sentiment: str = Field(description="positive, negative or mixed")
    aspects: list[str]
    stars: int


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAnthropicServer]:
    with FakeAnthropicServer(in_process=True) as server:
        yield server


@pytest.fixture
def anthropic(fake: FakeAnthropicServer) -> FakeAnthropicServer:
    fake.set_faults()
    fake.set_latency(0.0)
    fake.set_rate_limit()
    fake.set_cache(min_tokens=1024, ttl_s=300)
    fake.reset()
    return fake


def claude(server: FakeAnthropicServer | str, **settings: Any) -> AnthropicProvider:
    base_url = server if isinstance(server, str) else server.base_url
    return AnthropicProvider(MODEL, base_url=base_url, api_key=KEY, **settings)


def reviews(n: int) -> pa.Table:
    return pa.table({"text": [f"review {i}: the battery lasts {i % 7} days" for i in range(n)]})


def billed(stats: ServerStats, prices: Prices) -> float:
    """What the server billed, from its own counts."""
    return prices.cost(stats.prompt_tokens, stats.completion_tokens, cached_tokens=stats.cached_tokens,
                       cache_write_tokens=stats.cache_write_tokens)


def assert_usage_is_what_the_server_billed(usage: Usage, stats: ServerStats) -> None:
    assert (usage.prompt_tokens, usage.completion_tokens) == (stats.prompt_tokens, stats.completion_tokens)
    assert (usage.cached_tokens, usage.cache_write_tokens) == (stats.cached_tokens, stats.cache_write_tokens)


# -- the request ------------------------------------------------------------------------------------------------
def png(color: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (4, 4), color).save(out, "PNG")
    return out.getvalue()


def test_a_request_follows_the_messages_api() -> None:
    """System at the top level (with a cache breakpoint), ``max_tokens`` always set, the image as a base64
    ``image`` block, the PDF as a ``document`` block, the schema as a forced tool's ``input_schema``."""
    provider = claude("http://127.0.0.1:9")
    parts = [{"type": "text", "text": "Look:"}, ImageColumn("i").part(png("red"), 0),
             FileColumn("f").part(b"%PDF-1.4\n%%EOF", "a.pdf")]
    messages: list[dict[str, Any]] = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": parts}]
    request = provider.chat_request(messages, Insight, PromptParams(temperature=0).as_request())
    assert request["system"] == [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]
    assert request["max_tokens"] == 1024 and request["temperature"] == 0
    blocks = request["messages"][0]["content"]
    assert blocks[1]["type"] == "image" and blocks[1]["source"]["media_type"] == "image/png"
    assert blocks[2] == {"type": "document", "title": "a.pdf", "source": {
        "type": "base64", "media_type": "application/pdf", "data": "JVBERi0xLjQKJSVFT0Y="}}
    assert request["tool_choice"]["type"] == "tool" and request["tool_choice"]["name"] == "Insight"
    assert request["tools"][0]["input_schema"]["required"] == ["sentiment", "aspects", "stars"]
    capped = provider.chat_request(messages[1:], None, PromptParams(max_output_tokens=64).as_request())
    assert capped["max_tokens"] == 64 and "system" not in capped and "tools" not in capped


def test_structured_prompt_sends_the_key_and_version_and_counts_what_was_billed(
        anthropic: FakeAnthropicServer) -> None:
    out = prompt(reviews(30), "Review: {text}", provider=claude(anthropic), return_format=Insight,
                 system_message="Extract the sentiment, aspects and stars.")
    table = out.table
    assert table.column("response_error").null_count == 30
    assert all(isinstance(v["stars"], int) for v in table.column("response").to_pylist())
    stats = anthropic.stats()
    assert stats.headers["x-api-key"] == KEY and stats.headers["anthropic-version"] == "2023-06-01"
    assert stats.paths == {"/v1/messages": 30}
    assert_usage_is_what_the_server_billed(out.usage, stats)


def test_images_and_pdfs_are_answered_and_an_image_type_anthropic_refuses_fails_only_its_row(
        anthropic: FakeAnthropicServer) -> None:
    bmp = io.BytesIO()
    Image.new("RGB", (4, 4)).save(bmp, "BMP")
    table = pa.table({"img": [png("red"), bmp.getvalue(), png("blue")],
                      "doc": [b"%PDF-1.4\n1\n%%EOF", b"%PDF-1.4\n2\n%%EOF", b"%PDF-1.4\n3\n%%EOF"],
                      "name": ["one.pdf", "two.pdf", "three.pdf"]})
    out = prompt(table, ["What is shown?", ImageColumn("img"), FileColumn("doc", filename_column="name")],
                 provider=claude(anthropic), options=ROW_ERRORS)
    errors = out.table.column("response_error").to_pylist()
    assert errors[0] is None and errors[2] is None
    assert errors[1] == ("refused before sending: column 'img': an image part (image/bmp) (messages[0].parts[1]) "
                         "is not supported by provider anthropic")  # Anthropic takes jpeg, png, gif, webp only
    assert {p["filename"] for p in anthropic.stats().file_parts} >= {"one.pdf", "three.pdf"}
    sound = io.BytesIO()
    with wave.open(sound, "wb") as out_wav:  # Claude does not hear: an audio part is that row's error alone
        out_wav.setnchannels(1)
        out_wav.setsampwidth(2)
        out_wav.setframerate(8000)
        out_wav.writeframes(b"\0" * 800)
    mixed = pa.table({"f": [sound.getvalue(), b"%PDF-1.4\n%%EOF"]})
    heard = prompt(mixed, ["Transcribe:", FileColumn("f")], provider=claude(anthropic), options=ROW_ERRORS)
    refused = str(heard.table.column("response_error")[0])  # refused before sending (no content block for audio)
    assert "column 'f'" in refused and "audio part" in refused and "provider anthropic" in refused
    assert heard.table.column("response_error")[1].as_py() is None


# -- re-asks and errors -----------------------------------------------------------------------------------------
def test_a_tool_input_that_does_not_validate_is_reasked_with_an_error_tool_result(
        anthropic: FakeAnthropicServer) -> None:
    anthropic.set_faults(Fault("schema_violation", match="review 3", attempts=1))
    out = prompt(reviews(6), "Review: {text}", provider=claude(anthropic), return_format=Insight)
    assert out.table.column("response_error").null_count == 6
    assert out.usage.reasks == 1 and out.usage.requests == 7
    assert_usage_is_what_the_server_billed(out.usage, anthropic.stats())  # both attempts billed and counted

    provider = claude("http://127.0.0.1:9")
    request = provider.chat_request([{"role": "user", "content": "x"}], Insight, {})
    body = {"content": [{"type": "tool_use", "id": "toolu_1", "name": "Insight", "input": {"stars": "many"}}],
            "stop_reason": "tool_use", "usage": {"input_tokens": 5, "output_tokens": 7}}
    with pytest.raises(InvalidOutputError) as caught:
        MessagesConnection(provider.endpoint(), None, Insight).parse(request, body)
    turns = caught.value.reask_request["messages"]
    assert [t["role"] for t in turns] == ["user", "assistant", "user"] and len(request["messages"]) == 1
    result = turns[2]["content"][0]
    assert result["type"] == "tool_result" and result["tool_use_id"] == "toolu_1" and result["is_error"] is True
    assert "stars" in result["content"]


def test_overloaded_rate_limited_and_server_errors_are_retried(anthropic: FakeAnthropicServer) -> None:
    anthropic.set_faults(Fault("529", match="review 1:", retry_after=0), Fault("429", match="review 2:",
                                                                               retry_after=0),
                         Fault("500", match="review 3:"))
    out = prompt(reviews(5), "Review: {text}", provider=claude(anthropic),
                 options=RunOptions(retry=RetryPolicy(base_wait=0.01)))
    assert out.table.column("response_error").null_count == 5
    assert out.usage.retries == 3


def test_a_400_fails_its_row_only_and_a_401_stops_the_run(anthropic: FakeAnthropicServer) -> None:
    anthropic.set_faults(Fault("400", match="review 2:", attempts=None))
    out = prompt(reviews(4), "Review: {text}", provider=claude(anthropic), options=ROW_ERRORS)
    errors = out.table.column("response_error").to_pylist()
    assert [e is None for e in errors] == [True, True, False, True]
    assert "invalid_request_error" in str(errors[2]) and out.usage.requests == 4  # not retried
    anthropic.set_faults(Fault("401", attempts=None))
    with pytest.raises(FatalProviderError, match="authentication_error"):
        prompt(reviews(4), "Review: {text}", provider=claude(anthropic))


def test_the_key_never_appears_in_an_error_even_when_the_server_echoes_it() -> None:
    """A gateway that prints the request back (the key in its 400 or 401 body) must not leak it."""
    echo = json.dumps({"type": "error", "error": {"type": "invalid_request_error",
                                                 "message": f"bad request with x-api-key: {KEY}"}}).encode()
    with hostile_server() as server:
        server.reset(**{"review 1:": Answer(echo, status=400)})
        base = server.base_url.removesuffix("/v1")
        out = prompt(reviews(2), "Review: {text}", provider=claude(base), options=ROW_ERRORS)
        error = str(out.table.column("response_error")[1])
        assert "invalid_request_error" in error and KEY not in error and KEY[-12:] not in error
        server.reset(**{"review": Answer(echo.replace(b"invalid_request_error", b"authentication_error"),
                                         status=401)})
        with pytest.raises(FatalProviderError) as caught:
            prompt(reviews(2), "Review: {text}", provider=claude(base))
        assert KEY not in str(caught.value) and KEY[10:22] not in str(caught.value)
    assert KEY not in repr(claude(base))


def test_malformed_refused_and_oversized_answers_are_row_errors() -> None:
    def message(**fields: Any) -> bytes:
        return json.dumps({"type": "message", "role": "assistant", "stop_reason": "end_turn",
                           "usage": {"input_tokens": 3, "output_tokens": 2, "cache_read_input_tokens": 2048},
                           **fields}).encode()

    with hostile_server() as server:
        server.reset(**{"review 0:": Answer(message(content="x")),
                        "review 1:": Answer(message(content=[{"type": "text", "text": "no"}], stop_reason="refusal")),
                        "review 2:": Answer(message(content=[{"type": "text", "text": "y" * 50_000}])),
                        "review 3:": Answer(message(content=[{"type": "text", "text": "fine"}])),
                        "review 4:": Answer(message(content=[{"type": "text", "text": "x"}],
                                                    usage={"input_tokens": math.nan, "output_tokens": "2"}))})
        out = prompt(reviews(5), "Review: {text}", provider=claude(server.base_url.removesuffix("/v1"),
                                                                    max_response_bytes=4096),
                     options=ROW_ERRORS)
    errors = out.table.column("response_error").to_pylist()
    assert "malformed answer" in str(errors[0]) and "content" in str(errors[0])
    assert "refus" in str(errors[1])
    assert "max_response_bytes=4096" in str(errors[2])
    assert errors[3] is None and out.table.column("response")[3].as_py() == "fine"
    assert "malformed answer" in str(errors[4]) and "usage.input_tokens" in str(errors[4])  # NaN, a string
    assert out.usage.cached_tokens == 3 * 2048  # billed tokens of the bad answers still counted
    cut = {"content": [{"type": "text", "text": "The battery la"}], "stop_reason": "max_tokens", "usage": {}}
    with pytest.warns(AIAssetsWarning, match="max_tokens=16"):
        value = MessagesConnection(claude("http://127.0.0.1:9").endpoint(), None, None).parse({"max_tokens": 16}, cut)
    assert value.value == "The battery la"  # paid for and kept, and said to be cut
    with pytest.raises(MalformedAnswerError) as caught:
        MessagesConnection(claude("http://127.0.0.1:9").endpoint(), None, None).parse({}, [1, 2])
    assert caught.value.usage.prompt_tokens == 0


def test_a_provider_that_is_down_fails_each_row_after_its_attempts_and_an_empty_table_sends_nothing() -> None:
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    options = RunOptions(on_error="null", retry=RetryPolicy(max_attempts=2, base_wait=0.0))
    out = prompt(reviews(3), "Review: {text}", provider=claude(f"http://127.0.0.1:{port}"), options=options)
    assert out.table.column("response").null_count == 3 and out.usage.requests == 6
    assert all("127.0.0.1" in str(e) for e in out.table.column("response_error").to_pylist())
    empty = prompt(reviews(0), "Review: {text}", provider=claude(f"http://127.0.0.1:{port}"))
    assert empty.table.num_rows == 0 and empty.usage.requests == 0


def test_the_fake_refuses_what_the_api_refuses(anthropic: FakeAnthropicServer) -> None:
    """Messages API: ``x-api-key`` (401) and ``anthropic-version`` (400) are required, so is ``max_tokens``; a
    system role inside ``messages`` and more than 4 cache breakpoints are 400s."""
    import urllib.error
    import urllib.request

    def post(body: dict[str, Any], **headers: str) -> tuple[int, dict[str, Any]]:
        sent = {"x-api-key": KEY, "anthropic-version": "2023-06-01", "content-type": "application/json", **headers}
        request = urllib.request.Request(f"{anthropic.base_url}/v1/messages", json.dumps(body).encode(), sent)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    good = {"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    assert post(good)[0] == 200
    assert post(good, **{"x-api-key": ""})[1]["error"]["type"] == "authentication_error"
    assert post(good, **{"anthropic-version": ""})[0] == 400
    assert post({**good, "max_tokens": None})[1]["error"]["type"] == "invalid_request_error"
    assert post({**good, "messages": [{"role": "system", "content": "x"}]})[0] == 400
    marked = [{"type": "text", "text": str(i), "cache_control": {"type": "ephemeral"}} for i in range(5)]
    assert post({**good, "messages": [{"role": "user", "content": marked}]})[0] == 400
    anthropic.set_faults(Fault("529", attempts=None))
    status, body = post(good)
    assert status == 529 and body == {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


def test_answers_carry_the_accounts_rate_headers_and_a_429_waits_its_retry_after(
        anthropic: FakeAnthropicServer) -> None:
    anthropic.set_rate_limit(rpm=120, window_s=1.0)  # 2 requests a second
    provider = claude(anthropic)

    async def one() -> Mapping[str, str] | None:
        async with provider.connect(None, 1, 10.0) as connection:
            reply = await connection.send(provider.chat_request([{"role": "user", "content": "hello"}], None, {}))
            return reply.headers

    headers = asyncio.run(one())
    assert headers is not None
    assert headers["anthropic-ratelimit-requests-limit"] == "120"
    assert headers["anthropic-ratelimit-requests-remaining"] == "1"
    assert headers["anthropic-ratelimit-requests-reset"].endswith("Z")
    out = prompt(reviews(4), "Review: {text}", provider=provider, options=RunOptions(concurrency=4))
    assert out.table.column("response_error").null_count == 4
    assert anthropic.stats().rate_limited >= 1 and out.usage.retries >= 1


# -- prompt caching ---------------------------------------------------------------------------------------------
def test_the_fakes_cache_is_written_when_a_request_completes_and_read_after() -> None:
    """Two requests in flight together both write (neither finds the other's prefix); the next one reads. A
    prefix under the minimum is neither written nor read."""
    cache = AnthropicCache()
    head = {"type": "text", "text": "h" * 8000, "cache_control": {"type": "ephemeral"}}
    request = {"messages": [{"role": "user", "content": [head, {"type": "text", "text": "q1"}]}]}
    first, second = cache.arrive(MODEL, request, now=0), cache.arrive(MODEL, request, now=0)
    assert first.cache_write == second.cache_write > 2000 and first.cache_read == second.cache_read == 0
    cache.complete(first, now=1)
    third = cache.arrive(MODEL, {"messages": [{"role": "user", "content": [head, {"type": "text", "text": "q2"}]}]},
                         now=2)
    assert third.cache_read == first.cache_write and third.cache_write == 0 and third.input_tokens > 0
    assert cache.arrive("claude-opus-4-1", request, now=2).cache_read == 0  # caches are per model
    assert cache.arrive(MODEL, request, now=1000).cache_read == 0  # 5 minutes without a read: gone
    short = {"messages": [{"role": "user", "content": [{**head, "text": "h" * 400}]}]}
    billing = cache.arrive(MODEL, short, now=3)
    cache.complete(billing, now=3)
    assert billing.cache_write == 0 and cache.arrive(MODEL, short, now=4).cache_read == 0


PREFIX = "You grade customer reviews for a retailer. " + " ".join(f"rule{i}: be fair and brief." for i in range(330))


def test_2000_rows_sharing_a_2000_token_prefix_read_it_from_the_cache_after_the_first(
        anthropic: FakeAnthropicServer) -> None:
    """Every request after its group's first reads the prefix (the prefix gate sends the first alone, and the
    fake caches a prefix once a request completes); cost is lower by Anthropic's documented discount."""
    table = pa.table({"q": [f"Question {i}: is review {i} positive?" for i in range(2000)]})
    prices = lookup(MODEL)
    assert prices is not None
    out = prompt(table, PREFIX + "\n\n{q}", provider=claude(anthropic), options=RunOptions(concurrency=64))
    stats = anthropic.stats()
    assert out.table.column("response_error").null_count == 2000 and stats.requests == 2000
    prefix = stats.cache_write_tokens  # written once, by the group's first request
    assert 1800 <= prefix <= 2400  # ~2,000 tokens
    assert stats.cached_tokens == 1999 * prefix  # and read whole by each of the 1,999 others
    assert_usage_is_what_the_server_billed(out.usage, stats)
    assert math.isclose(out.usage.cost(prices), billed(stats, prices), rel_tol=1e-9)

    anthropic.reset()
    uncached = prompt(table, PREFIX + "\n\n{q}", provider=claude(anthropic, cache_prefix=False),
                      options=RunOptions(concurrency=64))
    assert anthropic.stats().cached_tokens == anthropic.stats().cache_write_tokens == 0  # no marker, no cache
    assert uncached.usage.cost(prices) == prices.cost(uncached.usage.prompt_tokens, uncached.usage.completion_tokens)
    plain = out.usage.prompt_tokens - 2000 * prefix  # the rows' own tokens, at the input price either way
    expected = (plain + 1.25 * prefix + 0.1 * 1999 * prefix) * prices.input_per_million / 1e6 \
        + out.usage.completion_tokens * prices.output_per_million / 1e6
    assert math.isclose(out.usage.cost(prices), expected, rel_tol=1e-9)
    full = prices.cost(out.usage.prompt_tokens, out.usage.completion_tokens)  # the same tokens, never cached
    saved, input_saved = 1 - out.usage.cost(prices) / full, 1 - (plain + 1.25 * prefix + 0.1 * 1999 * prefix) / (
        plain + 2000 * prefix)
    print(f"prefix {prefix} tokens x 2000 rows: ${out.usage.cost(prices):.4f} with the cache, ${full:.4f} without "
          f"({saved:.1%} less; input {input_saved:.1%} less)")
    assert input_saved > 0.85 and saved > 0.6


def test_a_second_run_finds_every_answer_in_the_journal(anthropic: FakeAnthropicServer, tmp_path: Any) -> None:
    """The journal key is the request body, cache markers included: the same body next run is the same key."""
    cache = ResultCache(tmp_path / "journal.sqlite")
    first = prompt(reviews(20), PREFIX + "{text}", provider=claude(anthropic), return_format=Insight, cache=cache)
    again = prompt(reviews(20), PREFIX + "{text}", provider=claude(anthropic), return_format=Insight, cache=cache)
    assert first.usage.requests == 20 and again.usage.requests == 0 and again.usage.cache_hits == 20
    assert again.table.column("response").to_pylist() == first.table.column("response").to_pylist()


# -- one table shape for every vendor ---------------------------------------------------------------------------
@pytest.mark.parametrize("return_format", [Insight, None])
def test_openai_compatible_and_anthropic_give_the_same_table(anthropic: FakeAnthropicServer,
                                                             server: FakeOpenAIServer,
                                                             return_format: type[BaseModel] | None) -> None:
    table = reviews(25)
    openai = prompt(table, "Review: {text}", provider=OpenAICompatibleProvider(
        "gpt-4o-mini", base_url=server.base_url, api_key="sk-test"), return_format=return_format)
    claude_out = prompt(table, "Review: {text}", provider=claude(anthropic), return_format=return_format)
    assert claude_out.table.schema == openai.table.schema and claude_out.table.num_rows == 25
    assert claude_out.table.column("response_error").null_count == openai.table.column("response_error").null_count
    assert_usage_is_what_the_server_billed(claude_out.usage, anthropic.stats())


def test_the_registry_builds_it_by_name() -> None:
    provider = load_provider("anthropic", "claude-haiku-4-5", base_url="http://127.0.0.1:9", api_key=KEY)
    assert isinstance(provider, AnthropicProvider) and provider.identity()["model"] == "claude-haiku-4-5"
