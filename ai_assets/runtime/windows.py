"""Input batches cut and joined into windows of rows, and fed to the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Iterator

import pyarrow as pa


def windows(batches: Iterable[pa.RecordBatch], rows: int, nbytes: int) -> Iterator[pa.RecordBatch]:
    """Input batches cut and joined into windows of at most ``rows`` rows and about ``nbytes`` bytes."""
    parts: list[pa.RecordBatch] = []
    have_rows = 0
    have_bytes = 0
    for batch in batches:
        offset = 0
        row_bytes = max(batch.nbytes // max(batch.num_rows, 1), 1)
        while offset < batch.num_rows:
            room = min(rows - have_rows, max((nbytes - have_bytes) // row_bytes, 1))
            part = batch.slice(offset, min(room, batch.num_rows - offset))
            parts.append(part)
            offset += part.num_rows
            have_rows += part.num_rows
            have_bytes += part.num_rows * row_bytes
            if have_rows >= rows or have_bytes >= nbytes:
                yield _join(parts)
                parts, have_rows, have_bytes = [], 0, 0
    if parts:
        yield _join(parts)


def _join(parts: list[pa.RecordBatch]) -> pa.RecordBatch:
    return parts[0] if len(parts) == 1 else pa.concat_batches(parts)


async def aiter_batches(batches: Iterable[pa.RecordBatch], blocking: bool) -> AsyncIterator[pa.RecordBatch]:
    """Input batches for the event loop; reading a file-backed reader happens on a worker thread."""
    iterator = iter(batches)
    while True:
        batch = await asyncio.to_thread(next, iterator, None) if blocking else next(iterator, None)
        if batch is None:
            return
        yield batch
