"""``embed_text``: one vector per row as ``fixed_size_list<float32>[d]``, from a local model or an HTTP endpoint."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from ai_assets.functions._execution import (
    Enriched,
    Progress,
    Record,
    RowResults,
    append_columns,
    execute,
    run_sync,
    send_jobs,
)
from ai_assets.functions.templates import column_texts
from ai_assets.providers.protocols import RemoteTextEmbedder, TextEmbedder
from ai_assets.runtime.cache import Cache, cache_key
from ai_assets.runtime.engine import Job, Outcome, RunOptions
from ai_assets.runtime.errors import NotSupportedError
from ai_assets.runtime.usage import Usage

LOCAL_CHUNK = 4096  # texts per model call when caching, so a crash keeps every finished chunk


def embed_text(
    table: pa.Table,
    column: str,
    *,
    provider: TextEmbedder | RemoteTextEmbedder,
    output_column: str = "embedding",
    options: RunOptions | None = None,
    cache: Cache | None = None,
    progress: Progress | None = None,
) -> Enriched:
    """Embed ``column`` and add ``output_column`` (``fixed_size_list<float32>[d]``) and its error column.

    Identical texts are embedded once; null or empty texts are not embedded and get a null vector with a reason.
    """
    options = options or RunOptions()
    texts, reasons = column_texts(table, column)
    usage = Usage()
    results = run_sync(lambda: embed_texts(texts, reasons, provider, options, cache, usage, progress))
    return Enriched(append_columns(table, output_column, vectors_to_arrow(results.values), results.errors), usage)


async def embed_texts(
    texts: Sequence[str | None],
    reasons: Sequence[str | None],
    provider: TextEmbedder | RemoteTextEmbedder,
    options: RunOptions,
    cache: Cache | None,
    usage: Usage,
    progress: Progress | None = None,
) -> RowResults:
    """Vectors for texts (None rows are skipped with their reason): the core of ``embed_text`` and ``classify``."""
    if isinstance(provider, TextEmbedder):
        identity = provider.identity()
        keys = [None if t is None else (cache_key(identity, t) if cache is not None else t) for t in texts]
        text_of = {k: t for k, t in zip(keys, texts, strict=True) if k is not None and t is not None}

        async def send(missing: list[str], record: Record) -> None:
            # One encode call for everything (it sorts by length and batches itself); chunks only when caching,
            # so that a crash keeps every finished chunk.
            chunk = LOCAL_CHUNK if cache is not None else max(len(missing), 1)
            for start in range(0, len(missing), chunk):
                part = missing[start:start + chunk]
                matrix = provider.embed_text([text_of[k] for k in part])
                usage.requests += 1
                for key, vector in zip(part, matrix, strict=True):
                    record(key, Outcome(vector if cache is None else vector.tolist(), attempts=1))

    elif isinstance(provider, RemoteTextEmbedder):
        identity = provider.embedding_identity()
        keys = [None if t is None else cache_key(identity, t) for t in texts]
        text_of = {k: t for k, t in zip(keys, texts, strict=True) if k is not None and t is not None}
        batches: dict[str, list[str]] = {}

        def split(job: Job, outcome: Outcome) -> list[tuple[str, Outcome]]:
            part = batches[job.key]
            if not outcome.ok:
                return [(k, outcome) for k in part]
            return [(k, Outcome(v, attempts=outcome.attempts)) for k, v in zip(part, outcome.value, strict=True)]

        async def send(missing: list[str], record: Record) -> None:
            jobs = []
            for start in range(0, len(missing), options.batch_size):
                part = missing[start:start + options.batch_size]
                request = provider.embedding_request([text_of[k] for k in part])
                job_key = cache_key(identity, request)
                batches[job_key] = part
                jobs.append(Job(job_key, request, sum(len(text_of[k]) for k in part) // 4 + len(part)))
            await send_jobs(jobs, lambda: provider.connect_embeddings(options.concurrency, options.timeout_s),
                            options, usage, record, split)

    else:
        raise NotSupportedError(provider, "embed_text")
    return await execute(keys, reasons, send, options.on_error, cache, usage, progress,
                         retry_failed=options.retry_failed_rows)


def vectors_to_arrow(values: Sequence[Any]) -> pa.FixedSizeListArray:
    """Rows of equal-length vectors (None for missing) as ``fixed_size_list<float32>[d]``."""
    present = next((v for v in values if v is not None), None)
    dim = len(present) if present is not None else 0
    flat = np.zeros((len(values), dim), dtype=np.float32)
    for i, v in enumerate(values):
        if v is not None:
            flat[i] = v
    mask = pa.array([v is None for v in values], pa.bool_())
    return pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), dim, mask=mask)
