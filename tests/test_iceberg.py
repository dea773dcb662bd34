"""IcebergStore: a partition replaced in one atomic commit, idempotent retries, vectors, concurrent writers.

What is modelled, and from where:
- The Iceberg table spec ("Optimistic Concurrency"): a commit atomically swaps the table's current metadata; a
  writer whose base is no longer current fails and retries on the new metadata; readers see one snapshot or the
  next, never part of a commit. Data files written before a commit are invisible until it lands.
- pyiceberg's docs: ``Transaction.delete(delete_filter=...)`` + append in one ``transaction()`` is one commit;
  ``snapshot_properties`` are written into the snapshot summary; ``SqlCatalog`` on SQLite.
- The Iceberg REST catalog spec: a commit answered 5xx / lost has an unknown state
  (``CommitStateUnknownException``) and may have landed: a retry must not apply it a second time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

pytest.importorskip("pyiceberg")

from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import CommitStateUnknownException

from ai_assets.runtime.errors import ConfigError
from ai_assets.storage.iceberg import KEY_PROPERTY, IcebergStore, commit_key

ROOT = Path(__file__).resolve().parents[1]


def catalog(folder: Path) -> dict[str, str]:
    return {"type": "sql", "uri": f"sqlite:///{folder}/catalog.db", "warehouse": f"file://{folder}/warehouse"}


def rows(key: str, n: int, tag: str = "v1") -> pa.Table:
    vectors = pa.FixedSizeListArray.from_arrays(pa.array([float(i) for i in range(n * 3)], pa.float32()), 3)
    return pa.table({"id": list(range(n)), "text": [f"{tag}-{key}-{i}" for i in range(n)], "vector": vectors,
                     "_partition": [key] * n})


def test_a_partition_is_replaced_and_the_others_are_untouched(tmp_path: Path) -> None:
    store = IcebergStore(catalog(tmp_path), "lake.reviews")
    store.write(rows("a", 5), ["a"])
    store.write(rows("b", 4), ["b"])
    store.write(rows("a", 2, "v2"), ["a"])
    assert store.partitions() == ["a", "b"]
    assert store.read(["a"]).column("text").to_pylist() == ["v2-a-0", "v2-a-1"]
    assert store.read(["b"]).num_rows == 4
    assert store.read().num_rows == 6


def test_vectors_read_back_with_the_type_they_were_written_with(tmp_path: Path) -> None:
    """Iceberg has no fixed-size list (spec: list<T> only): stored as list<float>, restored from the property."""
    store = IcebergStore(catalog(tmp_path), "lake.vectors")
    data = rows("a", 3)
    data = data.set_column(2, "vector", pa.array([[1, 2, 3], None, [4, 5, 6]], pa.list_(pa.float32(), 3)))
    store.write(data, ["a"])
    back = store.read(["a"])
    assert back.schema == data.schema
    assert back.column("vector").to_pylist() == [[1, 2, 3], None, [4, 5, 6]]
    streamed = store.read_stream(["a"])
    assert streamed.schema.field("vector").type == pa.list_(pa.float32(), 3)
    assert streamed.read_all().equals(back)


def test_a_write_is_streamed_batch_by_batch_into_one_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Data files are written CHUNK_BYTES at a time as the reader is consumed; the commit comes once at the end."""
    from ai_assets.storage import iceberg

    monkeypatch.setattr(iceberg, "CHUNK_BYTES", 1)  # every batch is its own data file
    store = IcebergStore(catalog(tmp_path), "lake.stream")
    data = rows("a", 30)
    result = store.write(pa.RecordBatchReader.from_batches(data.schema, data.to_batches(max_chunksize=10)), ["a"])
    assert result.rows == 30
    table = store._table()
    assert len(table.snapshots()) == 1  # the partition was new: nothing to delete, one append
    assert len(list(table.scan().plan_files())) == 3
    assert store.read(["a"]).column("id").to_pylist() == list(range(30))  # the order they were written in


def test_a_retried_commit_of_the_same_run_is_applied_once(tmp_path: Path) -> None:
    store = IcebergStore(catalog(tmp_path), "lake.retry", run_id="run-1")
    first = store.write(rows("a", 5), ["a"])
    again = store.write(rows("a", 5, "v2"), ["a"])  # the same run writing the same partition again
    assert again.version == first.version
    assert store.read(["a"]).column("text").to_pylist()[0] == "v1-a-0"
    assert len(store.commits("run-1", ["a"])) == 1
    other = IcebergStore(catalog(tmp_path), "lake.retry", run_id="run-2").write(rows("a", 2, "v3"), ["a"])
    assert other.version is not None and first.version is not None and other.version > first.version
    assert store.read(["a"]).column("text").to_pylist() == ["v3-a-0", "v3-a-1"]


class LostResponseCatalog(SqlCatalog):
    """A real SQL catalog whose first commit lands and then answers as a REST catalog does when the response is
    lost (REST spec: 500/502/504 on commit = ``CommitStateUnknownException``, the commit may have been applied)."""

    armed = False
    lost = 0

    def commit_table(self, table: Any, requirements: Any, updates: Any) -> Any:
        response = super().commit_table(table, requirements, updates)
        if type(self).armed and type(self).lost == 0:
            type(self).lost += 1
            raise CommitStateUnknownException("504 Gateway Timeout")
        return response


def test_a_commit_whose_response_was_lost_is_not_applied_twice(tmp_path: Path) -> None:
    cat = LostResponseCatalog("lost", uri=f"sqlite:///{tmp_path}/catalog.db", warehouse=f"file://{tmp_path}/wh")
    IcebergStore(cat, "lake.lost").write(rows("b", 1), ["b"])
    LostResponseCatalog.armed = True  # the next commit lands, and its answer is lost
    store = IcebergStore(cat, "lake.lost", run_id="run-7")
    result = store.write(rows("a", 4), ["a"])
    assert LostResponseCatalog.lost == 1
    assert result.rows == 4
    assert store.read(["a"]).num_rows == 4  # not 8
    table = store._table()
    keyed = [s for s in table.snapshots() if s.summary[KEY_PROPERTY] == commit_key("lake.lost", ["a"], "run-7")]
    assert len(keyed) == 1


def test_stray_rows_and_a_missing_partition_column_are_refused_by_name(tmp_path: Path) -> None:
    store = IcebergStore(catalog(tmp_path), "lake.bad")
    with pytest.raises(ConfigError, match=r"partition\(s\) \['b'\]"):
        store.write(rows("b", 2), ["a"])
    with pytest.raises(ConfigError, match="_partition"):
        store.write(pa.table({"id": [1]}), ["a"])
    assert store.partitions() == []


def test_an_empty_partition_replaces_the_old_rows(tmp_path: Path) -> None:
    store = IcebergStore(catalog(tmp_path), "lake.empty")
    store.write(rows("a", 3), ["a"])
    store.write(rows("a", 0).select(["_partition"]), ["a"])
    assert store.read(["a"]).num_rows == 0


def test_an_all_null_column_takes_the_tables_type(tmp_path: Path) -> None:
    """Arrow infers ``null`` for a column with no values; Iceberg format v2 has no such type (spec: primitive
    types), so the column is written with the table's type for it (``string`` when new)."""
    store = IcebergStore(catalog(tmp_path), "lake.nulls")
    store.write(pa.table({"note": pa.nulls(2), "_partition": ["a", "a"]}), ["a"])
    store.write(pa.table({"score": pa.array([1.5]), "_partition": ["b"]}), ["b"])
    store.write(pa.table({"score": pa.nulls(1), "_partition": ["c"]}), ["c"])
    back = store.read()
    assert back.schema.field("note").type == pa.string()
    assert back.schema.field("score").type == pa.float64()
    assert back.num_rows == 4


WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import pyarrow as pa
    import ai_assets.storage.iceberg as iceberg
    from tests.test_iceberg import catalog, rows

    folder, key, n, tag, run_id, pause = sys.argv[1:7]
    if pause != "-":
        def stop() -> None:
            Path(pause).write_text("files written")
            time.sleep(600)
        iceberg.before_commit = stop
    start = sys.argv[7] if len(sys.argv) > 7 else None
    while start and not Path(start).exists():
        time.sleep(0.01)
    store = iceberg.IcebergStore(catalog(Path(folder)), "lake.t", run_id=run_id)
    store.write(rows(key, int(n), tag), [key])
""")


def writer(tmp_path: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), *args], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stderr=subprocess.PIPE)


def data_files(tmp_path: Path) -> set[Path]:
    return set((tmp_path / "warehouse").rglob("*.parquet"))


@pytest.mark.slow
def test_a_write_killed_between_its_data_files_and_its_commit_leaves_the_old_partition(tmp_path: Path) -> None:
    """Iceberg spec: data files are only part of the table once a commit's metadata swap references them."""
    store = IcebergStore(catalog(tmp_path), "lake.t")
    store.write(rows("a", 5), ["a"])
    store.write(rows("b", 3), ["b"])
    before = data_files(tmp_path)
    marker = tmp_path / "paused"
    process = writer(tmp_path, "a", "7", "v2", "run-9", str(marker))
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert process.poll() is None, process.stderr.read() if process.stderr else b""
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert data_files(tmp_path) - before  # the new partition's files are on disk...
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert store.read(["a"]).column("text").to_pylist() == [f"v1-a-{i}" for i in range(5)]  # ...but not in it
    assert store.read(["b"]).num_rows == 3
    assert store.commits("run-9", ["a"]) == []

    for _ in range(2):  # the re-run commits; a second re-run of the same run commits nothing
        rerun = writer(tmp_path, "a", "7", "v2", "run-9", "-")
        assert rerun.wait(120) == 0, rerun.stderr.read() if rerun.stderr else b""
    assert store.read(["a"]).column("text").to_pylist() == [f"v2-a-{i}" for i in range(7)]
    assert len(store.commits("run-9", ["a"])) == 1
    assert store.read(["b"]).num_rows == 3


@pytest.mark.slow
def test_six_processes_writing_different_partitions_all_land(tmp_path: Path) -> None:
    """Iceberg spec, optimistic concurrency: a writer whose commit lost the race retries on the new metadata."""
    IcebergStore(catalog(tmp_path), "lake.t").write(rows("seed", 1), ["seed"])  # the table exists
    go = tmp_path / "go"
    processes = [writer(tmp_path, f"p{i}", str(100 + i), "v1", f"run-{i}", "-", str(go)) for i in range(6)]
    time.sleep(1.0)
    go.write_text("go")
    for process in processes:
        assert process.wait(180) == 0, process.stderr.read() if process.stderr else b""
    store = IcebergStore(catalog(tmp_path), "lake.t")
    assert store.partitions() == sorted(["seed", *[f"p{i}" for i in range(6)]])
    for i in range(6):
        assert store.read([f"p{i}"]).num_rows == 100 + i
        assert len(store.commits(f"run-{i}", [f"p{i}"])) == 1


def test_a_partition_key_longer_than_a_file_name_is_stored(tmp_path: Path) -> None:
    """POSIX NAME_MAX (255 bytes on Linux): ``_partition=<key>`` as a directory fails with ENAMETOOLONG; the Iceberg
    spec keeps a file's partition in its manifest entry, so the path need not carry the key."""
    keys = ["東京の天気" * 24, "a/" * 150, "..", "it's"]
    store = IcebergStore(catalog(tmp_path), "lake.keys")
    for key in keys:
        store.write(rows(key, 2), [key])
    assert store.partitions() == sorted(keys)
    assert all(store.read([key]).column("_partition").to_pylist() == [key, key] for key in keys)
    assert all(len(part.encode()) <= 255 for f in (tmp_path / "warehouse").rglob("*") for part in f.parts)


def test_a_table_created_by_another_writer_between_our_check_and_our_commit_is_used(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two writers of different partitions of a table that does not exist yet: the Iceberg catalog's create is an
    optimistic commit, and a SQL catalog refuses the second with ``CommitFailedException("Table already exists")``
    (pyiceberg's SqlCatalog; CI saw it with two CLI runs at once). The loser must use the winner's table, not fail."""
    first = IcebergStore(catalog(tmp_path), "lake.race")
    second = IcebergStore(catalog(tmp_path), "lake.race")
    create = second.catalog.create_table_transaction

    def interleaved(*args: Any, **kwargs: Any) -> Any:
        txn = create(*args, **kwargs)  # checked: the table does not exist yet
        first.write(rows("a", 2), ["a"])  # ... and now it does
        return txn

    monkeypatch.setattr(second.catalog, "create_table_transaction", interleaved)
    second.write(rows("b", 3), ["b"])
    assert sorted(IcebergStore(catalog(tmp_path), "lake.race").read().column("_partition").to_pylist()) == \
        ["a", "a", "b", "b", "b"]
