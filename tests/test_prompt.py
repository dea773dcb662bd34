"""prompt() against the fake OpenAI-compatible server: structure, retries, re-asks, errors, cache."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pytest
from pydantic import BaseModel

from ai_assets import (
    OpenAICompatibleProvider,
    ResultCache,
    RetryPolicy,
    RowFailedError,
    RunOptions,
    prompt,
)
from ai_assets.testing import FakeOpenAIServer, Fault

pytestmark = pytest.mark.slow


class Tone(enum.Enum):
    CALM = "calm"
    ANGRY = "angry"


class Aspect(BaseModel):
    name: str
    sentiment: Literal["positive", "negative", "neutral"]
    mentions: list[str]


class Review(BaseModel):
    sentiment: Literal["positive", "negative", "neutral"]
    tone: Tone
    stars: int
    aspects: list[Aspect]
    summary: str | None = None


def rows(n: int, prefix: str = "review") -> pa.Table:
    return pa.table({"product": [f"p{i % 7}" for i in range(n)], "text": [f"{prefix} number {i}" for i in range(n)]})


def test_nested_pydantic_model_becomes_struct_column(llm: OpenAICompatibleProvider) -> None:
    out = prompt(rows(5), "Product {product}: {text}", provider=llm, return_format=Review,
                 system_message="Extract the review.")
    column = out.table.schema.field("response").type
    assert column == pa.struct([
        ("sentiment", pa.string()), ("tone", pa.string()), ("stars", pa.int64()),
        ("aspects", pa.list_(pa.struct([("name", pa.string()), ("sentiment", pa.string()),
                                         ("mentions", pa.list_(pa.string()))]))),
        ("summary", pa.string()),
    ])
    values = out.table.column("response").to_pylist()
    assert all(Review.model_validate(v) for v in values)
    assert {v["tone"] for v in values} <= {"calm", "angry"}
    assert out.table.column("response_error").null_count == 5
    assert out.usage.requests == 5


@pytest.mark.parametrize("mode", ["json_schema_mode", "tool_call", "json_mode"])
def test_every_structured_mode_parses(server: FakeOpenAIServer, mode: str) -> None:
    llm = OpenAICompatibleProvider("fake-model", base_url=server.base_url, api_key="k", mode=mode)
    out = prompt(rows(3), "{text}", provider=llm, return_format=Review)
    assert out.table.column("response").null_count == 0
    assert out.usage.reasks == 0


def test_429_with_retry_after_every_row_succeeds(server: FakeOpenAIServer, llm: OpenAICompatibleProvider) -> None:
    n = 1000
    server.set_faults(Fault("429", rate=0.3, attempts=1, retry_after=1))
    out = prompt(rows(n), "{text}", provider=llm, options=RunOptions(concurrency=64))
    assert out.table.column("response").null_count == 0
    stats = server.stats()
    assert abs(stats.chat_requests - 1.3 * n) <= 0.02 * 1.3 * n
    assert out.usage.requests == stats.chat_requests
    gaps = [times[1] - times[0] for times in stats.arrivals.values() if len(times) > 1]
    assert len(gaps) == stats.faults_injected
    assert min(gaps) >= 1.0


def test_retry_after_ms_is_honoured(server: FakeOpenAIServer, llm: OpenAICompatibleProvider) -> None:
    server.set_faults(Fault("503", attempts=1, retry_after_ms=300))
    prompt(rows(3), "{text}", provider=llm)
    gaps = [t[1] - t[0] for t in server.stats().arrivals.values()]
    assert len(gaps) == 3 and min(gaps) >= 0.3


def test_a_row_that_always_fails_gets_an_error_others_are_fine(
    server: FakeOpenAIServer, llm: OpenAICompatibleProvider
) -> None:
    table = pa.table({"text": ["fine 1", "poison pill", "fine 2", "fine 3"]})
    server.set_faults(Fault("500", match="poison", attempts=None))
    options = RunOptions(on_error="null", retry=RetryPolicy(max_attempts=3, base_wait=0.01))
    out = prompt(table, "{text}", provider=llm, options=options)
    assert out.table.column("response").to_pylist()[1] is None
    error = out.table.column("response_error").to_pylist()[1]
    assert "HTTP 500" in error and len(error) <= 300
    assert out.table.column("response").null_count == 1
    assert server.stats().by_key["poison pill"] == 3  # never more than max_attempts
    assert out.usage.errors == 1

    with pytest.raises(RowFailedError, match="row 1 failed after 3 attempt"):
        prompt(table, "{text}", provider=llm, options=RunOptions(retry=RetryPolicy(max_attempts=3, base_wait=0.01)))


def test_transport_faults_are_retried(server: FakeOpenAIServer, llm: OpenAICompatibleProvider) -> None:
    server.set_faults(Fault("reset", match="a", attempts=1), Fault("timeout", match="b", attempts=1, delay=2))
    table = pa.table({"text": ["a 1", "b 2", "c 3"]})
    options = RunOptions(timeout_s=0.5, retry=RetryPolicy(base_wait=0.01))
    out = prompt(table, "{text}", provider=llm, options=options)
    assert out.table.column("response").null_count == 0
    assert out.usage.retries == 2


def test_invalid_json_is_reasked_and_usage_sums_both_attempts(
    server: FakeOpenAIServer, llm: OpenAICompatibleProvider
) -> None:
    n = 10
    server.set_faults(Fault("invalid_json", attempts=1))
    out = prompt(rows(n), "{text}", provider=llm, return_format=Review)
    assert out.table.column("response").null_count == 0
    assert out.usage.requests == 2 * n and out.usage.reasks == n
    billed = server.stats()  # the server tallies what it billed for every answer, broken ones included
    assert billed.chat_requests == 2 * n
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (billed.prompt_tokens, billed.completion_tokens)
    broken_answer_tokens = n * (1 + len('{"truncated": ') // 4)
    assert out.usage.completion_tokens > broken_answer_tokens


def test_schema_violation_past_the_attempts_reports_the_last_output(
    server: FakeOpenAIServer, llm: OpenAICompatibleProvider
) -> None:
    server.set_faults(Fault("schema_violation", attempts=None))
    with pytest.raises(RowFailedError) as caught:
        prompt(rows(1), "{text}", provider=llm, return_format=Review,
               options=RunOptions(retry=RetryPolicy(max_attempts=2)))
    assert caught.value.attempts == 2
    assert caught.value.last_output is not None and "unexpected_field" in caught.value.last_output
    assert server.stats().chat_requests == 2


def test_second_run_of_the_same_rows_makes_no_calls(
    tmp_path: Path, server: FakeOpenAIServer, llm: OpenAICompatibleProvider
) -> None:
    cache = ResultCache(tmp_path / "cache.sqlite")
    first = prompt(rows(50), "{text}", provider=llm, return_format=Review, cache=cache)
    assert server.stats().chat_requests == 50
    server.reset()
    second = prompt(rows(50), "{text}", provider=llm, return_format=Review, cache=ResultCache(cache.path))
    assert server.stats().chat_requests == 0
    assert second.usage.cache_hits == 50 and second.usage.requests == 0
    assert second.table.equals(first.table)
    # A different prompt, model or schema is a different key.
    prompt(rows(50), "Again: {text}", provider=llm, return_format=Review, cache=cache)
    assert server.stats().chat_requests == 50


def test_failed_rows_are_not_cached_as_answers(
    tmp_path: Path, server: FakeOpenAIServer, llm: OpenAICompatibleProvider
) -> None:
    cache = ResultCache(tmp_path / "cache.sqlite")
    server.set_faults(Fault("500", match="number 3", attempts=None))
    options = RunOptions(on_error="null", retry=RetryPolicy(max_attempts=2, base_wait=0.01))
    prompt(rows(5), "{text}", provider=llm, options=options, cache=cache)
    server.set_faults()
    server.reset()
    again = prompt(rows(5), "{text}", provider=llm, options=options, cache=cache)
    assert server.stats().chat_requests == 1
    assert again.table.column("response").null_count == 0


def test_null_and_empty_rows_are_not_sent(server: FakeOpenAIServer, llm: OpenAICompatibleProvider) -> None:
    table = pa.table({"text": [None, "", "   ", None]}, schema=pa.schema([("text", pa.string())]))
    out = prompt(table, "{text}", provider=llm)
    assert server.stats().chat_requests == 0
    assert out.table.column("response").null_count == 4
    assert out.table.column("response_error").to_pylist() == [
        "skipped: column 'text' is null", "skipped: empty input", "skipped: empty input",
        "skipped: column 'text' is null"]
    assert out.usage.skipped == 4


def test_identical_rows_are_sent_once(server: FakeOpenAIServer, llm: OpenAICompatibleProvider) -> None:
    out = prompt(pa.table({"text": ["same"] * 20 + ["other"]}), "{text}", provider=llm)
    assert server.stats().chat_requests == 2
    assert out.usage.deduplicated == 19
    assert out.table.column("response").to_pylist()[:20] == ["Answer to: same"] * 20


def test_bad_key_stops_the_run_and_never_leaks(server: FakeOpenAIServer) -> None:
    secret = "sk-live-very-secret"
    llm = OpenAICompatibleProvider("fake-model", base_url=server.base_url, api_key=secret)
    server.set_faults(Fault("401", attempts=None))
    with pytest.raises(Exception) as caught:
        prompt(rows(30), "{text}", provider=llm, options=RunOptions(concurrency=2))
    assert "HTTP 401" in str(caught.value)
    assert secret not in str(caught.value) and secret not in repr(llm)
    assert server.stats().chat_requests < 30  # fatal: the run stops instead of failing every row


def test_template_naming_a_missing_column_is_a_clear_error(llm: OpenAICompatibleProvider) -> None:
    with pytest.raises(ValueError, match=r"column\(s\) \['title'\] not in the table"):
        prompt(rows(2), "{title}: {text}", provider=llm)


def test_params_pass_through_and_change_the_key(
    tmp_path: Path, server: FakeOpenAIServer, llm: OpenAICompatibleProvider
) -> None:
    from ai_assets import PromptParams

    cache = ResultCache(tmp_path / "c.sqlite")
    prompt(rows(3), "{text}", provider=llm, cache=cache)
    prompt(rows(3), "{text}", provider=llm, cache=cache,
           params=PromptParams(temperature=0.2, max_output_tokens=20, extra_body={"top_k": 5}))
    assert server.stats().chat_requests == 6
    request = llm.chat_request([{"role": "user", "content": "x"}], None,
                               PromptParams(max_output_tokens=20, extra_body={"top_k": 5},
                                            reasoning={"effort": "low"}).as_request())
    # A reasoning model refuses max_tokens: with reasoning the cap goes as max_completion_tokens.
    assert request["max_completion_tokens"] == 20 and "max_tokens" not in request
    assert request["top_k"] == 5 and request["reasoning_effort"] == "low"
    plain = llm.chat_request([{"role": "user", "content": "x"}], None, PromptParams(max_output_tokens=20).as_request())
    assert plain["max_tokens"] == 20


def test_rpm_and_tpm_limits_pace_the_run(server: FakeOpenAIServer, llm: OpenAICompatibleProvider) -> None:
    import time

    from ai_assets import PromptParams

    started = time.perf_counter()
    # 10 requests a second, the first second's 10 at once: 30 requests need at least (30 - 10) / 10 = 2 s.
    prompt(rows(30), "{text}", provider=llm, options=RunOptions(concurrency=64, rpm=600))
    assert time.perf_counter() - started >= 1.8
    arrivals = sorted(t for times in server.stats().arrivals.values() for t in times)
    assert arrivals[-1] - arrivals[0] >= 1.8

    server.reset()
    started = time.perf_counter()
    # 16 estimated tokens a request (short text, 10-token output budget) at 100 tokens a second, the first
    # second's 100 at once: 25 requests need at least (25 * 16 - 100) / 100 = 3 s.
    prompt(rows(25, "t"), "{text}", provider=llm, params=PromptParams(max_output_tokens=10),
           options=RunOptions(concurrency=64, tpm=6000))
    assert time.perf_counter() - started >= 2.7
    assert server.stats().chat_requests == 25
