"""IcebergIOManager and IcebergSource in real Dagster materializations.

Modelled: Dagster's IO manager contract (``handle_output`` stores the partition a run materializes,
``load_input`` gives a downstream asset the upstream partition) as its docs and dagster-iceberg show it; the
Iceberg spec's snapshot summary (free-form string properties) carrying the run's commit key.
"""

from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest

pytest.importorskip("pyiceberg")

from ai_assets.dagster import IcebergIOManager, ingest_asset
from ai_assets.dagster.io_managers import ParquetIOManager
from ai_assets.functions.table_sources import IcebergSource
from ai_assets.storage.iceberg import IcebergStore

pytestmark = pytest.mark.integration
KEYS = dg.StaticPartitionsDefinition(["2024-01-01", "2024-01-02"])


def manager(tmp_path: Path) -> IcebergIOManager:
    return IcebergIOManager(root=f"file://{tmp_path}/warehouse", catalog_uri=f"sqlite:///{tmp_path}/catalog.db")


def test_a_partitioned_asset_and_a_downstream_asset_through_iceberg(tmp_path: Path) -> None:
    @dg.asset(partitions_def=KEYS)
    def vectors(context: dg.AssetExecutionContext) -> pa.Table:
        n = 3 if context.partition_key.endswith("1") else 2
        return pa.table({"text": [f"{context.partition_key}-{i}" for i in range(n)],
                         "vector": pa.array([[1.0, 2.0]] * n, pa.list_(pa.float32(), 2))})

    @dg.asset(partitions_def=KEYS)
    def counted(vectors: pa.RecordBatchReader) -> pa.Table:
        table = vectors.read_all()
        assert table.schema.field("vector").type == pa.list_(pa.float32(), 2)
        return pa.table({"rows": [table.num_rows]})

    resources = {"io_manager": manager(tmp_path)}
    for key in KEYS.get_partition_keys():
        result = dg.materialize([vectors, counted], partition_key=key, resources=resources)
        assert result.success
    again = dg.materialize([vectors, counted], partition_key="2024-01-01", resources=resources)
    metadata = again.asset_materializations_for_node("vectors")[0].metadata
    assert metadata["dagster/uri"].value == "iceberg://ai_assets/ai_assets.vectors"
    assert metadata["dagster/row_count"].value == 3

    store = manager(tmp_path).store(dg.AssetKey("vectors"), {})
    assert store.partitions() == ["2024-01-01", "2024-01-02"]
    assert store.read(["2024-01-01"]).num_rows == 3  # replaced by the second run, not appended to
    assert isinstance(store, IcebergStore)
    assert len(store.commits(again.run_id, ["2024-01-01"])) == 1
    counts = manager(tmp_path).store(dg.AssetKey("counted"), {}).read()
    assert sorted(counts.column("rows").to_pylist()) == [2, 3]


def test_a_partition_is_ingested_from_an_iceberg_table(tmp_path: Path) -> None:
    catalog = {"type": "sql", "uri": f"sqlite:///{tmp_path}/catalog.db", "warehouse": f"file://{tmp_path}/wh"}
    sales = pa.table({"day": pa.array(["2024-01-01", "2024-01-02", "2024-01-01"]).cast(pa.date32()),
                      "id": [1, 2, 3], "text": ["a", "b", "c"]})
    IcebergStore(catalog, "lake.sales").write(sales, None)
    raw = ingest_asset("raw", source=IcebergSource(catalog, "lake.sales", partition_column="day", columns=["id"]),
                       partitions_def=KEYS)
    resources = {"io_manager": ParquetIOManager(root=str(tmp_path / "out"))}
    assert dg.materialize([raw], partition_key="2024-01-01", resources=resources).success
    stored = ParquetIOManager(root=str(tmp_path / "out")).store(dg.AssetKey("raw"), {}).read(["2024-01-01"])
    assert stored.column("id").to_pylist() == [1, 3]


def test_the_catalog_url_never_reaches_metadata_or_errors(tmp_path: Path) -> None:
    """A SQL catalog URL carries the database password (SQLAlchemy URL: ``dialect://user:password@host/db``):
    the asset's ``dagster/uri`` names the catalog and table instead, and a missing table is named without it."""
    secret = tmp_path / "pw-s3cr3t"
    io_manager = IcebergIOManager(root=f"file://{tmp_path}/wh", catalog_uri=f"sqlite:///{secret}/catalog.db")

    @dg.asset
    def plain() -> pa.Table:
        return pa.table({"x": [1]})

    result = dg.materialize([plain], resources={"io_manager": io_manager})
    metadata = result.asset_materializations_for_node("plain")[0].metadata
    assert all("s3cr3t" not in str(value.value) for value in metadata.values())
    source = IcebergSource({"type": "sql", "uri": f"sqlite:///{secret}/catalog.db"}, "lake.missing")
    with pytest.raises(FileNotFoundError) as caught:
        source.read()
    assert "s3cr3t" not in str(caught.value) and "lake.missing" in str(caught.value)
