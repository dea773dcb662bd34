"""Dead letters: the rows of a call that used up their attempts, with their input, error, attempts and model.

A dead letter is the failed row's input, every column as it was (a catalogue's own ``model`` or ``error`` column
stays the catalogue's), then three bookkeeping columns under reserved names: ``_dead_letter_error`` (why it
failed), ``_dead_letter_attempts`` (requests made) and ``_dead_letter_model`` (the model that failed it). An input
that already has them (a dead-letter table sent again) has them replaced by this call's.

A call collects them as it goes (``Enriched.failed`` / ``EnrichedStream.failed``, complete once the output is
read), spooled to a local Arrow file so that many failures do not grow memory. In Dagster, an enrichment with
``dead_letter=True`` writes them to a ``<name>_dead_letter`` asset partitioned like it; materializing the
enrichment again re-drives them: every answered row comes from the journal, only the dead letters are sent.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc

ERROR, ATTEMPTS, MODEL = "_dead_letter_error", "_dead_letter_attempts", "_dead_letter_model"
COLUMNS = (ERROR, ATTEMPTS, MODEL)
"""The reserved bookkeeping columns (the ``_`` prefix, as the stores' ``_partition``, keeps them off input names)."""


def dead_letter_schema(inputs: pa.Schema) -> pa.Schema:
    """The input's columns (all of them, but the reserved bookkeeping names), then the bookkeeping columns."""
    kept = [f for f in inputs if f.name not in COLUMNS]
    return pa.schema([*kept, pa.field(ERROR, pa.string()), pa.field(ATTEMPTS, pa.int32()),
                      pa.field(MODEL, pa.string())])


class FailedRows:
    """An append-only spool of dead-letter batches (one schema: the first batch's)."""

    def __init__(self) -> None:
        self.rows = 0
        self.schema: pa.Schema | None = None
        self._folder: tempfile.TemporaryDirectory[str] | None = None
        self._sink: pa.OSFile | None = None
        self._writer: pa.ipc.RecordBatchStreamWriter | None = None

    def add(self, inputs: pa.RecordBatch, errors: list[str], attempts: list[int | None],
            models: list[str | None]) -> None:
        """Rows of one window that failed: ``inputs`` (their input columns) and why."""
        if not inputs.num_rows:
            return
        schema = self.schema or dead_letter_schema(inputs.schema)
        arrays = [inputs.column(f.name) if f.name in inputs.schema.names else pa.nulls(inputs.num_rows, f.type)
                  for f in schema if f.name not in COLUMNS]
        batch = pa.RecordBatch.from_arrays(
            [*arrays, pa.array(errors, pa.string()), pa.array(attempts, pa.int32()), pa.array(models, pa.string())],
            schema=schema)
        if self._writer is None:
            self.schema = schema
            self._folder = tempfile.TemporaryDirectory(prefix="ai_assets-dead-letters-")
            self._sink = pa.OSFile(str(Path(self._folder.name) / "rows.arrows"), "wb")
            self._writer = pa.ipc.new_stream(self._sink, schema)
        self._writer.write_batch(batch)
        self.rows += batch.num_rows

    def extend(self, other: FailedRows) -> None:
        for batch in other.batches():
            self.add(batch.select([n for n in batch.schema.names if n not in COLUMNS]),
                     batch.column(ERROR).to_pylist(), batch.column(ATTEMPTS).to_pylist(),
                     batch.column(MODEL).to_pylist())

    def batches(self) -> Iterator[pa.RecordBatch]:
        """Every dead letter so far, in the order the rows failed (input order within a window)."""
        if self._writer is None or self._folder is None:
            return
        assert self._sink is not None
        self._sink.flush()
        with pa.OSFile(str(Path(self._folder.name) / "rows.arrows"), "rb") as source:  # copies: outlives the file
            yield from pa.ipc.open_stream(source)

    def table(self, inputs: pa.Schema | None = None) -> pa.Table:
        """The dead letters as a table (empty, in ``inputs``' dead-letter schema, when there are none)."""
        batches = list(self.batches())
        if batches:
            return pa.Table.from_batches(batches)
        schema = self.schema or dead_letter_schema(inputs if inputs is not None else pa.schema([]))
        return schema.empty_table()
