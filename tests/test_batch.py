"""Batch mode and spending caps, counted at the fake server (files, batches, lines, live requests)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest
from pydantic import BaseModel

from ai_assets import (
    BudgetExceededError,
    OpenAICompatibleProvider,
    Prices,
    PromptParams,
    ResultCache,
    RunOptions,
    embed_text,
    prompt,
)
from ai_assets.runtime.batch import PENDING
from ai_assets.runtime.cache import Entry, cache_key
from ai_assets.runtime.errors import TransientError
from ai_assets.runtime.options import BatchOptions
from ai_assets.testing import BatchBehaviour, FakeOpenAIServer, Fault

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


class Review(BaseModel):
    sentiment: str
    stars: int


def rows(n: int, tag: str = "row") -> pa.Table:
    return pa.table({"id": list(range(n)), "text": [f"{tag} {i}" for i in range(n)]})


def batch_options(**batch: object) -> RunOptions:
    return RunOptions(mode="batch", on_error="null", batch=BatchOptions(poll_s=0.05, **batch))  # type: ignore[arg-type]


def test_a_partition_is_split_into_batches_and_answered_exactly_once(
        tmp_path: Path, server: FakeOpenAIServer, llm: OpenAICompatibleProvider) -> None:
    cache = ResultCache(tmp_path / "journal.sqlite")
    out = prompt(rows(1_200), "{text}", provider=llm, return_format=Review, cache=cache,
                 options=batch_options(max_requests=500))
    stats = server.stats()
    assert (stats.files_uploaded, stats.batches_created, stats.batch_lines) == (3, 3, 1_200)
    assert stats.chat_requests == 1_200 and stats.requests == 1_200  # every one a batch line, none sent live
    assert stats.paths.get("/v1/chat/completions", 0) == 0
    assert out.table.column("response").null_count == 0 and out.usage.batch
    assert out.table.column("id").to_pylist() == list(range(1_200))  # input order, though outputs come reversed
    assert out.usage.prompt_tokens == stats.prompt_tokens
    server.reset()
    again = prompt(rows(1_200), "{text}", provider=llm, return_format=Review, cache=cache,
                   options=batch_options(max_requests=500))
    assert server.stats().batches_created == 0 and again.table.equals(out.table)


def test_live_and_batch_give_the_same_table(tmp_path: Path, llm: OpenAICompatibleProvider) -> None:
    live = prompt(rows(50), "{text}", provider=llm, return_format=Review, cache=ResultCache(tmp_path / "a.sqlite"))
    batch = prompt(rows(50), "{text}", provider=llm, return_format=Review, cache=ResultCache(tmp_path / "b.sqlite"),
                   options=batch_options())
    assert batch.table.equals(live.table)
    vectors_live = embed_text(rows(30), "text", provider=llm, cache=ResultCache(tmp_path / "c.sqlite"))
    vectors_batch = embed_text(rows(30), "text", provider=llm, cache=ResultCache(tmp_path / "d.sqlite"),
                               options=batch_options())
    assert vectors_batch.table.equals(vectors_live.table)


SUBMITTER = """
import sys
import pyarrow as pa
from ai_assets import OpenAICompatibleProvider, ResultCache, RunOptions, prompt
from ai_assets.runtime.options import BatchOptions
llm = OpenAICompatibleProvider("fake-model", base_url=sys.argv[1], api_key="k")
table = pa.table({"id": list(range(1200)), "text": [f"row {i}" for i in range(1200)]})
prompt(table, "{text}", provider=llm, cache=ResultCache(sys.argv[2]),
       options=RunOptions(mode="batch", batch=BatchOptions(max_requests=500, poll_s=0.05)))
"""


def kill_after_submitting(script: str, server: FakeOpenAIServer, journal: Path, batches: int = 3) -> None:
    """Run ``script`` in a process of its own and SIGKILL it once it has created ``batches`` batches: submitted,
    not answered yet, so what it paid for is on the server."""
    run = subprocess.Popen([sys.executable, "-c", script, server.base_url, str(journal)], cwd=ROOT,
                           start_new_session=True)
    deadline = time.monotonic() + 120
    while server.stats().batches_created < batches:
        assert run.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()


def test_a_run_killed_after_submitting_resumes_the_same_batches(tmp_path: Path, server: FakeOpenAIServer,
                                                                llm: OpenAICompatibleProvider) -> None:
    server.set_batches(BatchBehaviour(delay=6.0))
    journal = tmp_path / "journal.sqlite"
    kill_after_submitting(SUBMITTER, server, journal)
    server.set_batches(BatchBehaviour(delay=0.2))
    out = prompt(rows(1_200), "{text}", provider=llm, cache=ResultCache(journal), options=batch_options())
    stats = server.stats()
    assert (stats.files_uploaded, stats.batches_created) == (3, 3)  # nothing submitted again
    assert stats.batch_lines == 1_200 and out.table.column("response").null_count == 0


def test_a_run_killed_between_upload_and_batch_finds_its_file(tmp_path: Path, server: FakeOpenAIServer,
                                                              llm: OpenAICompatibleProvider) -> None:
    """The narrowest window: the file is uploaded and recorded, the batch never created. The next run creates the
    batch from that file instead of uploading again."""
    import asyncio

    table = rows(20)
    identity = llm.identity()
    lines, entries = [], []
    for text in table.column("text").to_pylist():
        request = llm.chat_request([{"role": "user", "content": text}], None, {})
        key = cache_key(identity, request)
        lines.append(json.dumps({"custom_id": key, "method": "POST", "url": "/v1/chat/completions",
                                 "body": request}))
        entries.append((key, request))

    async def upload() -> str:
        async with llm.connect_batches() as client:
            return await client.upload("orphan.jsonl", ("\n".join(lines) + "\n").encode())

    file_id = asyncio.run(upload())
    cache = ResultCache(tmp_path / "journal.sqlite")
    cache.put_many([Entry(PENDING + key, {"file": file_id, "batch": None, "custom_id": key}) for key, _ in entries])
    out = prompt(table, "{text}", provider=llm, cache=cache, options=batch_options())
    stats = server.stats()
    assert (stats.files_uploaded, stats.batches_created, stats.batch_lines) == (1, 1, 20)
    assert out.table.column("response").null_count == 0


def test_failed_lines_become_row_errors_and_expired_lines_are_resubmitted(
        tmp_path: Path, server: FakeOpenAIServer, llm: OpenAICompatibleProvider) -> None:
    server.set_faults(Fault("400", match="bad", attempts=None))
    server.set_batches(BatchBehaviour(expire_after=60))
    table = pa.table({"text": [f"{'bad' if i % 10 == 0 else 'good'} {i}" for i in range(100)]})
    out = prompt(table, "{text}", provider=llm, cache=ResultCache(tmp_path / "a.sqlite"), options=batch_options())
    errors = out.table.column("response_error").to_pylist()
    assert all((e is not None) == (i % 10 == 0) for i, e in enumerate(errors))
    assert "batch line failed (400)" in errors[0]
    assert server.stats().batches_created >= 2  # the expired batch's unanswered lines went again

    server.reset()
    server.set_batches(BatchBehaviour(expire_after=60))
    kept = prompt(rows(100, "other"), "{text}", provider=llm, cache=ResultCache(tmp_path / "b.sqlite"),
                  options=batch_options(on_expired="error"))
    expired = kept.table.column("response_error").to_pylist()
    assert sum(1 for e in expired if e and "batch_expired" in e) == 40 and server.stats().batches_created == 1


def test_a_batch_that_fails_validation_fails_its_rows(tmp_path: Path, server: FakeOpenAIServer,
                                                      llm: OpenAICompatibleProvider) -> None:
    server.set_batches(BatchBehaviour(fail_validation=True))
    out = prompt(rows(10), "{text}", provider=llm, cache=ResultCache(tmp_path / "a.sqlite"), options=batch_options())
    errors = out.table.column("response_error").to_pylist()
    assert all("failed validation" in (e or "") for e in errors)
    server.set_batches(BatchBehaviour())
    again = prompt(rows(10), "{text}", provider=llm, cache=ResultCache(tmp_path / "a.sqlite"),
                   options=batch_options())
    assert again.table.column("response").null_count == 0  # a new run submits the rows again


def test_a_budget_cap_stops_the_run_and_the_next_run_goes_on(tmp_path: Path, server: FakeOpenAIServer,
                                                              llm: OpenAICompatibleProvider) -> None:
    cache = ResultCache(tmp_path / "journal.sqlite")
    table = rows(400, "a rather long review text that costs some tokens")
    prices = Prices(1.0, 4.0)
    params = PromptParams(max_output_tokens=16)
    options = RunOptions(concurrency=8, max_cost=0.002, on_error="null")
    with pytest.raises(BudgetExceededError) as caught:
        prompt(table, "{text}", provider=llm, cache=cache, options=options, prices=prices, params=params)
    message = str(caught.value)
    assert "max_cost=$0.0020" in message and "this run spent" in message and "raise the cap" in message
    sent = server.stats().chat_requests
    billed = prices.cost(server.stats().prompt_tokens, server.stats().completion_tokens)
    assert 0 < sent < 400 and billed <= 0.002  # estimates reserve the whole output cap: never past the cap
    assert len(cache) == sent + 1  # every answer paid for is in the journal (and the estimates' calibration)
    server.reset()
    done = prompt(table, "{text}", provider=llm, cache=cache, options=RunOptions(concurrency=8), prices=prices,
                  params=params)
    assert server.stats().chat_requests == 400 - sent  # the rest only
    assert done.table.column("response").null_count == 0


RESUMER = """
import sys
import pyarrow as pa
from ai_assets import OpenAICompatibleProvider, ResultCache, RunOptions, prompt
from ai_assets.runtime.options import BatchOptions
llm = OpenAICompatibleProvider("fake-model", base_url=sys.argv[1], api_key="k")
table = pa.table({"id": list(range(1200)), "text": [f"{'flaky' if i % 50 == 0 else 'row'} {i}" for i in range(1200)]})
prompt(table, "{text}", provider=llm, cache=ResultCache(sys.argv[2]),
       options=RunOptions(mode="batch", on_error="null", batch=BatchOptions(max_requests=500, poll_s=0.05)))
"""


def test_a_run_killed_after_submission_with_expired_and_failed_lines_is_finished_by_the_next(
        tmp_path: Path, server: FakeOpenAIServer, llm: OpenAICompatibleProvider) -> None:
    """Run 1 submits three batches and is SIGKILLed. They then expire after 400 lines each (200 lines unanswered)
    and fail the first attempt of 24 'flaky' lines with a 500. Run 2 has no request bodies for those lines: it
    rebuilds them from its rows, resubmits expired and transiently failed lines, and answers every row."""
    server.set_faults(Fault("500", match="flaky", attempts=1))
    server.set_batches(BatchBehaviour(delay=4.0, expire_after=400))
    journal = tmp_path / "journal.sqlite"
    kill_after_submitting(RESUMER, server, journal)
    server.set_batches(BatchBehaviour(delay=0.2))
    table = pa.table({"id": list(range(1200)),
                      "text": [f"{'flaky' if i % 50 == 0 else 'row'} {i}" for i in range(1200)]})
    out = prompt(table, "{text}", provider=llm, cache=ResultCache(journal), options=batch_options())
    assert out.table.column("response").null_count == 0, out.table.column("response_error").drop_null()[:3]
    stats = server.stats()
    # Lines processed: 1,000 before the expiry, the 200 expired ones again, and each of the 24 flaky rows once
    # more after its 500 (the 4 in expired lines met theirs on resubmission): nothing is paid twice.
    assert stats.batch_lines == 1_000 + 200 + 24
    server.reset()
    again = prompt(table, "{text}", provider=llm, cache=ResultCache(journal), options=batch_options())
    assert server.stats().batch_lines == 0 and again.table.equals(out.table)


def test_failed_batch_lines_are_sent_again_by_the_next_run(tmp_path: Path, server: FakeOpenAIServer,
                                                           llm: OpenAICompatibleProvider) -> None:
    server.set_faults(Fault("400", match="bad", attempts=1))
    table = pa.table({"text": [f"{'bad' if i % 10 == 0 else 'good'} {i}" for i in range(100)]})
    journal = tmp_path / "a.sqlite"
    first = prompt(table, "{text}", provider=llm, cache=ResultCache(journal), options=batch_options())
    assert first.table.column("response").null_count == 10
    server.set_faults()  # the cause is gone (a fixed input, a provider incident over)
    server.reset()
    second = prompt(table, "{text}", provider=llm, cache=ResultCache(journal), options=batch_options())
    assert server.stats().batch_lines == 10  # exactly the rows without an answer, as live mode does
    assert second.table.column("response").null_count == 0


def test_batch_mode_refuses_to_submit_past_a_token_cap(tmp_path: Path, server: FakeOpenAIServer,
                                                       llm: OpenAICompatibleProvider) -> None:
    options = RunOptions(mode="batch", on_error="null", max_tokens=500,
                         batch=BatchOptions(poll_s=0.05))
    with pytest.raises(BudgetExceededError, match="refusing to submit more batch lines"):
        prompt(rows(200, "a review of some length"), "{text}", provider=llm, params=PromptParams(max_output_tokens=8),
               cache=ResultCache(tmp_path / "a.sqlite"), options=options)
    stats = server.stats()
    time.sleep(1.0)  # the submitted batch finishes on the server (0.2 s), counted in this test, not the next
    stats = server.stats()
    assert stats.prompt_tokens + 8 * stats.batch_lines <= 500  # what was submitted fits under the cap
    assert 0 < stats.batch_lines < 200


def test_a_lost_batch_create_response_creates_no_second_batch(tmp_path: Path, server: FakeOpenAIServer,
                                                              llm: OpenAICompatibleProvider) -> None:
    server.set_batches(BatchBehaviour(lose_create_responses=1))
    out = prompt(rows(20), "{text}", provider=llm, cache=ResultCache(tmp_path / "a.sqlite"), options=batch_options())
    assert server.stats().batches_created == 1 and server.stats().batch_lines == 20
    assert out.table.column("response").null_count == 0


def test_a_live_token_cap_is_used_and_reported_as_billed(tmp_path: Path, server: FakeOpenAIServer,
                                                         llm: OpenAICompatibleProvider) -> None:
    """No max_output_tokens: the completion held per request is the run's average so far, not a fixed 256, so a
    1,600-token cap on a ~3,200-token run spends most of the cap, and the error states what was billed once the
    requests in flight finished."""
    cap = 1_600
    with pytest.raises(BudgetExceededError) as caught:
        prompt(rows(100, "a short review of a product"), "{text}", provider=llm,
               cache=ResultCache(tmp_path / "a.sqlite"), options=RunOptions(concurrency=16, max_tokens=cap))
    stats = server.stats()
    billed = stats.prompt_tokens + stats.completion_tokens
    print(f"live cap {cap}: billed {billed}, reported {caught.value.tokens}")
    assert billed >= 0.75 * cap, f"stopped after {billed} of a {cap}-token cap"
    assert abs(caught.value.tokens - billed) <= 0.05 * billed
    assert f"spent {caught.value.tokens:,} tokens" in str(caught.value)


def test_batch_control_calls_wait_no_longer_than_timeout_s(tmp_path: Path, server: FakeOpenAIServer,
                                                           llm: OpenAICompatibleProvider) -> None:
    """``RunOptions.timeout_s`` bounds each Batch API call (files, batches) as it bounds a live request; it was
    ignored there (300 s a call, whatever the options said)."""
    server.set_batches(BatchBehaviour(control_delay=5.0))
    options = RunOptions(mode="batch", on_error="null", timeout_s=0.3, batch=BatchOptions(poll_s=0.05))
    with pytest.raises(TransientError, match=r"TimeoutError talking to .*/files"):  # not one 5 s answer awaited
        prompt(rows(5), "{text}", provider=llm, cache=ResultCache(tmp_path / "a.sqlite"), options=options)
    assert server.stats().paths == {"/v1/files": 6}  # each control retry's upload arrived and was cut; none more
