"""Partitions of one asset written at once by different processes into one Delta or LanceDB table on an
S3-compatible server: every write lands (the stores' conditional-put commits), none overwrites another's."""

from __future__ import annotations

import collections
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ai_assets.storage.delta import DeltaStore
from ai_assets.storage.lance import LanceStore
from tests.services import S3_KEY, S3_REGION, S3_SECRET, Service, s3_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]
BUCKET = "lake"
WRITERS, ROUNDS, ROWS = 6, 3, 200


@pytest.fixture(scope="module")
def s3() -> Iterator[Service]:
    with s3_server([BUCKET]) as service:
        yield service


def options(backend: str, endpoint: str) -> dict[str, str]:
    if backend == "delta":  # no locking option, no unsafe rename: the store's defaults must be safe
        return {"AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET, "AWS_ENDPOINT_URL": endpoint,
                "AWS_REGION": S3_REGION, "AWS_ALLOW_HTTP": "true"}
    return {"aws_access_key_id": S3_KEY, "aws_secret_access_key": S3_SECRET, "aws_endpoint": endpoint,
            "aws_region": S3_REGION, "allow_http": "true"}


def store(backend: str, uri: str, endpoint: str) -> DeltaStore | LanceStore:
    if backend == "delta":
        return DeltaStore(uri, options(backend, endpoint))
    return LanceStore(uri, "answers", storage_options=options(backend, endpoint))


WRITER = """
import sys
import pyarrow as pa
sys.path.insert(0, "tests")
from test_concurrent_writers import ROUNDS, ROWS, store
backend, uri, endpoint, partition = sys.argv[1:5]
target = store(backend, uri, endpoint)
for round in range(ROUNDS):  # each round replaces the partition; the last one must be what stays
    target.write(pa.table({"_partition": [partition] * ROWS, "row": list(range(ROWS)),
                           "round": [round] * ROWS, "text": [f"{partition} {i}" for i in range(ROWS)]}), [partition])
"""


@pytest.mark.parametrize("backend", ["delta", "lancedb"])
def test_parallel_writers_of_one_table_on_s3_all_land(s3: Service, backend: str) -> None:
    uri = f"s3://{BUCKET}/{backend}/answers"
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, backend, uri, s3.url, f"day-{w}"], cwd=ROOT,
                                stderr=subprocess.PIPE, text=True) for w in range(WRITERS)]
    errors = [w.communicate(timeout=300)[1] for w in writers]
    assert [w.returncode for w in writers] == [0] * WRITERS, "\n".join(errors)[-4000:]
    table = store(backend, uri, s3.url).read()
    counts = collections.Counter(table.column("_partition").to_pylist())
    assert counts == {f"day-{w}": ROWS for w in range(WRITERS)}
    assert set(table.column("round").to_pylist()) == {ROUNDS - 1}
    pairs = list(zip(table.column("_partition").to_pylist(), table.column("row").to_pylist(), strict=True))
    assert len(set(pairs)) == len(pairs)  # every row exactly once


def test_a_lancedb_merge_overtaken_by_an_overwrite_is_merged_again(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The race above, made certain: between opening the table and committing the merge, another writer's
    Overwrite lands (what a second first-writer's create does on S3). The merge is done again on the new
    version, and the partition's rows are there."""
    import pyarrow as pa

    target = LanceStore(str(tmp_path), "answers")
    target.write(pa.table({"_partition": ["a"] * 3, "row": [0, 1, 2]}), ["a"])
    merge = LanceStore._merge
    overtaken: list[bool] = []

    def overtaking(self: LanceStore, handle: object, source: pa.RecordBatchReader, partitions: object) -> None:
        if not overtaken:
            overtaken.append(True)
            other = LanceStore(str(tmp_path), "answers")
            other._db.create_table("answers", schema=handle.schema, mode="overwrite")  # type: ignore[attr-defined]
        merge(self, handle, source, partitions)  # type: ignore[arg-type]

    monkeypatch.setattr(LanceStore, "_merge", overtaking)
    target.write(pa.table({"_partition": ["b"] * 2, "row": [0, 1]}), ["b"])
    assert overtaken
    table = target.read(["b"])
    assert table.column("row").to_pylist() == [0, 1]


def test_a_lancedb_create_that_lands_late_puts_back_what_it_wiped(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The other race, made certain: a first writer looked for the table before anyone had made it, and its
    create commits after other writers' partitions landed (on S3 a creator starved by 5 writers' merges was seen
    to land last, and the table ended up holding its partition alone). The create's empty Overwrite is a later
    version; the partitions it wiped are put back, and its own partition lands beside them."""
    import pyarrow as pa

    first = LanceStore(str(tmp_path), "answers")
    first.write(pa.table({"_partition": ["a"] * 3, "row": [0, 1, 2]}), ["a"])
    first.write(pa.table({"_partition": ["c"] * 2, "row": [5, 6]}), ["c"])
    late = LanceStore(str(tmp_path), "answers")
    create = late._db.create_table
    looked: list[bool] = []

    def not_there_yet() -> object:
        if not looked:
            looked.append(True)
            return None
        return late._db.open_table("answers")

    def create_after_the_check(name: str, **kwargs: object) -> object:
        return create(name, **{**kwargs, "mode": "overwrite"})  # the existence check passed long ago

    monkeypatch.setattr(late, "_open", not_there_yet)
    monkeypatch.setattr(late._db, "create_table", create_after_the_check)
    late.write(pa.table({"_partition": ["b"] * 2, "row": [0, 1]}), ["b"])
    assert looked
    assert late.partitions() == ["a", "b", "c"]
    assert late.read(["a"]).column("row").to_pylist() == [0, 1, 2]
    assert late.read(["b"]).column("row").to_pylist() == [0, 1]
    assert late.read(["c"]).column("row").to_pylist() == [5, 6]
