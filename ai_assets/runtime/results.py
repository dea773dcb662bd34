"""What an AI function takes and gives back: a table or a stream of record batches, with its usage."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypeAlias

import pyarrow as pa

from ai_assets.runtime.dead_letter import FailedRows
from ai_assets.runtime.usage import Usage

Source: TypeAlias = "pa.Table | pa.RecordBatchReader | Iterable[pa.RecordBatch]"


@dataclass
class Enriched:
    """What an AI function returns for a table: the table with its new columns, and what it cost."""

    table: pa.Table
    usage: Usage = field(default_factory=Usage)
    failed: FailedRows = field(default_factory=FailedRows)
    """The rows that used up their attempts, with input, error, attempts and model (``on_error="null"``)."""


@dataclass
class EnrichedStream:
    """What an AI function returns for a stream: output batches in input order (read them once), and the usage,
    complete when the stream is exhausted."""

    batches: Iterator[pa.RecordBatch]
    usage: Usage
    failed: FailedRows = field(default_factory=FailedRows)
    """The rows that used up their attempts (complete when the stream is exhausted)."""

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        return self.batches

    def reader(self) -> pa.RecordBatchReader:
        """The stream as a ``pyarrow.RecordBatchReader`` (its schema comes from the first output batch)."""
        first = next(self.batches, None)
        if first is None:
            raise ValueError("the stream is empty: no schema to give a reader")

        def rest() -> Iterator[pa.RecordBatch]:
            yield first
            yield from self.batches

        return pa.RecordBatchReader.from_batches(first.schema, rest())

    def read_all(self) -> pa.Table:
        return pa.Table.from_batches(list(self.batches))
