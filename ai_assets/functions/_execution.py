"""Shared machinery of the AI functions: de-duplicate, read the cache, send what is left, map back to rows."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pyarrow as pa

from ai_assets.functions.columns import set_columns
from ai_assets.runtime.cache import Cache
from ai_assets.runtime.engine import Connection, Job, OnError, Outcome, RunOptions, run_jobs
from ai_assets.runtime.errors import RowFailedError
from ai_assets.runtime.usage import Usage

T = TypeVar("T")
Progress = Callable[[int, int], None]


@dataclass
class Enriched:
    """What an AI function returns: the input table with its new columns, and what it cost."""

    table: pa.Table
    usage: Usage = field(default_factory=Usage)


@dataclass
class RowResults:
    """Per row: the value (None when skipped or failed) and the error or skip reason."""

    values: list[Any]
    errors: list[str | None]


def run_sync(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine from sync code; from inside a running loop (Jupyter), on a worker thread."""
    runner_factory: Callable[[], asyncio.AbstractEventLoop] | None
    try:
        import uvloop

        runner_factory = uvloop.new_event_loop
    except ImportError:
        runner_factory = None

    def run() -> T:
        # The result leaves through a box, not as the task's return value: on exit asyncio.Runner calls
        # signal.getsignal(), whose failed Enum lookup formats repr(task) and with it the whole result (seconds
        # of numpy repr for a few thousand vectors; bench/bench_embed.py showed 0.55 of raw encode before this).
        box: list[T] = []

        async def main() -> None:
            box.append(await make())

        with asyncio.Runner(loop_factory=runner_factory) as runner:
            runner.run(main())
        return box[0]

    try:
        asyncio.get_running_loop()
        in_loop = True
    except RuntimeError:
        in_loop = False
    if not in_loop:
        return run()
    results: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            results.append(run())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, name="ai_assets-run")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return results[0]


Record = Callable[[str, Outcome], None]
Send = Callable[[list[str], Record], Awaitable[None]]


async def execute(
    keys: Sequence[str | None],
    skip_reasons: Sequence[str | None],
    send: Send,
    on_error: OnError,
    cache: Cache | None,
    usage: Usage,
    progress: Progress | None = None,
    retry_failed: bool = True,
) -> RowResults:
    """Answer every row whose key is not None, paying only for keys neither cached nor repeated.

    ``send(missing, record)`` computes the keys still missing and calls ``record(key, outcome)`` for each as soon
    as it is final; the outcome is then made durable in the cache before anything else happens.
    Rows that failed in an earlier run are sent again unless ``retry_failed`` is False.
    ``progress(done, total)`` follows the keys that had to be sent.
    """
    started = time.perf_counter()
    try:
        answers, failures = await _answer(keys, send, cache, usage, progress, retry_failed)
        return _assemble(keys, skip_reasons, answers, failures, on_error, usage)
    finally:
        usage.elapsed_s += time.perf_counter() - started


async def _answer(keys: Sequence[str | None], send: Send, cache: Cache | None, usage: Usage,
                  progress: Progress | None, retry_failed: bool) -> tuple[dict[str, Any], dict[str, Outcome]]:
    """Answers and failures by key: from the cache first, then from ``send`` for the keys still missing."""
    usage.rows += len(keys)
    usage.skipped += sum(1 for k in keys if k is None)
    unique = list(dict.fromkeys(k for k in keys if k is not None))
    usage.deduplicated += sum(1 for k in keys if k is not None) - len(unique)
    answers: dict[str, Any] = {}
    failures: dict[str, Outcome] = {}
    if cache is not None and unique:
        hits = await asyncio.to_thread(cache.get_many, unique, include_errors=not retry_failed)
        answers.update({k: hit.value for k, hit in hits.items() if hit.error is None})
        failures.update({k: Outcome(error=hit.error, attempts=0) for k, hit in hits.items() if hit.error})
        usage.cache_hits += len(hits)
    missing = [k for k in unique if k not in answers and k not in failures]
    usage.sent_rows += len(missing)
    done = [0]

    def record(key: str, outcome: Outcome) -> None:
        if outcome.ok:
            answers[key] = outcome.value
        else:
            failures[key] = outcome
        if cache is not None:
            if outcome.ok:
                cache.put(key, outcome.value)
            else:
                cache.put(key, error=outcome.error)
        done[0] += 1
        if progress is not None:
            progress(done[0], len(missing))

    if missing:
        try:
            await send(missing, record)
        finally:
            if cache is not None:
                await asyncio.to_thread(cache.flush)
    return answers, failures


def _assemble(keys: Sequence[str | None], skip_reasons: Sequence[str | None], answers: dict[str, Any],
              failures: dict[str, Outcome], on_error: OnError, usage: Usage) -> RowResults:
    """Per row, in order: the answer, or the failure (raised with ``on_error="raise"``), or the skip reason."""
    values: list[Any] = []
    errors: list[str | None] = []
    for row, (key, reason) in enumerate(zip(keys, skip_reasons, strict=True)):
        if key is None:
            values.append(None)
            errors.append(reason)
        elif key in answers:
            values.append(answers[key])
            errors.append(None)
        else:
            failed = failures[key]
            usage.errors += 1
            if on_error == "raise":
                raise RowFailedError(row, failed.attempts, failed.error or "failed", last_output=failed.last_output)
            values.append(None)
            errors.append(failed.error)
    return RowResults(values, errors)


async def send_jobs(
    jobs: list[Job],
    connect: Callable[[], AbstractAsyncContextManager[Connection]],
    options: RunOptions,
    usage: Usage,
    record: Record,
    split: Callable[[Job, Outcome], list[tuple[str, Outcome]]] | None = None,
) -> None:
    """Send jobs through the engine; ``split`` maps a batch job's outcome onto its keys (default: the job's key)."""

    def on_outcome(job: Job, outcome: Outcome) -> None:
        for key, part in (split(job, outcome) if split is not None else [(job.key, outcome)]):
            record(key, part)

    async with connect() as connection:
        await run_jobs(jobs, connection, options, usage, on_outcome)


def append_columns(table: pa.Table, output_column: str, values: pa.Array, errors: Sequence[str | None]) -> pa.Table:
    """Add (or replace) ``output_column`` and ``<output_column>_error``."""
    return set_columns(table, {output_column: values, f"{output_column}_error": pa.array(errors, pa.string())})
