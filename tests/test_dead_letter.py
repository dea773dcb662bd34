"""Dead letters: the rows that used up their attempts, with input, error, attempts and model, in the call's
result and, in Dagster, in a ``<name>_dead_letter`` asset partitioned like the enrichment; materializing the
enrichment again re-drives exactly those rows."""


from pathlib import Path

import dagster as dg
import pyarrow as pa
from dagster import AssetExecutionContext

from ai_assets import OpenAICompatibleProvider, RetryPolicy, RunOptions, prompt
from ai_assets.dagster import OpenAICompatibleResource, ParquetIOManager, ResultCacheResource, prompt_asset
from ai_assets.runtime.dead_letter import ATTEMPTS, ERROR, MODEL
from ai_assets.runtime.dead_letter import COLUMNS as RESERVED
from ai_assets.testing import FakeOpenAIServer, Fault

OPTIONS = RunOptions(on_error="null", retry=RetryPolicy(max_attempts=3, base_wait=0.01, max_wait=0.05))


def rows(partition: str = "a", n: int = 30) -> pa.Table:
    texts = [f"{partition} review {i}" + (" [bad]" if i % 4 == 1 else " [refuse]" if i == 2 else "")
             for i in range(n)]
    return pa.table({"id": list(range(n)), "text": texts, "extra": [i * 10 for i in range(n)]})


def test_a_call_gives_its_dead_letters_with_input_error_attempts_and_model(server: FakeOpenAIServer) -> None:
    server.set_faults(Fault("503", match="[bad]", attempts=None), Fault("400", match="[refuse]"))
    llm = OpenAICompatibleProvider("fake-model", base_url=server.base_url, api_key="k")
    table = rows().append_column("empty", pa.array([None] * 30, pa.string()))
    for source in (table, pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=7))):
        out = prompt(source, "Judge: {text}", provider=llm, options=replace_window(OPTIONS))
        result = out.table if hasattr(out, "table") else out.read_all()
        letters = out.failed.table()
        bad = [i for i in range(30) if i % 4 == 1]
        assert sorted(letters.column("id").to_pylist()) == sorted([*bad, 2])
        assert letters.column_names == ["id", "text", "extra", "empty", *RESERVED]
        by_id = {r["id"]: r for r in letters.to_pylist()}
        assert by_id[1][ATTEMPTS] == 3 and "503" in by_id[1][ERROR] and by_id[1]["extra"] == 10
        assert by_id[2][ATTEMPTS] == 1 and "400" in by_id[2][ERROR]  # permanent: failed at once
        assert {r[MODEL] for r in by_id.values()} == {"fake-model"}
        assert result.column("response_error").null_count == 30 - len(bad) - 1  # the output says the same
        server.reset()


PARTITIONS = dg.StaticPartitionsDefinition(["a", "b"])


@dg.asset(partitions_def=PARTITIONS)
def reviews(context: AssetExecutionContext) -> pa.Table:
    return rows(context.partition_key)


def replace_window(options: RunOptions) -> RunOptions:
    import dataclasses

    return dataclasses.replace(options, window_rows=7)


def test_the_dead_letter_asset_gets_exactly_the_failed_rows_and_a_rematerialization_re_drives_only_them(
        server: FakeOpenAIServer, tmp_path: Path) -> None:
    verdicts = prompt_asset("verdicts", reviews, template="Judge: {text}", options=OPTIONS, dead_letter=True,
                            max_error_rate=1.0, partitions_def=PARTITIONS)
    out = ParquetIOManager(root=str(tmp_path / "out"))
    resources = {"llm": OpenAICompatibleResource(model="fake-model", base_url=server.base_url, api_key="k"),
                 "io_manager": out, "ai_cache": ResultCacheResource(path=str(tmp_path / "journal.sqlite"))}
    bad = [i for i in range(30) if i % 4 == 1]
    server.set_faults(Fault("500", match="[bad]", attempts=None))  # row 2's [refuse] is answered here
    for partition in ("a", "b"):
        assert dg.materialize([reviews, verdicts], partition_key=partition, resources=resources).success
    letters = out.store(dg.AssetKey("verdicts_dead_letter"), {})
    for partition in ("a", "b"):
        table = letters.read([partition])
        assert table.column("id").to_pylist() == bad, partition
        assert set(table.column(ATTEMPTS).to_pylist()) == {3} and set(table.column(MODEL).to_pylist()) == {
            "fake-model"}
        assert all(t.startswith(f"{partition} review") for t in table.column("text").to_pylist())

    server.set_faults()
    server.reset()  # the provider is well again: re-drive partition a
    result = dg.materialize([reviews, verdicts], partition_key="a", resources=resources, selection=[verdicts])
    assert result.success
    stats = server.stats()
    assert stats.chat_requests == len(bad)  # only the dead letters were sent
    assert len(stats.by_key) == len(bad) and all("[bad]" in key for key in stats.by_key)
    assert letters.read(["a"]).num_rows == 0 and letters.read(["b"]).num_rows == len(bad)
    answers = out.store(dg.AssetKey("verdicts"), {}).read(["a"])
    assert answers.column("verdicts_error").null_count == 30


def catalogue(n: int = 12) -> pa.Table:
    """A product catalogue: its own columns are called model, error and attempts (a phone's model number, a
    measurement error, a count of tries), as real catalogues and lab tables do."""
    return pa.table({"sku": list(range(n)), "model": [f"XJ-{i}" for i in range(n)],
                     "error": [0.5 * i for i in range(n)], "attempts": [f"try {i}" for i in range(n)],
                     "text": [f"item {i}" + (" [bad]" if i % 3 == 0 else "") for i in range(n)]})


@dg.asset
def products() -> pa.Table:
    return catalogue()


def test_dead_letters_keep_input_columns_named_model_error_and_attempts(
        server: FakeOpenAIServer, tmp_path: Path) -> None:
    """The dead letter of a failed row carries the row's input as it was: a catalogue's ``model`` column stays
    the product's model, not the LLM's name; the bookkeeping goes to the reserved ``_dead_letter_*`` columns."""
    server.set_faults(Fault("500", match="[bad]", attempts=None))
    llm = OpenAICompatibleProvider("fake-model", base_url=server.base_url, api_key="k")
    out = prompt(catalogue(), "Describe: {text}", provider=llm, options=OPTIONS)
    letters = out.failed.table()
    bad = [i for i in range(12) if i % 3 == 0]
    assert letters.column_names == ["sku", "model", "error", "attempts", "text", *RESERVED]
    assert letters.column("model").to_pylist() == [f"XJ-{i}" for i in bad]
    assert letters.column("error").to_pylist() == [0.5 * i for i in bad]
    assert letters.column("attempts").to_pylist() == [f"try {i}" for i in bad]
    assert set(letters.column("_dead_letter_model").to_pylist()) == {"fake-model"}
    assert set(letters.column("_dead_letter_attempts").to_pylist()) == {3}
    assert all("500" in e for e in letters.column("_dead_letter_error").to_pylist())

    verdicts = prompt_asset("descriptions", products, template="Describe: {text}", options=OPTIONS,
                            dead_letter=True, max_error_rate=1.0)
    store = ParquetIOManager(root=str(tmp_path / "out"))
    resources = {"llm": OpenAICompatibleResource(model="fake-model", base_url=server.base_url, api_key="k"),
                 "io_manager": store, "ai_cache": ResultCacheResource(path=str(tmp_path / "journal.sqlite"))}
    assert dg.materialize([products, verdicts], resources=resources).success
    stored = store.store(dg.AssetKey("descriptions_dead_letter"), {}).read(None)
    assert stored.column("model").to_pylist() == [f"XJ-{i}" for i in bad]
    assert stored.column("error").to_pylist() == [0.5 * i for i in bad]
    assert set(stored.column("_dead_letter_model").to_pylist()) == {"fake-model"}
    assert RESERVED == ("_dead_letter_error", "_dead_letter_attempts", "_dead_letter_model")
