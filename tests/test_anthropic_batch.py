"""Anthropic Message Batches through batch mode's client protocol, with the same journal as live mode.

Documented behaviour modelled (docs.anthropic.com "Message Batches" and its API reference, as anthropic-sdk-python's
``types/messages/message_batch*.py`` shape it): ``POST /v1/messages/batches`` with ``requests: [{custom_id,
params}]`` and ``custom_id`` matching ``^[a-zA-Z0-9_-]{1,64}$``; ``processing_status`` in_progress / canceling /
ended; results JSONL in any order with ``result.type`` succeeded / errored / canceled / expired; at most 100,000
requests per batch; batches priced at half the Messages price ("Pricing": "Batch processing ... 50% discount");
the create call has no idempotency key, so a lost answer or a kill must be recovered by listing (newest first).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from ai_assets import PromptParams, RunOptions, prompt
from ai_assets.providers.anthropic import AnthropicProvider
from ai_assets.providers.anthropic_batch import CUSTOM_ID, AnthropicBatchClient, ids_digest
from ai_assets.runtime.batch import PENDING
from ai_assets.runtime.cache import Entry, cache_key
from ai_assets.runtime.cache.sqlite import ResultCache
from ai_assets.runtime.options import BatchOptions
from ai_assets.runtime.prices import lookup
from ai_assets.runtime.usage import Prices
from ai_assets.testing import Fault
from ai_assets.testing.anthropic_batches import MessageBatchBehaviour
from ai_assets.testing.anthropic_server import FakeAnthropicServer

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-ant-api03-" + "Bq7wT3nL" * 6
MODEL = "claude-sonnet-4-5"


class Review(BaseModel):
    sentiment: str
    stars: int


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAnthropicServer]:
    with FakeAnthropicServer(in_process=True) as server:
        yield server


@pytest.fixture
def server(fake: FakeAnthropicServer) -> FakeAnthropicServer:
    fake.set_faults()
    fake.set_message_batches(MessageBatchBehaviour())
    fake.reset()
    return fake


@pytest.fixture
def claude(server: FakeAnthropicServer) -> AnthropicProvider:
    return AnthropicProvider(MODEL, base_url=server.base_url, api_key=KEY)


def rows(n: int, tag: str = "row") -> pa.Table:
    return pa.table({"id": list(range(n)), "text": [f"{tag} {i}" for i in range(n)]})


def batch_options(**batch: object) -> RunOptions:
    return RunOptions(mode="batch", on_error="null", batch=BatchOptions(poll_s=0.05, **batch))  # type: ignore[arg-type]


def batch_polls(server: FakeAnthropicServer) -> int:
    return sum(n for path, n in server.stats().paths.items() if path.startswith("/v1/messages/batches/msgbatch_"))


def test_a_partition_goes_through_message_batches_once_at_half_price(
        tmp_path: Path, server: FakeAnthropicServer, claude: AnthropicProvider) -> None:
    journal = ResultCache(tmp_path / "journal.sqlite")
    out = prompt(rows(250), "{text}", provider=claude, return_format=Review, cache=journal,
                 options=batch_options(max_requests=100))
    stats = server.stats()
    assert (stats.batches_created, stats.batch_lines) == (3, 250)  # split at max_requests
    assert stats.paths.get("/v1/messages", 0) == 0  # nothing sent live
    assert out.table.column("response").null_count == 0 and out.usage.batch
    assert out.table.column("id").to_pylist() == list(range(250))  # input order, though results come reversed
    assert out.usage.prompt_tokens == stats.prompt_tokens and out.usage.completion_tokens == stats.completion_tokens
    prices = lookup(MODEL)
    assert prices is not None
    full = prices.cost(stats.prompt_tokens, stats.completion_tokens)
    assert math.isclose(out.usage.cost(prices), full * (1 - prices.batch_discount)) and prices.batch_discount == 0.5
    live = prompt(rows(250), "{text}", provider=claude, return_format=Review,
                  cache=ResultCache(tmp_path / "live.sqlite"))
    assert out.table.equals(live.table)  # the same table as live mode
    server.reset()
    again = prompt(rows(250), "{text}", provider=claude, return_format=Review, cache=journal,
                   options=batch_options(max_requests=100))
    assert server.stats().batches_created == 0 and again.table.equals(out.table)


@given(st.text(min_size=0, max_size=300))
def test_custom_ids_fit_anthropics_alphabet_and_length(key: str) -> None:
    """A custom_id must match ``^[a-zA-Z0-9_-]{1,64}$``: a journal key that fits is used as is (the SHA-256 hex
    keys do), any other is hashed into it, deterministically."""
    client = AnthropicBatchClient.__new__(AnthropicBatchClient)
    custom_id = client.custom_id(key)
    assert CUSTOM_ID.fullmatch(custom_id) and custom_id == client.custom_id(key)
    assert (custom_id == key) == bool(CUSTOM_ID.fullmatch(key))


def test_errored_expired_and_canceled_lines_are_resent_succeeded_never(
        tmp_path: Path, server: FakeAnthropicServer, claude: AnthropicProvider) -> None:
    """Expired lines go again in the same run (``on_expired="resubmit"``), ``api_error`` / ``overloaded_error``
    lines are retried as live 500 / 529s are, ``invalid_request_error`` and canceled lines are row errors sent
    again by the next run; a succeeded line is never sent twice."""
    server.set_faults(Fault("400", match="bad", attempts=1), Fault("529", match="busy", attempts=1))
    server.set_message_batches(MessageBatchBehaviour(expire_match="late", cancel_match="stop"))
    tags = ["ok", "bad", "busy", "late", "stop"]
    table = pa.table({"text": [f"{tags[i % 5]} {i}" for i in range(100)]})
    journal = tmp_path / "a.sqlite"
    first = prompt(table, "{text}", provider=claude, cache=ResultCache(journal), options=batch_options())
    errors = first.table.column("response_error").to_pylist()
    assert [i % 5 in (1, 4) for i in range(100)] == [e is not None for e in errors], errors[:5]
    assert "invalid_request_error" in errors[1] and "batch_cancelled" in errors[4]
    assert server.stats().batch_lines == 20 * 3 + 20 * 2  # ok, bad, busy once; busy and late again
    server.set_faults()
    server.reset()
    second = prompt(table, "{text}", provider=claude, cache=ResultCache(journal), options=batch_options())
    assert server.stats().batch_lines == 40 and server.stats().batches_created == 1  # exactly bad and stop
    assert second.table.column("response").null_count == 0


SUBMITTER = """
import sys
import pyarrow as pa
from ai_assets import RunOptions, prompt
from ai_assets.providers.anthropic import AnthropicProvider
from ai_assets.runtime.cache.sqlite import ResultCache
from ai_assets.runtime.options import BatchOptions
claude = AnthropicProvider("claude-sonnet-4-5", base_url=sys.argv[1], api_key="k")
table = pa.table({"id": list(range(300)), "text": [f"{sys.argv[3]} {i}" for i in range(300)]})
prompt(table, "{text}", provider=claude, cache=ResultCache(sys.argv[2]),
       options=RunOptions(mode="batch", on_error="null", batch=BatchOptions(max_requests=1000, poll_s=0.05)))
"""


def killed_when(server: FakeAnthropicServer, journal: Path, ready: str) -> float:
    """Run ``SUBMITTER`` in a process of its own and SIGKILL it once ``ready`` holds on the server:
    ``"polled"`` (the create answered, the id recorded, the batch polled) or ``"created"`` (the batch exists,
    the create call not answered yet: the intent recorded, no id)."""
    run = subprocess.Popen([sys.executable, "-c", SUBMITTER, server.base_url, str(journal), ready], cwd=ROOT,
                           start_new_session=True)
    deadline = time.monotonic() + 120
    while (batch_polls(server) if ready == "polled" else server.stats().batches_created) < 1:
        assert run.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    return time.monotonic()


def keys_of(claude: AnthropicProvider, table: pa.Table) -> list[str]:
    return [cache_key(claude.identity(), claude.chat_request([{"role": "user", "content": text}], None, {}))
            for text in table.column("text").to_pylist()]


def pending_records(claude: AnthropicProvider, journal: Path, table: pa.Table) -> list[dict[str, object]]:
    hits = ResultCache(journal).get_many([PENDING + k for k in keys_of(claude, table)], include_errors=True)
    return [dict(hit.value) for hit in hits.values() if isinstance(hit.value, dict)]


@pytest.mark.parametrize("ready", ["polled", "created"])
def test_a_batch_killed_after_submission_is_never_created_twice(
        tmp_path: Path, server: FakeAnthropicServer, claude: AnthropicProvider, ready: str) -> None:
    """Killed after the create answered and the id was recorded (``polled``), or between the intent and the id
    (``created``: the create call is held 3 s, the batch exists): the next run creates no second batch and
    answers every row once."""
    server.set_message_batches(MessageBatchBehaviour(polls=10**9, create_delay=3.0 if ready == "created" else 0))
    journal = tmp_path / "journal.sqlite"
    killed_at = killed_when(server, journal, ready)
    records = pending_records(claude, journal, rows(300, ready))
    assert records and all(r.get("intent") for r in records)
    assert all((r.get("batch") is None) == (ready == "created") for r in records)
    server.set_message_batches(MessageBatchBehaviour(polls=1))
    out = prompt(rows(300, ready), "{text}", provider=claude, cache=ResultCache(journal), options=batch_options())
    stats = server.stats()
    assert stats.batches_created == 1 and stats.batch_lines == 300  # one batch; every row answered once
    assert out.table.column("response").null_count == 0
    time.sleep(max(0.0, killed_at + 3.5 - time.monotonic()))  # the held create answers the dead client, and ends


def intent_only(claude: AnthropicProvider, journal: Path, table: pa.Table, at: float) -> list[str]:
    """The journal a run killed after recording its intent, before its create call was sent, leaves."""
    keys = keys_of(claude, table)
    intent = {"at": at, "count": len(keys), "ids": ids_digest(keys)}
    ResultCache(journal).put_many([Entry(PENDING + k, {"intent": intent, "batch": None, "custom_id": k})
                                   for k in keys])
    return keys


def test_an_intent_whose_create_never_arrived_is_submitted_once(
        tmp_path: Path, server: FakeAnthropicServer, claude: AnthropicProvider) -> None:
    table = rows(20)
    intent_only(claude, tmp_path / "j.sqlite", table, time.time())
    out = prompt(table, "{text}", provider=claude, cache=ResultCache(tmp_path / "j.sqlite"), options=batch_options())
    assert (server.stats().batches_created, server.stats().batch_lines) == (1, 20)
    assert out.table.column("response").null_count == 0


@pytest.mark.parametrize("other_state", ["ended", "running"])
def test_another_batch_of_the_same_size_is_not_taken_for_ours(
        tmp_path: Path, server: FakeAnthropicServer, claude: AnthropicProvider, other_state: str) -> None:
    """Another process's batch of the same request count, created in the intent's window. Ended, it is told
    apart by its custom ids: this run submits its own rows. Still running, it cannot be told apart (the API shows
    no request of a running batch): this run polls it and reads it, finds none of its rows there, makes them
    row errors saying so, and the next run sends them; no answer of the other's is taken for ours."""
    table = rows(20, other_state)
    journal = tmp_path / "j.sqlite"
    intent_only(claude, journal, table, time.time())
    other = {"requests": [{"custom_id": f"other-{i}", "params": {"model": MODEL, "max_tokens": 16, "messages": [
        {"role": "user", "content": f"someone else's row {i}"}]}} for i in range(20)]}
    headers = {"x-api-key": "other", "anthropic-version": "2023-06-01"}
    request = urllib.request.Request(f"{server.base_url}/v1/messages/batches", data=json.dumps(other).encode(),
                                     headers=headers)
    with urllib.request.urlopen(request, timeout=10) as answer:
        other_id = json.loads(answer.read())["id"]
    status = "in_progress"
    while other_state == "ended" and status != "ended":
        time.sleep(0.02)
        with urllib.request.urlopen(urllib.request.Request(f"{server.base_url}/v1/messages/batches/{other_id}",
                                                           headers=headers), timeout=10) as answer:
            status = json.loads(answer.read())["processing_status"]
    out = prompt(table, "{text}", provider=claude, cache=ResultCache(journal), options=batch_options())
    answers = out.table.column("response").to_pylist()
    assert all(v is None or v.startswith(f"Answer to: {other_state}") for v in answers)
    if other_state == "ended":
        assert (server.stats().batches_created, server.stats().batch_lines) == (2, 40)
        assert None not in answers
        return
    assert (server.stats().batches_created, server.stats().batch_lines) == (1, 20)
    errors = out.table.column("response_error").to_pylist()
    assert all("no answer for this row in batch(es)" in (e or "") for e in errors), errors[:2]
    again = prompt(table, "{text}", provider=claude, cache=ResultCache(journal), options=batch_options())
    assert (server.stats().batches_created, server.stats().batch_lines) == (2, 40)
    assert again.table.column("response").null_count == 0


def test_a_lost_create_answer_creates_no_second_batch(
        tmp_path: Path, server: FakeAnthropicServer, claude: AnthropicProvider) -> None:
    server.set_message_batches(MessageBatchBehaviour(lose_create_responses=1))
    out = prompt(rows(20), "{text}", provider=claude, cache=ResultCache(tmp_path / "a.sqlite"),
                 options=batch_options())
    assert (server.stats().batches_created, server.stats().batch_lines) == (1, 20)
    assert out.table.column("response").null_count == 0


def test_the_api_key_never_reaches_errors_or_the_journal(
        tmp_path: Path, server: FakeAnthropicServer, claude: AnthropicProvider) -> None:
    server.set_faults(Fault("400", match="row 3", attempts=None))
    journal = tmp_path / "a.sqlite"
    out = prompt(rows(5), "{text}", provider=claude, cache=ResultCache(journal), options=batch_options(),
                 params=PromptParams(max_output_tokens=32), prices=Prices(3.0, 15.0))
    assert out.table.column("response_error").to_pylist()[3] is not None
    assert KEY[-12:].encode() not in journal.read_bytes()
    assert KEY[-12:] not in json.dumps(out.table.to_pylist())


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                         max_size=3), max_leaves=10)


@given(st.dictionaries(st.sampled_from(["result", "type", "error", "message"]), json_values, max_size=3),
       st.sampled_from(["succeeded", "errored", "expired", "canceled", "other", None]))
def test_any_result_line_becomes_one_neutral_line(extra: dict[str, object], kind: str | None) -> None:
    """A results line whose ``result`` is missing, of the wrong type or of an unknown ``type`` is still one line of
    its row (an error), never an exception that fails the whole batch's reading."""
    from ai_assets.providers.anthropic_batch import _neutral

    result = {**extra, "type": kind} if kind else extra.get("result")
    line = _neutral({"custom_id": "a1", "result": result})
    assert line["custom_id"] == "a1" and ("response" in line) != ("error" in line)


def test_a_result_line_over_the_cap_is_skipped_and_named(caplog: pytest.LogCaptureFixture) -> None:
    """Results are JSONL of any size (a batch may be 256 MB): they are streamed, each line bounded by
    ``max_response_bytes``; a longer one is skipped with a warning naming the batch and line, and the lines after
    it are still read."""
    import asyncio

    import aiohttp
    from aiohttp import web

    from ai_assets.runtime.batch_protocol import BatchState

    good = {"custom_id": "a", "result": {"type": "expired"}}
    body = (json.dumps(good) + "\n" + json.dumps({"custom_id": "b", "pad": "x" * 300_000}) + "\n"
            + json.dumps({**good, "custom_id": "c"}))  # no final newline

    async def results(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for start in range(0, len(body), 7_000):
            await response.write(body[start:start + 7_000].encode())
        return response

    async def scenario() -> list[str]:
        app = web.Application()
        app.router.add_get("/v1/messages/batches/{id}/results", results)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            async with aiohttp.ClientSession() as session:
                client = AnthropicBatchClient(f"http://127.0.0.1:{port}", session, (), 5.0, 64 * 1024)
                return [str(line["custom_id"]) async for line in client.results(BatchState("msgbatch_x", True))]
        finally:
            await runner.cleanup()

    with caplog.at_level("WARNING"):
        assert asyncio.run(scenario()) == ["a", "c"]
    assert "batch msgbatch_x: result line 2 is over 65536 bytes" in caplog.text
