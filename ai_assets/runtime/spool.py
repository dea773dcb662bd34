"""A spool: batches written to a temporary Arrow IPC file and read back once, so a stream can be computed in one
place (an asset, with its metadata and checks) and stored in another (an IO manager) without being held in memory.
The file is deleted when its reader is exhausted or closed, or when the process exits."""

from __future__ import annotations

import os
import tempfile
import weakref
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa


class Spool:
    def __init__(self, folder: str | Path | None = None) -> None:
        handle, name = tempfile.mkstemp(prefix="ai_assets-spool-", suffix=".arrows", dir=folder)
        os.close(handle)
        self.path = Path(name)
        self.rows = 0
        self._sink: pa.OSFile | None = None
        self._writer: pa.ipc.RecordBatchStreamWriter | None = None
        self._schema: pa.Schema | None = None
        self._cleanup = weakref.finalize(self, _remove, self.path)

    def write(self, batch: pa.RecordBatch) -> None:
        if self._writer is None:
            self._schema = batch.schema
            self._sink = pa.OSFile(str(self.path), "wb")
            self._writer = pa.ipc.new_stream(self._sink, batch.schema)
        self._writer.write_batch(batch)
        self.rows += batch.num_rows

    def reader(self, schema: pa.Schema | None = None) -> pa.RecordBatchReader:
        """Everything written, batch by batch; ``schema`` is needed only if nothing was written."""
        if self._writer is not None and self._sink is not None:
            self._writer.close()
            self._sink.close()
        out_schema = self._schema or schema
        if out_schema is None:
            raise ValueError("an empty spool needs the schema of its (empty) stream")
        path, cleanup = self.path, self._cleanup
        written = self._writer is not None

        def batches() -> Iterator[pa.RecordBatch]:
            try:
                if written:
                    with pa.OSFile(str(path), "rb") as source, pa.ipc.open_stream(source) as stream:
                        yield from stream
            finally:
                cleanup()

        return pa.RecordBatchReader.from_batches(out_schema, batches())


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)
