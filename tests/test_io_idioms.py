"""The IO-manager idioms Dagster users know, on every store (Parquet, Delta, LanceDB, Iceberg).

Modelled on Dagster's docs and its own IO managers (dagster-duckdb, dagster-deltalake, dagster-iceberg):
- ``dg.AssetIn(metadata={"columns": [...]})``: the downstream asset gets only those columns ("Selecting specific
  columns in a downstream asset"); a column the table lacks is an error that names it.
- ``metadata={"partition_expr": "day"}`` on a partitioned asset: the partition key lives in that real column of
  the table ("Storing partitioned assets"), the IO manager deletes / selects the rows where it equals the key.
"""

import datetime
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest

from ai_assets.dagster.io_iceberg import IcebergIOManager
from ai_assets.dagster.io_managers import ArrowIOManager, DeltaIOManager, LanceDBIOManager, ParquetIOManager
from ai_assets.storage.base import PARTITION_COLUMN

pytestmark = pytest.mark.integration
KINDS = ["parquet", "delta", "lancedb", "iceberg"]
DAYS = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-04")


def manager(kind: str, root: Path) -> ArrowIOManager:
    if kind == "parquet":
        return ParquetIOManager(root=str(root / "parquet"))
    if kind == "delta":
        return DeltaIOManager(root=str(root / "delta"))
    if kind == "lancedb":
        return LanceDBIOManager(root=str(root / "lancedb"))
    return IcebergIOManager(root=f"file://{root}/iceberg", catalog_uri=f"sqlite:///{root}/catalog.db")


@dg.asset(partitions_def=DAYS)
def wide(context: dg.AssetExecutionContext) -> pa.Table:
    return pa.table({"a": [1, 2], "b": ["x", "y"], "c": [0.5, 1.5]})


@pytest.mark.parametrize("kind", KINDS)
def test_columns_in_the_input_metadata_are_the_only_ones_read(tmp_path: Path, kind: str) -> None:
    seen: dict[str, list[str]] = {}

    @dg.asset(partitions_def=DAYS, ins={"wide": dg.AssetIn(metadata={"columns": ["c", "a"]})})
    def narrow(wide: pa.Table) -> pa.Table:
        seen["table"] = wide.column_names
        return wide

    @dg.asset(partitions_def=DAYS, ins={"wide": dg.AssetIn(metadata={"columns": ["b"]})})
    def streamed(wide: pa.RecordBatchReader) -> pa.Table:
        seen["stream"] = wide.schema.names
        return wide.read_all()

    result = dg.materialize([wide, narrow, streamed], partition_key="2024-01-01",
                            resources={"io_manager": manager(kind, tmp_path)})
    assert result.success
    assert seen == {"table": ["c", "a"], "stream": ["b"]}


@pytest.mark.parametrize("kind", KINDS)
def test_a_column_the_table_lacks_is_named(tmp_path: Path, kind: str) -> None:
    @dg.asset(partitions_def=DAYS, ins={"wide": dg.AssetIn(metadata={"columns": ["a", "nope"]})})
    def narrow(wide: pa.Table) -> pa.Table:
        return wide

    result = dg.materialize([wide, narrow], partition_key="2024-01-01", raise_on_error=False,
                            resources={"io_manager": manager(kind, tmp_path)})
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    message = str(failure.step_failure_data.error)
    assert "'nope'" in message and "columns" in message


@dg.asset(partitions_def=DAYS, metadata={"partition_expr": "day"})
def sales(context: dg.AssetExecutionContext) -> pa.Table:
    day = datetime.date.fromisoformat(context.partition_key)
    n = day.day  # 1, 2, 3 rows
    return pa.table({"day": pa.array([day] * n, pa.date32()), "amount": [float(i) for i in range(n)]})


@pytest.mark.parametrize("kind", KINDS)
def test_partition_expr_keeps_the_key_in_a_real_column(tmp_path: Path, kind: str) -> None:
    loaded: dict[str, pa.Table] = {}

    @dg.asset(partitions_def=DAYS)
    def totals(context: dg.AssetExecutionContext, sales: pa.Table) -> pa.Table:
        loaded[context.partition_key] = sales
        return pa.table({"total": [sum(sales.column("amount").to_pylist())]})

    resources = {"io_manager": manager(kind, tmp_path)}
    for key in ("2024-01-01", "2024-01-02", "2024-01-03"):
        assert dg.materialize([sales, totals], partition_key=key, resources=resources).success
    assert dg.materialize([sales], partition_key="2024-01-02", resources=resources).success  # replaced, not added

    store = manager(kind, tmp_path).store(dg.AssetKey("sales"), {"partition_expr": "day"})
    assert store.partitions() == ["2024-01-01", "2024-01-02", "2024-01-03"]
    table = store.read()
    assert PARTITION_COLUMN not in table.column_names
    assert table.schema.field("day").type == pa.date32()
    assert table.num_rows == 6
    two = store.read(["2024-01-02"])
    assert two.column("day").to_pylist() == [datetime.date(2024, 1, 2)] * 2
    assert loaded["2024-01-03"].num_rows == 3  # the downstream partition got its own rows only
    assert set(loaded["2024-01-03"].column("day").to_pylist()) == {datetime.date(2024, 1, 3)}


@pytest.mark.parametrize("kind", KINDS)
def test_partition_expr_column_is_added_when_the_output_lacks_it(tmp_path: Path, kind: str) -> None:
    @dg.asset(partitions_def=DAYS, metadata={"partition_expr": "day"})
    def plain(context: dg.AssetExecutionContext) -> pa.Table:
        return pa.table({"amount": [1.0, 2.0]})

    resources = {"io_manager": manager(kind, tmp_path)}
    assert dg.materialize([plain], partition_key="2024-01-02", resources=resources).success
    store = manager(kind, tmp_path).store(dg.AssetKey("plain"), {"partition_expr": "day"})
    table = store.read(["2024-01-02"])
    assert table.column("day").to_pylist() == ["2024-01-02", "2024-01-02"]
    assert PARTITION_COLUMN not in table.column_names
