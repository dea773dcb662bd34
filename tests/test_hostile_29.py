"""Issue 29, read as a hostile user would: the Iceberg store, the IO-manager idioms and the telemetry, fed what
real users feed them. Each test names the documented behaviour it holds the code to."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

pytest.importorskip("pyiceberg")

from ai_assets.runtime.errors import AIAssetsError, ConfigError
from ai_assets.runtime.telemetry import materialization, shutdown
from ai_assets.storage import iceberg
from ai_assets.storage.base import PARTITION_COLUMN
from ai_assets.storage.delta import DeltaStore
from ai_assets.storage.iceberg import IcebergStore
from ai_assets.storage.lance import LanceStore
from ai_assets.storage.parquet import ParquetStore

SECRET = "hunter2-Zx9Qw8Er7Ty6"


def catalog(folder: Path) -> dict[str, str]:
    return {"type": "sql", "uri": f"sqlite:///{folder}/catalog.db", "warehouse": f"file://{folder}/warehouse"}


def part(key: str, n: int, tag: str = "v1") -> pa.Table:
    return pa.table({"id": list(range(n)), "text": [f"{tag}-{i}" for i in range(n)], PARTITION_COLUMN: [key] * n})


def stores(folder: Path, column: str = PARTITION_COLUMN) -> dict[str, Any]:
    return {"parquet": ParquetStore(str(folder / "parquet"), partition_column=column),
            "delta": DeltaStore(str(folder / "delta"), partition_column=column),
            "lancedb": LanceStore(str(folder / "lance"), "t", partition_column=column),
            "iceberg": IcebergStore(catalog(folder), "lake.t", partition_column=column)}


# --- the idioms -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["parquet", "delta", "lancedb", "iceberg"])
def test_an_empty_columns_list_reads_every_column_as_dagsters_io_managers_do(tmp_path: Path, kind: str) -> None:
    """Dagster's own IO managers treat an empty ``columns`` input metadata as no selection (dagster-duckdb's
    ``_get_select_statement``: ``", ".join(columns) if columns else "*"``; the same in its Snowflake and
    BigQuery clients). ``columns=[]`` must not read zero rows, nor differ between stores."""
    store = stores(tmp_path)[kind]
    store.write(part("a", 3), ["a"])
    whole = store.read(["a"])
    assert store.read(["a"], columns=[]).to_pylist() == whole.to_pylist()
    with store.read_stream(["a"], columns=[]) as reader:
        assert reader.read_all().num_rows == 3


@pytest.mark.parametrize("kind", ["parquet", "delta", "lancedb", "iceberg"])
def test_a_data_column_named_like_the_synthetic_partition_column_is_kept(tmp_path: Path, kind: str) -> None:
    """Dagster's ``partition_expr`` docs: the partition key lives in the named column; every other column is the
    asset's data. With ``partition_expr="day"`` a column of the data that happens to be called ``_partition`` is
    data: written and read back as it was, and no partition is derived from it."""
    store = stores(tmp_path, "day")[kind]
    store.write(pa.table({"day": ["2024-01-01"] * 2, PARTITION_COLUMN: ["mine", "yours"], "v": [1, 2]}),
                ["2024-01-01"])
    back = store.read(["2024-01-01"])
    assert sorted(back.column(PARTITION_COLUMN).to_pylist()) == ["mine", "yours"]
    assert store.partitions() == ["2024-01-01"]


# --- Iceberg ----------------------------------------------------------------------------------------------------

def test_partition_keys_with_quotes_unicode_and_10_kb_round_trip(tmp_path: Path) -> None:
    """Iceberg spec: an identity partition value is the row's value, kept in manifests (any string); pyiceberg
    filters are expressions, not SQL text, so a quote cannot break out. A 10 KB key is a key like any other."""
    keys = ["it's \"quoted\" ' OR 1=1 --", "ünïcødé ✓ 東京 🚀", "k" * 10240, "back\\slash\nnewline"]
    store = IcebergStore(catalog(tmp_path), "lake.keys")
    for i, key in enumerate(keys):
        store.write(part(key, i + 1), [key])
    assert store.partitions() == sorted(keys)
    for i, key in enumerate(keys):
        got = store.read([key])
        assert got.num_rows == i + 1 and set(got.column(PARTITION_COLUMN).to_pylist()) == {key}


def test_the_schema_evolves_between_partitions(tmp_path: Path) -> None:
    """Iceberg spec, schema evolution: a column may be added, an int widened to a long, a float to a double, and a
    partition written without a column reads it as null (columns are matched by field id, not by position)."""
    store = IcebergStore(catalog(tmp_path), "lake.evolve")
    store.write(pa.table({"n": pa.array([1], pa.int32()), "x": pa.array([0.5], pa.float32()), "text": ["a"],
                          PARTITION_COLUMN: ["a"]}), ["a"])
    store.write(pa.table({"n": pa.array([2**40], pa.int64()), "x": pa.array([0.25], pa.float64()), "text": ["b"],
                          "extra": ["new"], PARTITION_COLUMN: ["b"]}), ["b"])
    store.write(pa.table({"n": pa.array([3], pa.int64()), PARTITION_COLUMN: ["c"]}), ["c"])  # text, x dropped
    rows = {r[PARTITION_COLUMN]: r for r in store.read().to_pylist()}
    assert rows["a"]["n"] == 1 and rows["b"]["n"] == 2**40 and rows["c"]["n"] == 3
    assert rows["b"]["x"] == 0.25 and rows["c"]["text"] is None and rows["a"]["extra"] is None
    assert rows["b"]["extra"] == "new"


def test_an_incompatible_type_change_is_an_error_naming_the_table_and_column(tmp_path: Path) -> None:
    """Iceberg spec, "Schema Evolution": only int->long, float->double and decimal widening are promotions; a
    string column cannot become a long. The error names the table and the column, and the old partition stays."""
    store = IcebergStore(catalog(tmp_path), "lake.types")
    store.write(pa.table({"v": ["text"], PARTITION_COLUMN: ["a"]}), ["a"])
    with pytest.raises(ConfigError) as caught:
        store.write(pa.table({"v": [7], PARTITION_COLUMN: ["b"]}), ["b"])
    assert "lake.types" in str(caught.value) and "'v'" in str(caught.value)
    assert store.read().column("v").to_pylist() == ["text"]


def test_a_catalog_that_is_down_is_named_without_its_uri_or_password(tmp_path: Path) -> None:
    """A SQL catalog (pyiceberg ``SqlCatalog``, a SQLAlchemy URL) whose server refuses connections: the error names
    the catalog and says it is unreachable; the URL's password (RFC 3986 userinfo) appears nowhere in it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    uri = f"postgresql+psycopg2://writer:{SECRET}@127.0.0.1:{port}/lake"
    with pytest.raises(AIAssetsError) as caught:
        IcebergStore({"type": "sql", "uri": uri, "warehouse": f"file://{tmp_path}/w"}, "lake.t").write(
            part("a", 1), ["a"])
    text = f"{caught.value}\n{caught.value.__cause__ or ''}\n{caught.value.__context__ or ''}"
    assert "ai_assets" in str(caught.value) and SECRET not in text and "writer:" not in text


def test_a_malformed_catalog_uri_is_named_without_its_password(tmp_path: Path) -> None:
    """RFC 3986 userinfo is a credential: a URL that SQLAlchemy cannot parse (a port that is not a number) is an
    error naming the catalog and the setting, never echoing the URL with its password."""
    uri = f"postgresql+psycopg2://writer:{SECRET}@127.0.0.1:notaport/lake"
    with pytest.raises(AIAssetsError) as caught:
        IcebergStore({"type": "sql", "uri": uri, "warehouse": f"file://{tmp_path}/w"}, "lake.t")
    text = f"{caught.value}\n{caught.value.__cause__ or ''}\n{caught.value.__context__ or ''}"
    assert "ai_assets" in str(caught.value) and SECRET not in text


def test_two_writers_of_the_same_partition_one_wins_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Iceberg spec, optimistic concurrency: both writers commit from the same base; the catalog takes one, the
    other retries on the new metadata, re-planning its delete. The partition then holds exactly one writer's rows
    (the last to commit), never a mix and never both."""
    IcebergStore(catalog(tmp_path), "lake.same").write(part("a", 2, "seed"), ["a"])
    both = threading.Barrier(2, timeout=60)
    monkeypatch.setattr(iceberg, "before_commit", both.wait)
    errors: list[BaseException] = []

    def write(tag: str, n: int) -> None:
        try:
            IcebergStore(catalog(tmp_path), "lake.same", run_id=f"run-{tag}").write(part("a", n, tag), ["a"])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(tag, n)) for tag, n in (("x", 3), ("y", 5))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    texts = IcebergStore(catalog(tmp_path), "lake.same").read(["a"]).column("text").to_pylist()
    assert sorted(texts) in (sorted(f"x-{i}" for i in range(3)), sorted(f"y-{i}" for i in range(5)))


@pytest.mark.parametrize("kind", ["parquet", "delta", "lancedb", "iceberg"])
def test_a_partition_expr_column_with_a_null_is_refused_naming_the_row(tmp_path: Path, kind: str) -> None:
    """Iceberg spec: an identity partition of a null value is the null partition, which no Dagster partition key
    names (Delta's and Hive's ``__HIVE_DEFAULT_PARTITION__`` the same); the row would land where no run can
    replace it. The write is refused, naming the column and the row (counted over the whole write, not within one
    batch), and nothing is committed."""
    store = stores(tmp_path, "day")[kind]
    first = pa.record_batch({"day": ["2024-01-01"] * 3, "v": [1, 2, 3]})
    second = pa.record_batch({"day": ["2024-01-01", None], "v": [4, 5]})
    with pytest.raises(ConfigError) as caught:
        store.write(pa.RecordBatchReader.from_batches(first.schema, [first, second]), ["2024-01-01"])
    assert "'day'" in str(caught.value) and "row 4" in str(caught.value)
    assert store.partitions() == []


@pytest.mark.parametrize(("values", "kind", "key"), [
    ([7, 7], pa.int64(), "7"),
    (["2024-01-01", "2024-01-01"], pa.date32(), "2024-01-01"),
])
def test_a_typed_partition_expr_column_is_replaced_and_read_by_its_key(
        tmp_path: Path, values: list[Any], kind: pa.DataType, key: str) -> None:
    """Dagster's IO managers (dagster-deltalake, dagster-iceberg): ``partition_expr`` names a column of any type
    whose value is the partition key (a date column for daily partitions). Dagster hands the key as a string; the
    store compares it as the column's type, so a rewrite replaces the partition and a read finds it."""
    data = pa.table({"day": pa.array(values).cast(kind), "v": [1, 2]})
    store = IcebergStore(catalog(tmp_path), "lake.typed", partition_column="day")
    store.write(data, [key])
    store.write(data.slice(0, 1), [key])
    assert store.read([key]).num_rows == 1
    assert store.partitions() == [key]


# --- telemetry --------------------------------------------------------------------------------------------------

@pytest.fixture
def otel_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for name in ("OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER", "OTEL_EXPORTER_OTLP_TIMEOUT",
                 "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    yield monkeypatch
    shutdown()


@pytest.mark.parametrize(("name", "value"), [
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:notaport"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://[::1"),
    ("OTEL_EXPORTER_OTLP_TIMEOUT", "ten seconds"),
    ("OTEL_METRIC_EXPORT_INTERVAL", "soon"),
    ("OTEL_BSP_MAX_QUEUE_SIZE", "-5"),
    ("OTEL_EXPORTER_OTLP_HEADERS", "no equals sign,,="),
    ("OTEL_RESOURCE_ATTRIBUTES", "=,,=x"),
])
def test_garbage_otel_variables_never_fail_the_work(otel_env: pytest.MonkeyPatch, name: str, value: str) -> None:
    """OTel SDK environment variable spec, "Parsing empty value" / "Configuration errors": an invalid value SHOULD
    produce a warning and be ignored (treated as unset), never raise into the instrumented application."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    otel_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    otel_env.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    otel_env.setenv(name, value)
    scope = materialization("garbage", {"asset": "a"})
    scope.end()


def test_credentials_in_the_otlp_endpoint_never_reach_a_log(otel_env: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    """RFC 3986 userinfo and a query-string key are credentials: when the export fails, neither the warning the
    run gets nor any log line of the exporters (OpenTelemetry's own loggers included) carries them."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    otel_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://user:{SECRET}@127.0.0.1:{port}/otlp?api_key={SECRET}")
    otel_env.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    caplog.set_level(logging.DEBUG)
    scope = materialization("leaky", {"asset": "a"})
    warning = scope.end()
    shutdown()
    assert warning is not None and SECRET not in warning
    logged = "\n".join(f"{r.getMessage()} {r.exc_text or ''} {r.exc_info[1] if r.exc_info else ''}"
                       for r in caplog.records)
    assert SECRET not in logged

