"""The row pipeline: rows in, answers out, window by window, paying once per distinct input.

For each window of input rows (``window_rows`` or ``window_bytes``, whichever comes first) the pipeline

1. plans it: the task renders each row's request and its key (or why the row is skipped);
2. finds what is already known: rows repeated inside the window or still in flight from an earlier one, then the
   journal (answers, and failures that are final: a retry of the same run never resends a row that used up its
   attempts);
3. sends the rest through the engine, which keeps ``concurrency`` requests in flight across window boundaries;
   every answer is written to the journal before its row counts as done;
4. emits the window, in input order, with the task's output columns added.

At most ``MAX_AHEAD`` windows are alive, so memory does not grow with the size of the input. Identical rows in
different windows are sent once: a later window waits for the earlier request, or finds its answer in the journal
(the journal is the dedup store; without one, repeats are found within a window and among requests in flight).
A table goes through the same path as a stream and its answers are kept, so a table repeats nothing either.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from ai_assets.runtime.budget import Budget
from ai_assets.runtime.cache import Cache, CachedResult, Entry
from ai_assets.runtime.cache.lease import Claims
from ai_assets.runtime.calibration import Calibration, save_calibration
from ai_assets.runtime.columns import set_columns
from ai_assets.runtime.dead_letter import FailedRows
from ai_assets.runtime.engine import Engine, Job, Outcome, RunOptions
from ai_assets.runtime.errors import AttemptUsage, RowFailedError
from ai_assets.runtime.journal_writer import JournalWriter
from ai_assets.runtime.leases import Leases
from ai_assets.runtime.limits import Limits
from ai_assets.runtime.prefix_gate import PrefixGate
from ai_assets.runtime.row_counts import count_repeats, count_rows
from ai_assets.runtime.task import Plan, Progress, Task, by_prefix
from ai_assets.runtime.telemetry import CallTrace
from ai_assets.runtime.usage import Prices, Usage
from ai_assets.runtime.windows import aiter_batches, windows

MAX_AHEAD = 3
@dataclass
class Window:
    batch: pa.RecordBatch
    plan: Plan
    offset: int
    groups: list[str] | None
    known: dict[str, Outcome] = field(default_factory=dict)
    waiting: dict[str, asyncio.Future[Outcome]] = field(default_factory=dict)

    def ready(self) -> bool:
        return all(f.done() for f in self.waiting.values())


@dataclass
class Pipeline:
    task: Task
    options: RunOptions
    cache: Cache | None = None
    usage: Usage = field(default_factory=Usage)
    run_id: str | None = None
    """Failures recorded by this run are final within it (a step retry does not resend them)."""
    progress: Progress | None = None
    group_column: str | None = None
    """Count usage per value of this column too (``_partition`` in Dagster)."""
    remember: bool = False
    """Keep every answer until the end (a table's output holds them anyway): repeats across windows without a
    journal are then still sent once."""
    prices: Prices | None = None
    total_rows: int | None = None
    model: str | None = None
    """The model that answers (recorded with each dead letter)."""
    failed: FailedRows = field(default_factory=FailedRows)
    """Rows that used up their attempts (with ``on_error="null"``), as dead letters."""
    _inflight: dict[str, asyncio.Future[Outcome]] = field(default_factory=dict)
    _payloads: dict[str, Any] = field(default_factory=dict)
    _engine: Engine | None = None
    _sent_by: dict[str, str] = field(default_factory=dict)
    _memory: dict[str, Outcome] = field(default_factory=dict)
    _held: list[tuple[Window, list[Any], list[str | None]]] = field(default_factory=list)
    _learned: Calibration = field(default_factory=Calibration)
    _done_rows: int = 0
    _leases: Leases | None = None
    _gate: PrefixGate = field(default_factory=PrefixGate)
    _trace: CallTrace = field(default_factory=CallTrace)  # built here: a materialization current now is its parent

    async def run_live(self, batches: AsyncIterator[pa.RecordBatch],
                       schema: pa.Schema | None) -> AsyncIterator[pa.RecordBatch]:
        """Live mode: answers through the task's connection, window by window."""
        options = self.options
        concurrency = min(options.concurrency, self.task.max_concurrency or options.concurrency)
        limits = Limits.build(concurrency, options.rpm, options.tpm, self.task.account, options.rate_headroom)
        budget = None
        if options.max_cost is not None or options.max_tokens is not None:
            budget = Budget(max_tokens=options.max_tokens, max_cost=options.max_cost, prices=self.prices)
        writer = JournalWriter(self.cache) if self.cache is not None else None
        leases = self._leases = Leases(self.cache) if isinstance(self.cache, Claims) else None
        self._gate.wait_s = min(self._gate.wait_s, options.timeout_s)  # a leader stuck past it is failing anyway
        started = time.perf_counter()
        pending: deque[Window] = deque()
        watch: asyncio.Task[None] | None = None
        try:
            async with self.task.connect() as connection:
                engine = self._engine = Engine(connection, options, self.usage, limits, budget, self._trace)
                self._trace.begin(self.task, self.model, self.prices, connection.secrets)
                if leases is not None:
                    watch = asyncio.ensure_future(self._watch(leases, engine, writer))
                try:
                    offset = 0
                    async for batch in batches:
                        window = await self._open(batch, offset, engine, writer)
                        offset += batch.num_rows
                        pending.append(window)
                        while pending and (pending[0].ready() or len(pending) > MAX_AHEAD):
                            for out in await self._finish(pending.popleft(), engine):
                                yield out
                    while pending:
                        for out in await self._finish(pending.popleft(), engine):
                            yield out
                    for out in self._flush_held(final=True):
                        yield out
                    if self._done_rows == 0 and schema is not None and offset == 0:
                        yield self._empty(schema)
                finally:
                    if watch is not None:
                        watch.cancel()
                        await asyncio.gather(watch, return_exceptions=True)
                    await self._gate.close()
                    await engine.close()
        finally:
            for future in self._inflight.values():
                future.cancel()
            await self._close(writer, leases)
            self.usage.add_elapsed(time.perf_counter() - started)
            self._trace.end(self.usage)

    async def _close(self, writer: JournalWriter | None, leases: Leases | None) -> None:
        """Make every answer durable, then give up the claims: another run then finds them instead of resending."""
        try:
            if writer is not None:
                await asyncio.to_thread(writer.close)
                family = getattr(self.task, "family", lambda: None)()
                if family:
                    await asyncio.to_thread(save_calibration, self.cache, family, self._learned)  # type: ignore[arg-type]
                await asyncio.to_thread(self.cache.flush)  # type: ignore[union-attr]
        finally:
            if leases is not None:
                await leases.release()

    async def assemble(self, reader: pa.RecordBatchReader, schema: pa.Schema | None
                       ) -> AsyncIterator[pa.RecordBatch]:
        """Output windows of ``reader`` with every answer read from the journal (batch mode's second pass)."""
        assert self.cache is not None
        offset = 0
        source = windows(reader, self.options.window_rows, self.options.window_bytes)
        async for batch in aiter_batches(source, blocking=True):
            window = self._window(batch, offset)
            offset += batch.num_rows
            keys = list(dict.fromkeys(k for k in window.plan.keys if k is not None))
            hits = await asyncio.to_thread(self.cache.get_many, keys, include_errors=True)
            for key in keys:
                known = self.known_from_journal(hits.get(key), final=True)
                window.known[key] = known or Outcome(error="the batch gave no answer for this row")
            for out in self._complete(window, window.known):
                yield out
        for out in self._flush_held(final=True):
            yield out
        if self._done_rows == 0 and schema is not None and offset == 0:
            yield self._empty(schema)

    def _window(self, batch: pa.RecordBatch, offset: int) -> Window:
        plan = self.task.plan(batch)
        groups = ([str(g) for g in batch.column(self.group_column).to_pylist()]
                  if self.group_column and self.group_column in batch.schema.names else None)
        window = Window(batch, plan, offset, groups)
        count_rows(self.usage, plan, groups)
        return window

    async def _open(self, batch: pa.RecordBatch, offset: int, engine: Engine,
                    writer: JournalWriter | None) -> Window:
        window = self._window(batch, offset)
        plan = window.plan
        groups = window.groups
        first_group: dict[str, str] = {}
        for row, key in enumerate(plan.keys):
            if key is not None and key not in first_group:
                first_group[key] = groups[row] if groups else ""
        lookup = []
        for key in first_group:
            if key in self._memory:
                window.known[key] = self._memory[key]
            elif key in self._inflight:
                window.waiting[key] = self._inflight[key]
            else:
                lookup.append(key)
        repeats = sum(1 for k in plan.keys if k is not None) - len(lookup)
        self.usage.deduplicated += repeats
        if groups and repeats:
            count_repeats(self.usage, plan.keys, groups, set(lookup))
        hits = await asyncio.to_thread(self.cache.get_many, lookup, include_errors=True) \
            if self.cache is not None and lookup else {}
        to_send = []
        loop = asyncio.get_running_loop()
        for key in lookup:
            known = self.known_from_journal(hits.get(key))
            if known is not None:
                window.known[key] = known
                self.usage.cache_hits += 1
                if groups:
                    self.usage.group(first_group[key]).cache_hits += 1
                continue
            future: asyncio.Future[Outcome] = loop.create_future()
            self._inflight[key] = future
            self._payloads[key] = plan.payloads[key]
            window.waiting[key] = future
            self._sent_by[key] = first_group[key]
            to_send.append(key)
        if self.options.order_by_prefix and plan.prefixes and len(to_send) > 1:
            to_send = by_prefix(to_send, plan.prefixes)
        if self._leases is not None and to_send:
            to_send = await self._leases.claim(to_send)
        self.usage.sent_rows += len(to_send)
        self._trace.window(offset, batch.num_rows, to_send)
        if groups:
            for key in to_send:
                self.usage.group(first_group[key]).sent_rows += 1

        async def on_outcome(job: Job, outcome: Outcome) -> None:
            await self._record(job, outcome, writer)
            self._gate.answered(job.key)

        async def send(keys: list[str]) -> None:
            for job in self.task.jobs(keys, plan.payloads):
                await engine.submit(job, on_outcome)

        if self.options.order_by_prefix and plan.prefixes:
            to_send, held = self._gate.split(to_send, plan.prefixes)
            self._gate.release(held, send, self._fail)
        await send(to_send)
        return window

    def _fail(self, keys: list[str], exc: BaseException) -> None:
        for key in keys:
            future = self._inflight.get(key)
            if future is not None and not future.done():
                future.set_exception(exc)

    async def _watch(self, leases: Leases, engine: Engine, writer: JournalWriter | None) -> None:
        """Rows another run holds: take its answers from the journal, or send them once its claims lapse."""
        assert self.cache is not None

        def resolve(key: str, hit: CachedResult) -> bool:
            known = self.known_from_journal(hit)  # an answer, or a failure that is final (as at the window's start)
            if known is None:
                return False
            outcome = Outcome(known.value, known.error)  # paid by the other run: no usage here
            self.usage.cache_hits += 1
            group = self._sent_by.pop(key, None)
            if group is not None and self.group_column:
                self.usage.group(group).cache_hits += 1
            self._settle(key, outcome)
            return True

        async def send(keys: list[str]) -> None:
            self.usage.sent_rows += len(keys)

            async def on_outcome(job: Job, outcome: Outcome) -> None:
                await self._record(job, outcome, writer)

            for job in self.task.jobs(keys, {k: self._payloads[k] for k in keys}):
                engine.submit_now(job, on_outcome)

        await leases.watch(functools.partial(self.cache.get_many, include_errors=True), resolve, send, self._fail)

    def _settle(self, key: str, outcome: Outcome) -> None:
        future = self._inflight.pop(key, None)
        self._payloads.pop(key, None)
        if future is not None and not future.done():
            future.set_result(outcome)
        if self.remember:
            self._memory[key] = outcome

    def _empty(self, schema: pa.Schema) -> pa.RecordBatch:
        columns = self.task.columns([], [], final=True) or {}
        return set_columns(pa.RecordBatch.from_pylist([], schema=schema), columns)

    def known_from_journal(self, hit: CachedResult | None, *, final: bool = False) -> Outcome | None:
        """A journal entry as a known outcome, or None when the row must be sent. A failure is known when
        failures are final, or when this run recorded it (or ``final``: nothing will be sent any more)."""
        if hit is None:
            return None
        if hit.error is None:
            return Outcome(self.task.decode(hit.value), usage=AttemptUsage(hit.tokens_in, hit.tokens_out))
        known = final or not self.options.retry_failed_rows or (self.run_id is not None and hit.run == self.run_id)
        return Outcome(error=hit.error) if known else None

    async def _record(self, job: Job, outcome: Outcome, writer: JournalWriter | None) -> None:
        """A job's outcome: into the journal first, then to the windows waiting for it. A failed job of several
        rows may instead send each row again alone."""
        if not outcome.ok and job.keys and len(job.keys) > 1 and self.task.retry_alone(outcome):
            assert self._engine is not None

            async def on_outcome(part: Job, result: Outcome) -> None:
                await self._record(part, result, writer)

            self.usage.retries += len(job.keys)
            for key in job.keys:
                for single in self.task.jobs([key], {key: self._payloads[key]}):
                    self._engine.submit_now(single, on_outcome)
            return
        parts = self.task.split(job, outcome)
        shares = _share(outcome.usage, len(parts))
        if outcome.ok and outcome.attempts == 1:
            self._learned.add(job.cost.prompt, outcome.usage.prompt_tokens, outcome.usage.completion_tokens, len(parts))
        if self.group_column and parts:
            sent_by = self.usage.group(self._sent_by.get(parts[0][0], ""))
            sent_by.requests += outcome.attempts
            if outcome.latency_s is not None:
                sent_by.latency(outcome.latency_s)
        if writer is not None:
            await writer.write([
                Entry(key, self.task.encode(part.value) if part.ok else None, part.error,
                      None if part.ok else self.run_id, share.prompt_tokens, share.completion_tokens)
                for (key, part), share in zip(parts, shares, strict=True)])
        for (key, part), share in zip(parts, shares, strict=True):
            group = self._sent_by.pop(key, None)
            if group is not None and self.group_column:
                self.usage.group(group).add_tokens(share)
            self._settle(key, part)

    async def _finish(self, window: Window, engine: Engine) -> list[pa.RecordBatch]:
        outcomes = dict(window.known)
        for key, future in window.waiting.items():
            outcomes[key] = await engine.guard(future)
        self._trace.window_done(window.offset)
        return self._complete(window, outcomes)

    def _complete(self, window: Window, outcomes: Mapping[str, Outcome]) -> list[pa.RecordBatch]:
        """The window's values and errors in row order (raising on a failed row with on_error="raise")."""
        values: list[Any] = []
        errors: list[str | None] = []
        dead: list[tuple[int, Outcome]] = []
        for row, (row_key, skip) in enumerate(zip(window.plan.keys, window.plan.skips, strict=True)):
            group = self.usage.group(window.groups[row]) if window.groups else None
            if row_key is None and not (skip is not None and skip.is_error):
                values.append(None)
                errors.append(str(skip) if skip is not None else None)
                continue
            outcome = outcomes[row_key] if row_key is not None else Outcome(error=str(skip))  # refused unsent
            if outcome.ok:
                values.append(outcome.value)
                errors.append(None)
                self.usage.answered += 1
                if group is not None:
                    group.answered += 1
                continue
            self.usage.errors += 1
            if group is not None:
                group.errors += 1
            if self.options.on_error == "raise":
                raise RowFailedError(window.offset + row, outcome.attempts, outcome.error or "failed",
                                     usage=outcome.usage, last_output=outcome.last_output)
            values.append(None)
            errors.append(outcome.error)
            dead.append((row, outcome))
        if dead:
            self.failed.add(window.batch.take([row for row, _ in dead]),
                            [outcome.error or "failed" for _, outcome in dead],
                            [outcome.attempts or None for _, outcome in dead], [self.model] * len(dead))
        self._held.append((window, values, errors))
        return self._flush_held(final=False)

    def _flush_held(self, *, final: bool) -> list[pa.RecordBatch]:
        out: list[pa.RecordBatch] = []
        while self._held:
            window, values, errors = self._held[0]
            columns = self.task.columns(values, errors, final=final)
            if columns is None:
                break
            self._held.pop(0)
            out.append(set_columns(window.batch, columns))
            self._done_rows += window.batch.num_rows
            if self.progress is not None:
                self.progress(self._done_rows, self.total_rows)
        return out


def _share(usage: AttemptUsage, parts: int) -> list[AttemptUsage]:
    """A job's tokens split over the rows it answered (the remainder to the first)."""
    if parts <= 1:
        return [usage] * parts
    prompt, completion = divmod(usage.prompt_tokens, parts), divmod(usage.completion_tokens, parts)
    cached, written = divmod(usage.cached_tokens, parts), divmod(usage.cache_write_tokens, parts)
    reasoning = divmod(usage.reasoning_tokens, parts)
    shares = [AttemptUsage(prompt[0], completion[0], cached[0], written[0], reasoning[0]) for _ in range(parts)]
    shares[0] = AttemptUsage(prompt[0] + prompt[1], completion[0] + completion[1], cached[0] + cached[1],
                             written[0] + written[1], reasoning[0] + reasoning[1])
    return shares


