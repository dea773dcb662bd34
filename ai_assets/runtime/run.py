"""Running a pipeline: a table in and a table out, or a stream in and a stream out, in the mode its options ask
for (live, batch or estimate). The mode dispatch sits above the three runners, so none of them imports another."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TypedDict

import pyarrow as pa

from ai_assets.runtime.batch import run_batch
from ai_assets.runtime.cache import Cache
from ai_assets.runtime.engine import RunOptions
from ai_assets.runtime.estimate import run_estimate
from ai_assets.runtime.pipeline import Pipeline
from ai_assets.runtime.results import Enriched, EnrichedStream, Source
from ai_assets.runtime.sync import iterate_sync, run_sync
from ai_assets.runtime.task import Progress, Task
from ai_assets.runtime.usage import Prices
from ai_assets.runtime.windows import aiter_batches, windows


class RunArgs(TypedDict, total=False):
    """How a call runs and what it remembers: the keywords every AI function takes besides its own settings
    (``prompt(..., **run: Unpack[RunArgs])``), written once here."""

    options: RunOptions | None
    """Concurrency, limits, retries, spending caps and the mode (live, batch, estimate); default ``RunOptions()``."""
    cache: Cache | None
    """The journal: answers in it are never paid for again, failures in it are retried alone."""
    progress: Progress | None
    """Called with the rows done and the total as the call goes."""
    model: str | None
    """The model for this call instead of the provider's own (it enters the journal keys)."""
    prices: Prices | None
    """Prices for the cost figures and ``max_cost``, instead of the built-in table."""
    run_id: str | None
    """Failures recorded by this run are final within it (a step retry does not resend them)."""
    group_column: str | None
    """Count usage per value of this column too (``_partition`` in Dagster)."""


def run_task(data: Source, task: Task, options: RunOptions, run: RunArgs, *, prices: Prices | None = None,
             model: str | None = None) -> Enriched | EnrichedStream:
    """``task`` over ``data`` with the journal, progress and grouping of ``run`` (see ``run_pipeline``)."""
    return run_pipeline(data, Pipeline(task, options, run.get("cache"), run_id=run.get("run_id"),
                                       progress=run.get("progress"), group_column=run.get("group_column"),
                                       prices=prices, model=model))


async def run_by_mode(pipeline: Pipeline, batches: AsyncIterator[pa.RecordBatch],
                      schema: pa.Schema | None = None) -> AsyncIterator[pa.RecordBatch]:
    """The output batches, in input order; with the input's ``schema``, an empty input gives one empty batch
    (so a stream always has a schema)."""
    mode = pipeline.options.mode
    runner = run_batch if mode == "batch" else run_estimate if mode == "estimate" else Pipeline.run_live
    async for out in runner(pipeline, batches, schema):
        yield out


def run_pipeline(data: Source, pipeline: Pipeline) -> Enriched | EnrichedStream:
    """A table in, a table out; a reader (or any iterable of record batches) in, a stream out."""
    options = pipeline.options
    if isinstance(data, pa.Table):
        return run_sync(lambda: arun_table(data, pipeline))

    schema = data.schema if isinstance(data, pa.RecordBatchReader) else None

    def stream() -> AsyncIterator[pa.RecordBatch]:
        inputs = windows(data, options.window_rows, options.window_bytes)
        return run_by_mode(pipeline, aiter_batches(inputs, blocking=True), schema)

    return EnrichedStream(iterate_sync(stream), pipeline.usage, pipeline.failed)


async def arun_table(table: pa.Table, pipeline: Pipeline) -> Enriched:
    """The table path, for code already inside an event loop."""
    options = pipeline.options
    pipeline.remember = True
    pipeline.total_rows = table.num_rows
    inputs = windows(table.to_batches(), options.window_rows, options.window_bytes)
    out = [batch async for batch in run_by_mode(pipeline, aiter_batches(inputs, blocking=False), table.schema)]
    return Enriched(pa.Table.from_batches(out), pipeline.usage, pipeline.failed)
