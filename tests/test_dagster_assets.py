"""Real Dagster materializations of every factory into each IO manager, read back from the stored tables."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import dagster as dg
import pyarrow as pa
import pytest
from pydantic import BaseModel

from ai_assets import PromptParams, RunOptions
from ai_assets.dagster import (
    DeltaIOManager,
    LanceDBIOManager,
    OpenAICompatibleResource,
    ParquetIOManager,
    ResultCacheResource,
    SentenceTransformersResource,
    classify_asset,
    embed_asset,
    ingest_asset,
    preprocess_asset,
    prompt_asset,
)
from ai_assets.dagster.io_managers import ArrowIOManager
from ai_assets.functions.preprocess import Extract
from ai_assets.storage.base import PARTITION_COLUMN
from ai_assets.testing import FakeOpenAIServer, Fault
from tests.kinds import STORE_KINDS

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HOSTILE = ["../../x", "a' OR '1'='1", 'x"', "a/b"]


class Insight(BaseModel):
    sentiment: Literal["positive", "negative"]
    aspects: list[str]


def write_source(folder: Path, n: int = 6) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "reviews.jsonl"
    rows = [{"id": i, "product": f"p{i % 2}", "text": None if i == 3 else f"Review {i}: battery lasts {i} days"}
            for i in range(n)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def io_manager(backend: str, root: Path) -> ArrowIOManager:
    if backend == "parquet":
        return ParquetIOManager(root=str(root / "parquet"))
    if backend == "delta":
        return DeltaIOManager(root=str(root / "delta"))
    if backend == "iceberg":
        from ai_assets.dagster import IcebergIOManager

        return IcebergIOManager(root=f"file://{root}/iceberg", catalog_uri=f"sqlite:///{root}/iceberg.db")
    return LanceDBIOManager(root=str(root / "lancedb"), index_after_rows=None)


def pipeline(source: Path, partitions_def: dg.PartitionsDefinition[Any]) -> list[dg.AssetsDefinition]:
    common: dict[str, Any] = {"partitions_def": partitions_def, "backfill_policy": dg.BackfillPolicy.single_run()}
    raw = ingest_asset("raw", path=str(source), **common)
    clean = preprocess_asset("clean", raw, drop_missing=["text"],
                             extract={"days": Extract("text", r"lasts (\d+) days")},
                             derive={"prompt_text": "{product}: {text}"}, **common)
    insights = prompt_asset("insights", clean, template="{prompt_text}", return_format=Insight,
                            params=PromptParams(temperature=0), provider_key="llm", model="fake", **common)
    vectors = embed_asset("vectors", insights, column="text", provider_key="embedder", **common)
    topics = classify_asset("topics", vectors, column="text", labels={"battery": "battery life", "screen": "display"},
                            provider_key="embedder", **common)
    return [raw, clean, insights, vectors, topics]


def resources(backend: str, root: Path, server: FakeOpenAIServer) -> dict[str, Any]:
    return {
        "io_manager": io_manager(backend, root),
        "llm": OpenAICompatibleResource(model="fake", base_url=server.base_url, api_key="sk-test"),
        "embedder": SentenceTransformersResource(device="cpu"),
        "ai_cache": ResultCacheResource(path=str(root / "cache.sqlite")),
    }


def read(backend: str, root: Path, asset: str, partitions: list[str] | None = None) -> pa.Table:
    return io_manager(backend, root).store(dg.AssetKey(asset), {}).read(partitions)


@pytest.mark.parametrize("backend", STORE_KINDS)
def test_every_factory_materializes_and_reads_back(tmp_path: Path, server: FakeOpenAIServer, backend: str) -> None:
    source = write_source(tmp_path / "src")
    partitions = dg.StaticPartitionsDefinition(["day1", *HOSTILE])
    assets = pipeline(source, partitions)
    res = resources(backend, tmp_path / "out", server)
    for key in ["day1", *HOSTILE]:
        result = dg.materialize(assets, partition_key=key, resources=res)
        assert result.success
        checks = result.get_asset_check_evaluations()
        assert checks and all(c.passed for c in checks), [(c.check_name, c.metadata) for c in checks]
    assert server.stats().chat_requests == 5  # five distinct non-null texts, answered once across partitions

    for key in ["day1", *HOSTILE]:
        topics = read(backend, tmp_path / "out", "topics", [key])
        assert topics.num_rows == 5 and set(topics.column(PARTITION_COLUMN).to_pylist()) == {key}
        assert topics.schema.field("insights").type.field("aspects").type == pa.list_(pa.string())
        vectors = topics.schema.field("vectors").type
        assert pa.types.is_fixed_size_list(vectors) and (vectors.list_size, vectors.value_type) == (384, pa.float32())
        assert topics.column("days").to_pylist() == ["0", "1", "2", "4", "5"]
        assert {v["label"] for v in topics.column("topics").to_pylist()} <= {"battery", "screen"}
    everything = read(backend, tmp_path / "out", "topics")
    assert everything.num_rows == 25

    # Hostile keys stayed inside the root: nothing was written anywhere else under tmp_path.
    outside = [p for p in tmp_path.rglob("*") if p.is_file() and not p.is_relative_to(tmp_path / "out")
               and not p.is_relative_to(tmp_path / "src")]
    assert outside == []
    assert not (tmp_path / "x").exists() and not (tmp_path.parent / "x").exists()

    metadata = result.asset_materializations_for_node("insights")[0].metadata
    assert metadata["ai/rows_in"].value == 5 and metadata["ai/rows_from_cache"].value == 5
    assert "dagster/column_schema" in metadata and "preview" in metadata


def _fingerprint(backend: str, root: Path, key: str) -> Any:
    """What must not change in partition ``key`` when another partition is rewritten."""
    if backend == "parquet":
        store = ParquetIOManager(root=str(root / "parquet")).store(dg.AssetKey("clean"), {})
        return hashlib.sha256(Path(store.path_for(key)).read_bytes()).hexdigest()
    if backend == "delta":
        from deltalake import DeltaTable

        table = DeltaTable(str(root / "delta" / "clean"))
        files = {}
        for uri in table.file_uris():
            data = Path(uri.removeprefix("file://")).read_bytes()
            if key.encode() in data:
                files[uri] = hashlib.sha256(data).hexdigest()
        return files
    return read(backend, root, "clean", [key]).to_pylist()


@pytest.mark.parametrize("backend", STORE_KINDS)
def test_replacing_one_partition_leaves_the_others_untouched(
    tmp_path: Path, server: FakeOpenAIServer, backend: str
) -> None:
    source = write_source(tmp_path / "src")
    partitions = dg.StaticPartitionsDefinition(["keep", "redo"])
    assets = pipeline(source, partitions)[:2]
    res = resources(backend, tmp_path / "out", server)
    for key in ("keep", "redo"):
        assert dg.materialize(assets, partition_key=key, resources=res).success
    before = _fingerprint(backend, tmp_path / "out", "keep")
    assert before
    write_source(tmp_path / "src", n=9)  # the source grows; only "redo" is re-materialized
    assert dg.materialize(assets, partition_key="redo", resources=res).success
    assert _fingerprint(backend, tmp_path / "out", "keep") == before
    assert read(backend, tmp_path / "out", "clean", ["redo"]).num_rows == 8
    assert read(backend, tmp_path / "out", "clean", ["keep"]).num_rows == 5


@pytest.mark.parametrize("backend", STORE_KINDS)
def test_single_run_backfill_over_a_range_writes_every_partition(
    tmp_path: Path, server: FakeOpenAIServer, backend: str
) -> None:
    folder = tmp_path / "src"
    folder.mkdir()
    for day in ("2024-01-01", "2024-01-02", "2024-01-03"):
        (folder / f"{day}.jsonl").write_text(json.dumps({"id": 1, "product": "p", "text": f"text of {day}"}) + "\n")
    daily = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-04")
    common: dict[str, Any] = {"partitions_def": daily, "backfill_policy": dg.BackfillPolicy.single_run()}
    raw = ingest_asset("raw", path=str(folder / "{partition}.jsonl"), **common)
    insights = prompt_asset("insights", raw, template="{text}", provider_key="llm", **common)
    res = resources(backend, tmp_path / "out", server)
    result = dg.materialize([raw, insights], resources=res, tags={
        "dagster/asset_partition_range_start": "2024-01-01", "dagster/asset_partition_range_end": "2024-01-03"})
    assert result.success
    table = read(backend, tmp_path / "out", "insights")
    assert sorted(table.column(PARTITION_COLUMN).to_pylist()) == ["2024-01-01", "2024-01-02", "2024-01-03"]
    assert sorted(table.column("insights").to_pylist()) == [f"Answer to: text of 2024-01-0{d}" for d in (1, 2, 3)]
    assert server.stats().chat_requests == 3


def test_delta_schema_evolution_and_merge_upsert(tmp_path: Path) -> None:
    from ai_assets.storage.base import with_partition
    from ai_assets.storage.delta import DeltaStore

    store = DeltaStore(str(tmp_path / "t"))
    store.write(with_partition(pa.table({"id": [1, 2]}), "a"), ["a"])
    store.write(with_partition(pa.table({"id": [3], "extra": ["new column"]}), "b"), ["b"])
    assert store.read().schema.names == ["id", PARTITION_COLUMN, "extra"]
    merging = DeltaStore(str(tmp_path / "t"), merge_on=["id"])
    merging.write(with_partition(pa.table({"id": [2, 4], "extra": ["updated", "inserted"]}), "a"), ["a"])
    rows = sorted(merging.read(["a"]).to_pylist(), key=lambda r: r["id"])
    assert [(r["id"], r["extra"]) for r in rows] == [(1, None), (2, "updated"), (4, "inserted")]


def test_lancedb_builds_a_vector_index_past_the_threshold(tmp_path: Path) -> None:
    import numpy as np

    from ai_assets.runtime.vectors import vectors_to_arrow
    from ai_assets.storage.base import with_partition
    from ai_assets.storage.lance import LanceStore

    store = LanceStore(str(tmp_path), "vectors", vector_column="v", index_after_rows=300)
    vectors = np.random.default_rng(0).normal(size=(300, 16)).astype(np.float32)
    store.write(with_partition(pa.table({"v": vectors_to_arrow(list(vectors[:100]), 16)}), "a"), ["a"])
    assert store._open().list_indices() == []
    store.write(with_partition(pa.table({"v": vectors_to_arrow(list(vectors[100:]), 16)}), "b"), ["b"])
    assert [i.columns for i in store._open().list_indices()] == [["v"]]


def test_code_version_follows_what_changes_the_output(tmp_path: Path) -> None:
    source = write_source(tmp_path)

    def version(**kwargs: Any) -> str | None:
        upstream = ingest_asset("raw", path=str(source))
        settings: dict[str, Any] = {"template": "{text}", "return_format": Insight, "model": "m1", **kwargs}
        asset = prompt_asset("insights", upstream, **settings)
        return asset.code_versions_by_key[asset.key]

    base = version()
    assert version() == base
    assert version(template="Review: {text}") != base
    assert version(model="m2") != base
    assert version(return_format=None) != base
    assert version(params=PromptParams(temperature=0.5)) != base


def test_multi_partitions_fill_path_fields_per_dimension(tmp_path: Path, server: FakeOpenAIServer) -> None:
    for region in ("eu", "us"):
        (tmp_path / "src" / region).mkdir(parents=True)
        for day in ("2024-01-01", "2024-01-02"):
            (tmp_path / "src" / region / f"{day}.jsonl").write_text(
                json.dumps({"product": "p", "text": f"{region} on {day}"}) + "\n")
    multi = dg.MultiPartitionsDefinition({
        "date": dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-03"),
        "region": dg.StaticPartitionsDefinition(["eu", "us"])})
    raw = ingest_asset("raw", path=str(tmp_path / "src" / "{region}" / "{date}.jsonl"), partitions_def=multi)
    insights = prompt_asset("insights", raw, template="{text}", provider_key="llm", partitions_def=multi)
    key = dg.MultiPartitionKey({"date": "2024-01-02", "region": "us"})
    assert dg.materialize([raw, insights], partition_key=key,
                          resources=resources("delta", tmp_path / "out", server)).success
    table = read("delta", tmp_path / "out", "insights")
    assert table.column("insights").to_pylist() == ["Answer to: us on 2024-01-02"]
    assert table.column(PARTITION_COLUMN).to_pylist() == [str(key)]


@pytest.mark.parametrize("backend", STORE_KINDS)
def test_an_unpartitioned_downstream_asset_loads_every_partition(
    tmp_path: Path, server: FakeOpenAIServer, backend: str
) -> None:
    source = write_source(tmp_path / "src")
    partitions = dg.StaticPartitionsDefinition(["a", "b"])
    raw = ingest_asset("raw", path=str(source), partitions_def=partitions)

    @dg.asset(ins={"raw": dg.AssetIn("raw")})
    def report(raw: pa.Table) -> pa.Table:
        return raw.group_by(PARTITION_COLUMN).aggregate([("id", "count")])

    res = resources(backend, tmp_path / "out", server)
    for key in ("a", "b"):
        assert dg.materialize([raw], partition_key=key, resources=res).success
    assert dg.materialize([raw.to_source_asset(), report], resources=res).success
    counts = dict(zip(*read(backend, tmp_path / "out", "report").select([PARTITION_COLUMN, "id_count"])
                      .to_pydict().values(), strict=True))
    assert counts == {"a": 6, "b": 6}


def test_a_single_run_backfill_gives_each_partition_its_own_counts(tmp_path: Path, server: FakeOpenAIServer) -> None:
    """One run over three partitions of different sizes, failures and repeats: every partition's materialization
    carries its own row count, error count and deduplicated rows, not the range's totals."""
    folder = tmp_path / "src"
    folder.mkdir()
    days = {"2024-01-01": 2, "2024-01-02": 5, "2024-01-03": 9}
    for day, n in days.items():
        rows = [{"id": i, "text": f"{'bad' if i == 0 and day.endswith('3') else 'ok'} {day} {i % 3}"}
                for i in range(n)]
        (folder / f"{day}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    server.set_faults(Fault("400", match="bad", attempts=None))
    daily = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-04")
    common: dict[str, Any] = {"partitions_def": daily, "backfill_policy": dg.BackfillPolicy.single_run()}
    raw = ingest_asset("raw", path=str(folder / "{partition}.jsonl"), **common)
    answers = prompt_asset("answers", raw, template="{text}", provider_key="llm",
                           options=RunOptions(on_error="null"), **common)
    result = dg.materialize([raw, answers], resources=resources("parquet", tmp_path / "out", server), tags={
        "dagster/asset_partition_range_start": "2024-01-01", "dagster/asset_partition_range_end": "2024-01-03"})
    assert result.success
    by_partition = {m.partition: m.metadata for m in result.asset_materializations_for_node("answers")}
    repeats = {"2024-01-01": 0, "2024-01-02": 2, "2024-01-03": 5}  # rows whose text another row of the day has
    for day, n in days.items():
        metadata = by_partition[day]
        assert metadata["dagster/row_count"].value == n, day
        assert metadata["rows_with_answers_error"].value == (1 if day.endswith("3") else 0), day
        assert metadata["ai/rows_in"].value == n
        assert metadata["ai/rows_deduplicated"].value == repeats[day], day
        # Dagster's standard metadata keys (its docs, "Asset metadata": dagster/uri, dagster/table_name)
        assert metadata["dagster/table_name"].value == "answers"
        assert str(metadata["dagster/uri"].value).endswith("answers")
