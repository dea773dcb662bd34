"""Streams: the streamed and the table paths give identical tables; duplicates in different windows are sent once;
a partition is ingested from an existing Delta or LanceDB table; a downstream asset that asks for a reader gets the
same rows as one that asks for a table."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest

from ai_assets import (
    DeltaSource,
    LanceSource,
    OpenAICompatibleProvider,
    ResultCache,
    RunOptions,
    embed_text,
    prompt,
)
from ai_assets.dagster import (
    DeltaIOManager,
    OpenAICompatibleResource,
    ParquetIOManager,
    ResultCacheResource,
    ingest_asset,
    prompt_asset,
)
from ai_assets.storage.delta import DeltaStore
from ai_assets.storage.lance import LanceStore
from ai_assets.testing import FakeOpenAIServer, Fault
from tests.kinds import STORE_KINDS, TABLE_STORE_KINDS, local_io_manager

pytestmark = pytest.mark.slow


def reviews(n: int) -> pa.Table:
    # Every 10th text repeats an earlier one (in another window), every 13th is null.
    texts = [None if i % 13 == 5 else f"review {i % 10 if i % 10 == 3 else i}" for i in range(n)]
    return pa.table({"id": list(range(n)), "text": texts})


def batches(table: pa.Table, rows: int) -> pa.RecordBatchReader:
    return pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=rows))


def test_streamed_and_table_prompts_give_the_same_table(server: FakeOpenAIServer, llm: OpenAICompatibleProvider,
                                                        tmp_path: Path) -> None:
    table = reviews(300)
    options = RunOptions(concurrency=8, window_rows=16)
    whole = prompt(table, "Say {text}", provider=llm, options=options, cache=ResultCache(tmp_path / "a.sqlite"))
    sent_for_table = server.stats().chat_requests
    server.reset()
    # A stream keeps one window alive: its journal is what remembers answers across windows.
    stream = prompt(batches(table, 7), "Say {text}", provider=llm, options=options,
                    cache=ResultCache(tmp_path / "b.sqlite"))
    streamed = pa.Table.from_batches(list(stream))
    assert streamed.equals(whole.table)
    distinct = len({t for t in table.column("text").to_pylist() if t is not None})
    # Identical rows in different windows are sent once, on both paths.
    assert server.stats().chat_requests == sent_for_table == distinct
    # Across windows, a repeat is read back from the journal (a cache hit) rather than joined in flight.
    saved = stream.usage.deduplicated + stream.usage.cache_hits
    assert saved == whole.usage.deduplicated + whole.usage.cache_hits == 300 - 23 - distinct


def test_streamed_and_table_embeddings_give_the_same_table(server: FakeOpenAIServer,
                                                           llm: OpenAICompatibleProvider) -> None:
    table = reviews(200)
    options = RunOptions(window_rows=32, batch_size=16)
    whole = embed_text(table, "text", provider=llm, options=options)
    streamed = pa.Table.from_batches(list(embed_text(batches(table, 9), "text", provider=llm, options=options)))
    assert streamed.equals(whole.table)
    assert pa.types.is_fixed_size_list(streamed.schema.field("embedding").type)


def source_table() -> pa.Table:
    return pa.table({"day": ["d1", "d2", "d1", "d3", "d1"], "id": [1, 2, 3, 4, 5],
                     "text": ["a", "b", "c", "d", "e"], "other": [0.1, 0.2, 0.3, 0.4, 0.5]})


@pytest.mark.parametrize("kind", TABLE_STORE_KINDS)
def test_a_partition_is_ingested_from_an_existing_table(tmp_path: Path, kind: str) -> None:
    if kind == "delta":
        DeltaStore(str(tmp_path / "sales")).write(source_table(), None)
        source: DeltaSource | LanceSource = DeltaSource(str(tmp_path / "sales"), partition_column="day",
                                                        columns=["id", "text"])
    else:
        LanceStore(str(tmp_path / "db"), "sales").write(source_table(), None)
        source = LanceSource(str(tmp_path / "db"), "sales", partition_column="day", columns=["id", "text"])
    days = dg.StaticPartitionsDefinition(["d1", "d2", "d3", "d4"])
    raw = ingest_asset("raw", source=source, partitions_def=days)
    resources = {"io_manager": ParquetIOManager(root=str(tmp_path / "out"))}
    assert dg.materialize([raw], partition_key="d1", resources=resources).success
    stored = ParquetIOManager(root=str(tmp_path / "out")).store(dg.AssetKey("raw"), {}).read(["d1"])
    assert sorted(stored.column("id").to_pylist()) == [1, 3, 5]
    assert [n for n in stored.column_names if not n.startswith("_")] == ["id", "text"]
    # A partition with no rows in the source is an empty partition, not an error.
    assert dg.materialize([raw], partition_key="d4", resources=resources).success


@pytest.mark.parametrize("backend", STORE_KINDS)
def test_a_reader_downstream_gets_the_rows_a_table_downstream_gets(tmp_path: Path, backend: str) -> None:
    days = dg.StaticPartitionsDefinition(["d1"])
    data = pa.table({"id": list(range(5000)), "text": [f"row {i}" for i in range(5000)]})

    @dg.asset(partitions_def=days)
    def rows() -> pa.Table:
        return data

    @dg.asset(partitions_def=days)
    def as_table(rows: pa.Table) -> pa.Table:
        return rows

    @dg.asset(partitions_def=days)
    def as_reader(rows: pa.RecordBatchReader) -> pa.RecordBatchReader:
        return rows

    manager = local_io_manager(backend, tmp_path)
    assert dg.materialize([rows, as_table, as_reader], partition_key="d1", resources={"io_manager": manager}).success
    from_table = manager.store(dg.AssetKey("as_table"), {}).read(["d1"]).sort_by("id")
    from_reader = manager.store(dg.AssetKey("as_reader"), {}).read(["d1"]).sort_by("id")
    assert from_reader.select(["id", "text"]).equals(from_table.select(["id", "text"]))
    assert from_table.num_rows == 5000


class _Watching(dg.IOManager):
    """Reads the output batch by batch and notes how many prompts the server had answered when the first batch
    reached it."""

    def __init__(self, server: FakeOpenAIServer) -> None:
        self.server = server
        self.answered_at_first_batch: int | None = None
        self.rows = 0

    def handle_output(self, context: dg.OutputContext, obj: pa.RecordBatchReader) -> None:
        for batch in obj:
            if self.answered_at_first_batch is None:
                self.answered_at_first_batch = self.server.stats().chat_requests
            self.rows += batch.num_rows

    def load_input(self, context: dg.InputContext) -> None:
        raise NotImplementedError


def test_the_store_write_begins_before_the_last_row_is_sent(tmp_path: Path, server: FakeOpenAIServer) -> None:
    """Write once: the IO manager reads the output while later windows are still being computed (no spool file in
    between), and usage metadata still reaches the materialization."""
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(f'{{"id": {i}, "text": "row {i}"}}\n' for i in range(200)))
    raw = ingest_asset("raw", path=str(path))
    answers = prompt_asset("answers", raw, template="{text}", io_manager_key="watching",
                           options=RunOptions(concurrency=4, window_rows=20))
    watching = _Watching(server)
    result = dg.materialize([raw, answers], resources={
        "llm": OpenAICompatibleResource(model="m", base_url=server.base_url, api_key="k"),
        "ai_cache": ResultCacheResource(path=str(tmp_path / "journal.sqlite")),
        "io_manager": ParquetIOManager(root=str(tmp_path / "out")),
        "watching": dg.IOManagerDefinition.hardcoded_io_manager(watching)})
    assert result.success
    assert server.stats().chat_requests == 200
    assert watching.rows == 200
    assert watching.answered_at_first_batch is not None
    assert watching.answered_at_first_batch < 200  # was 200: every row sent and spooled before the write began
    metadata = result.asset_materializations_for_node("answers")[0].metadata
    assert metadata["ai/rows_sent"].value == 200


def test_an_error_in_a_later_window_commits_nothing(tmp_path: Path, server: FakeOpenAIServer) -> None:
    server.set_faults(Fault("400", match="row 150", attempts=None))
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(f'{{"id": {i}, "text": "row {i}"}}\n' for i in range(200)))
    raw = ingest_asset("raw", path=str(path))
    answers = prompt_asset("answers", raw, template="{text}", io_manager_key="delta",
                           options=RunOptions(window_rows=20, on_error="raise"))
    resources = {"llm": OpenAICompatibleResource(model="m", base_url=server.base_url, api_key="k"),
                 "ai_cache": ResultCacheResource(path=str(tmp_path / "journal.sqlite")),
                 "io_manager": ParquetIOManager(root=str(tmp_path / "out")),
                 "delta": DeltaIOManager(root=str(tmp_path / "delta"))}
    result = dg.materialize([raw, answers], resources=resources, raise_on_error=False)
    assert not result.success
    failure = result.failure_data_for_node("answers")
    assert failure is not None and "row 150" in str(failure.error)
    assert not (tmp_path / "delta" / "answers" / "_delta_log").exists()  # nothing committed
    server.set_faults()
    assert dg.materialize([raw, answers], resources=resources).success  # the re-run pays only for what failed
    assert DeltaStore(str(tmp_path / "delta" / "answers")).read().num_rows == 200
