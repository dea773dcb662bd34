"""Batch mode: the rows the journal does not answer go to the provider's Batch API at its discount (half price at
OpenAI) instead of live requests, with the same journal, keys, partitions and output columns.

The run, for one call (one Dagster partition or range):

1. The input streams by once: each window is planned and looked up as in live mode, and spooled to a local file
   for the second pass. Rows that need an answer become JSONL request lines (``custom_id`` = the job's key), cut
   into files of at most ``max_requests`` lines and ``max_bytes`` bytes; each file is uploaded and a batch created.
2. **Never submitting twice**: before a batch is created, every row of its file is recorded in the journal as
   pending with the file's id; the batch is created with that file id in its metadata; then the rows are recorded
   with the batch id. A run killed, retried or re-launched finds those records and polls the same batches
   instead of paying again (a run killed between the two records finds its batch by file id).
3. The asset waits: batches are polled every ``poll_s`` with progress, up to ``max_wait_s`` per run (then the run
   fails with ``BatchPendingError``; the next run resumes polling). Output and error files are joined back on
   ``custom_id`` (their order is not the input's) and every answer goes into the journal as it is read. A failed
   line is a row error; lines of an expired batch are resubmitted (``on_expired="resubmit"``) or become errors.
   Invalid structured output cannot be re-asked inside a batch: it is a row error, retried by the next run.
4. The spooled input streams by again and each window is assembled from the journal, in input order.

Why the asset polls rather than a sensor completing the partition later: a partition then materializes in one
run, exactly as in live mode, so retries, backfills, asset checks and downstream assets need nothing new; a long
wait holds a run slot (give batch assets a pool of their own) but no API capacity.

The vendor's API is a ``BatchClient`` (``ai_assets.runtime.batch_protocol``: submit / status / results):
OpenAI's files-and-batches flow records the uploaded file's id as the submission, Anthropic's Message Batches
(no files, no idempotency key) an intent (time, line count, a digest of the custom ids) found again by listing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import pyarrow as pa

from ai_assets.runtime.batch_protocol import BatchClient, BatchState, Ledger
from ai_assets.runtime.budget import Budget, BudgetExceededError
from ai_assets.runtime.cache import CachedResult, Entry
from ai_assets.runtime.engine import Job, Outcome, Reply
from ai_assets.runtime.errors import (
    AIAssetsError,
    AttemptUsage,
    BadAnswerError,
    ConfigError,
    InvalidOutputError,
    bounded,
)
from ai_assets.runtime.journal_writer import JournalWriter
from ai_assets.runtime.pipeline import Pipeline
from ai_assets.runtime.spool import Spool
from ai_assets.runtime.usage import Prices

PENDING = "batch-pending:"
READ = {"read": True}
"""A pending record once its batch has been read: the row is no longer waited for (answered, or sent afresh)."""
RESUMED = "resumed:"
"""Ledger prefix of the request rebuilt for a row of a batch a killed run submitted (sent if its line expires)."""
logger = logging.getLogger(__name__)


class BatchPendingError(AIAssetsError):
    """The run waited ``max_wait_s`` and batches are still running: run again to resume polling them."""


class Parser(Protocol):
    def parse(self, request: dict[str, Any], body: dict[str, Any]) -> Reply: ...


@dataclass(frozen=True)
class BatchSupport:
    """What a task gives batch mode: the endpoint its lines go to, how a line's answer is parsed, and the API."""

    endpoint: str
    parser: Parser
    connect: Callable[[], AbstractAsyncContextManager[BatchClient]]


class BatchRun:
    def __init__(self, pipeline: Pipeline, support: BatchSupport, writer: JournalWriter) -> None:
        self.pipeline = pipeline
        self.task = pipeline.task
        self.options = pipeline.options.batch
        self.support = support
        self.writer = writer
        self.ledger = Ledger()
        self._client: BatchClient | None = None
        self.batches: set[str] = set()
        self.finished: set[str] = set()
        self.lines: list[str] = []
        self.line_keys: list[list[str]] = []
        self.line_ids: list[str] = []
        self.recovered: dict[str, list[str]] = {}
        self.size = 0
        self.awaiting = 0
        self.answered = 0
        self.submitted = 0
        self.tries: dict[str, int] = {}
        options = pipeline.options
        self.budget = None if options.max_tokens is None and options.max_cost is None else Budget(
            max_tokens=options.max_tokens, max_cost=options.max_cost, prices=_batch_prices(pipeline.prices))

    async def run(self, batches: AsyncIterator[pa.RecordBatch], schema: pa.Schema | None
                  ) -> AsyncIterator[pa.RecordBatch]:
        spool = Spool()
        try:
            async with self.support.connect() as client:
                self._client = client
                input_schema = schema
                async for batch in batches:
                    input_schema = input_schema or batch.schema
                    await asyncio.to_thread(spool.write, batch)
                    await self._collect(batch)
                await self._submit()
                await self._wait()
            async for out in self.pipeline.assemble(spool.reader(input_schema), input_schema):
                yield out
        finally:
            self.ledger.close()

    @property
    def client(self) -> BatchClient:
        assert self._client is not None, "the Batch API is used only while the run is connected"
        return self._client

    # -- pass 1: what needs an answer, and submitting it ---------------------------------------------------
    async def _collect(self, batch: pa.RecordBatch) -> None:
        plan = self.task.plan(batch)
        keys = list(dict.fromkeys(k for k in plan.keys if k is not None))
        if not keys:
            return
        cache = self.pipeline.cache
        assert cache is not None
        hits = await asyncio.to_thread(cache.get_many, [*keys, *(PENDING + k for k in keys)], include_errors=True)
        fresh = []
        for key in keys:
            if self.pipeline.known_from_journal(hits.get(key)) is not None:
                continue
            pending = hits.get(PENDING + key)
            if pending is not None and await self._resume(key, pending):
                for job in self.task.jobs([key], plan.payloads):  # its request, should its line expire
                    self.ledger.add(RESUMED + key, [job.key, *(job.keys or ())], job.request)
                continue
            fresh.append(key)
        for job in self.task.jobs(fresh, plan.payloads):
            await self._add_line(job)

    async def _resume(self, key: str, pending: CachedResult) -> bool:
        """Whether ``key`` is still answered by a batch recorded earlier (polled again, never resubmitted)."""
        record: dict[str, Any] = pending.value if isinstance(pending.value, dict) else {}
        if not isinstance(record.get("custom_id"), str):
            return False
        ids = [str(record["batch"])] if record.get("batch") else await self._recover(record)
        live = [batch_id for batch_id in ids if batch_id in self.batches or await self._alive(batch_id)]
        if not live:
            return False  # nothing will come of it: submit the row again
        keys, request = self.ledger.get(record["custom_id"])
        self.ledger.add(record["custom_id"], sorted({*keys, key}), request)
        self.ledger.await_keys([key])
        self.awaiting += 1
        return True

    async def _recover(self, record: Mapping[str, Any]) -> list[str]:
        """The batches a record written before its batch id stands for, asked once per submission and run."""
        submission = json.dumps({k: v for k, v in record.items() if k not in ("custom_id", "batch")}, sort_keys=True)
        if submission not in self.recovered:
            self.recovered[submission] = await self.client.recover(record, self.support.endpoint)
        return self.recovered[submission]

    async def _alive(self, batch_id: str) -> bool:
        state = await self.client.status(batch_id)
        if state.failed is not None or state.empty:
            return False
        self.batches.add(batch_id)
        return True

    async def _add_line(self, job: Job) -> None:
        if self.budget is not None:
            try:
                self.budget.reserve(job.cost)  # the estimate of what the line will cost, kept until the run ends
            except BudgetExceededError as exc:
                await self._submit()  # what fits under the cap goes; the next run resumes it
                raise BudgetExceededError(
                    f"refusing to submit more batch lines: their estimate passes the cap ({self.budget.describe_caps()}"
                    f"); {self.submitted:,} line(s) submitted, resumed by the next run", tokens=exc.tokens,
                    cost=exc.cost) from exc
        custom_id = self.client.custom_id(job.key)
        line = self.client.line(custom_id, self.support.endpoint, job.request)
        max_requests = min(self.options.max_requests, self.client.max_requests)
        max_bytes = min(self.options.max_bytes, self.client.max_bytes)
        if self.lines and (len(self.lines) >= max_requests or self.size + len(line) + 1 > max_bytes):
            await self._submit()
        keys = list(job.keys or (job.key,))
        self.ledger.add(custom_id, keys, job.request)
        self.ledger.await_keys(keys)
        self.lines.append(line)
        self.line_keys.append(keys)
        self.line_ids.append(custom_id)
        self.size += len(line) + 1
        self.awaiting += len(keys)

    async def _submit(self) -> None:
        if not self.lines:
            return
        submission: dict[str, Any] = {}

        async def record(identity: Mapping[str, Any]) -> None:  # durable before the create call is made
            submission.update(identity)
            await self._mark(submission, None)

        batch_id = await self.client.submit(self.lines, self.line_ids, self.support.endpoint, record)
        self.batches.add(batch_id)
        await self._mark(submission, batch_id)
        self.pipeline.usage.sent_rows += sum(len(k) for k in self.line_keys)
        self.submitted += len(self.lines)
        logger.info("submitted batch %s: %d requests", batch_id, len(self.lines))
        self.lines, self.line_keys, self.line_ids, self.size = [], [], [], 0

    async def _mark(self, submission: Mapping[str, Any], batch_id: str | None) -> None:
        entries: list[Entry] = []
        for custom_id, keys in zip(self.line_ids, self.line_keys, strict=True):
            record = {**submission, "batch": batch_id, "custom_id": custom_id}
            entries.extend(Entry(PENDING + key, record) for key in keys)
        await self.writer.write(entries)

    # -- waiting and reading the answers -------------------------------------------------------------------
    async def _wait(self) -> None:
        deadline = time.monotonic() + self.options.max_wait_s
        open_batches = set(self.batches)
        while open_batches:
            for batch_id in sorted(open_batches):
                state = await self.client.status(batch_id)
                if state.done:
                    open_batches.discard(batch_id)
                    resubmit = await self._read(state)
                    if resubmit:
                        for job in resubmit:
                            await self._add_line(job)
                        await self._submit()
                        open_batches |= self.batches - self.finished
            if self.pipeline.progress is not None:
                self.pipeline.progress(self.answered, self.awaiting)
            if not open_batches:
                return await self._close_unanswered()
            if time.monotonic() > deadline:
                raise BatchPendingError(
                    f"batch(es) {sorted(open_batches)} still running after max_wait_s={self.options.max_wait_s:g}; "
                    "run again to resume polling them (nothing is submitted twice)")
            await asyncio.sleep(self.options.poll_s)

    async def _read(self, state: BatchState) -> list[Job]:
        """Answers and failures of a finished batch into the journal; the jobs to resubmit (expired lines)."""
        self.finished.add(state.id)
        if state.failed is not None:
            failures = [(self.ledger.get(custom_id)[0], f"batch {state.id} failed validation: {state.failed}")
                        for custom_id in await self.client.custom_ids(state)]
            await self._write_failures(failures)
            return []
        resubmit: list[Job] = []
        entries: list[Entry] = []
        async for line in self.client.results(state):
            resubmit.extend(self._line(line, entries))
            if len(entries) >= 2_000:
                await self.writer.write(entries)
                entries = []
        await self.writer.write(entries)
        return resubmit

    async def _close_unanswered(self) -> None:
        """Rows awaited in batches that are all read, yet with no line of theirs (a batch recovered by its
        submission that turned out to be another's, an unreadable line): row errors, sent again by the next run."""
        keys = self.ledger.unanswered()
        if keys:
            logger.warning("%d row(s) had no line in the batches read; the next run sends them again", len(keys))
            await self._write_failures([(keys, f"no answer for this row in batch(es) {sorted(self.finished)}; "
                                               "it is sent again by the next run")])

    async def _write_failures(self, failures: list[tuple[list[str], str]]) -> None:
        run = self.pipeline.run_id
        for keys, _ in failures:
            for key in keys:
                self.ledger.answer(key)
        await self.writer.write([entry for keys, error in failures for key in keys
                                 for entry in (Entry(key, error=error, run=run), Entry(PENDING + key, READ))])

    def _line(self, line: Mapping[str, Any], entries: list[Entry]) -> list[Job]:
        keys, request = self.ledger.get(str(line["custom_id"]))
        if not keys:
            return []  # a line of a batch some other run submitted for rows this run does not read
        response, error = line.get("response") or {}, line.get("error") or {}
        response = response if isinstance(response, Mapping) else {}
        error = error if isinstance(error, Mapping) else {}
        job = Job(str(line["custom_id"]), request or {}, keys=tuple(keys))
        status = response.get("status_code")
        attempt = self.tries.get(job.key, 1)
        expired = error.get("code") == "batch_expired" and self.options.on_expired == "resubmit"
        transient = isinstance(status, int) and (status == 429 or status >= 500) and \
            attempt < self.pipeline.options.retry.max_attempts  # retried as live mode retries it
        if expired or transient:
            # A line a killed run submitted has no request here: it is rebuilt from this run's rows.
            again = [job] if request is not None else self._resumed_jobs(keys)
            if transient:
                for retry in again:
                    self.tries[retry.key] = attempt + 1
            if again:
                return again
        usage = self.pipeline.usage
        if status == 200:
            try:
                reply = self.support.parser.parse(request or {}, response["body"])
                outcome = Outcome(reply.value, attempts=1, usage=reply.usage)
            except AIAssetsError as exc:  # invalid, empty or malformed: no re-ask inside a batch
                billed = exc.usage if isinstance(exc, InvalidOutputError | BadAnswerError) else AttemptUsage()
                outcome = Outcome(error=bounded(f"{type(exc).__name__} in the batch answer: {exc}"), attempts=1,
                                  usage=billed)
            usage.requests += 1
            usage.add_tokens(outcome.usage)
        else:
            body = response.get("body")
            failure = body.get("error") if isinstance(body, Mapping) else None
            message = failure.get("message") if isinstance(failure, Mapping) else None
            code = status if response else error.get("code")
            outcome = Outcome(error=bounded(f"batch line failed ({code}): {message or error.get('message')}"),
                              attempts=1)
        for key, part in self.task.split(job, outcome):
            entries.append(Entry(key, self.task.encode(part.value) if part.ok else None, part.error,
                                 None if part.ok else self.pipeline.run_id, part.usage.prompt_tokens,
                                 part.usage.completion_tokens))
            entries.append(Entry(PENDING + key, READ))  # read: a row still unanswered is submitted afresh
            self.ledger.answer(key)
            self.answered += 1
        return []

    def _resumed_jobs(self, keys: Sequence[str]) -> list[Job]:
        jobs = []
        for key in keys:
            stored, request = self.ledger.get(RESUMED + key)
            if request is not None:
                jobs.append(Job(stored[0], request, keys=tuple(stored[1:]) or None))
        return jobs


def _batch_prices(prices: Prices | None) -> Prices | None:
    """The run's prices at the Batch API's discount, for the spending cap."""
    if prices is None:
        return None
    share = 1 - prices.batch_discount
    cached = None if prices.cached_input_per_million is None else prices.cached_input_per_million * share
    written = None if prices.cache_write_per_million is None else prices.cache_write_per_million * share
    return Prices(prices.input_per_million * share, prices.output_per_million * share, prices.batch_discount,
                  cached, written)


async def run_batch(pipeline: Pipeline, batches: AsyncIterator[pa.RecordBatch],
                    schema: pa.Schema | None) -> AsyncIterator[pa.RecordBatch]:
    """Batch mode (``ai_assets.runtime.batch``): answers through the provider's Batch API."""
    support = getattr(pipeline.task, "batch_support", lambda: None)()
    if support is None:
        raise ConfigError(f"batch mode is not available for {type(pipeline.task).__name__} with this provider: it "
                          "needs a batch API (an OpenAI-compatible Batch API, Anthropic's Message Batches)")
    if pipeline.cache is None:
        raise ConfigError("batch mode needs a journal (cache=...): it keeps the batch ids, so that a run never "
                          "submits twice, and the answers as they are read")
    pipeline.usage.batch = True
    writer = JournalWriter(pipeline.cache)
    started = time.perf_counter()
    try:
        async for out in BatchRun(pipeline, support, writer).run(batches, schema):
            yield out
    finally:
        await asyncio.to_thread(writer.close)
        await asyncio.to_thread(pipeline.cache.flush)
        pipeline.usage.add_elapsed(time.perf_counter() - started)
