"""Object-store roots for the IO managers, the journal and downloads, against a real S3 API (moto's server on
127.0.0.1)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pytest

from ai_assets import DownloadPolicy, ObjectStoreCache, OpenAICompatibleProvider, download, prompt
from ai_assets.dagster import (
    DeltaIOManager,
    LanceDBIOManager,
    OpenAICompatibleResource,
    ParquetIOManager,
    ResultCacheResource,
    ingest_asset,
    prompt_asset,
)
from ai_assets.testing import FakeOpenAIServer
from tests.kinds import STORE_KINDS

pytestmark = [pytest.mark.integration, pytest.mark.slow]
BUCKET = "ai-assets"


@pytest.fixture(scope="module")
def s3() -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "moto server did not start"
            time.sleep(0.1)
    import boto3

    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="k", aws_secret_access_key="s",
                 region_name="us-east-1").create_bucket(Bucket=BUCKET)
    yield endpoint
    server.kill()
    server.wait()


def fsspec_options(endpoint: str) -> dict[str, str]:
    return {"key": "k", "secret": "s", "endpoint_url": endpoint}


def io_manager(backend: str, endpoint: str, prefix: str) -> Any:
    if backend == "parquet":
        return ParquetIOManager(root=f"s3://{BUCKET}/{prefix}/parquet", storage_options=fsspec_options(endpoint))
    if backend == "delta":
        return DeltaIOManager(root=f"s3://{BUCKET}/{prefix}/delta", storage_options={
            "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_ENDPOINT_URL": endpoint,
            "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true"})
    return LanceDBIOManager(root=f"s3://{BUCKET}/{prefix}/lancedb", storage_options={
        "aws_access_key_id": "k", "aws_secret_access_key": "s", "aws_endpoint": endpoint,
        "aws_region": "us-east-1", "allow_http": "true"})


@pytest.mark.parametrize("backend", STORE_KINDS)
def test_io_managers_and_the_journal_on_s3(tmp_path: Path, s3: str, server: FakeOpenAIServer,
                                           backend: str) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for key in ("day-1", "day'2"):
        (source / f"{key}.jsonl").write_text("".join(json.dumps({"text": f"{key} row {i}"}) + "\n" for i in range(4)))
    partitions = dg.StaticPartitionsDefinition(["day-1", "day'2"])
    raw = ingest_asset("raw", path=str(source / "{partition}.jsonl"), partitions_def=partitions)
    answers = prompt_asset("answers", raw, template="{text}", provider_key="llm", partitions_def=partitions)
    prefix = f"io-{backend}"
    resources = {
        "io_manager": io_manager(backend, s3, prefix),
        "llm": OpenAICompatibleResource(model="fake", base_url=server.base_url, api_key="k"),
        "ai_cache": ResultCacheResource(path=f"s3://{BUCKET}/{prefix}/journal", storage_options=fsspec_options(s3)),
    }
    for key in ("day-1", "day'2"):
        assert dg.materialize([raw, answers], partition_key=key, resources=resources).success
    store = io_manager(backend, s3, prefix).store(dg.AssetKey("answers"), {})
    table = store.read()
    assert table.num_rows == 8 and sorted(set(table.column("_partition").to_pylist())) == ["day'2", "day-1"]
    assert store.read(["day'2"]).num_rows == 4
    assert server.stats().chat_requests == 8

    server.reset()
    assert dg.materialize([raw, answers], partition_key="day-1", resources=resources).success
    assert server.stats().chat_requests == 0  # the journal on S3 answered every row


def test_object_store_journal_segments_concurrency_and_compaction(s3: str, server: FakeOpenAIServer,
                                                                  llm: OpenAICompatibleProvider) -> None:
    uri = f"s3://{BUCKET}/journal-unit"
    writers = [ObjectStoreCache(uri, fsspec_options(s3), flush_rows=10) for _ in range(2)]
    for i in range(25):
        writers[i % 2].put(f"k{i}", {"i": i})
    writers[0].put("failed", error="HTTP 500")
    # 12 and 13 puts per writer at 10 a segment: each writer starts a segment on a background thread once it has
    # 10 entries (waited for here); a segment takes the buffer as it stands when its thread starts.
    for writer in writers:
        assert writer._flusher is not None
        writer._flusher.join()
    assert len(ObjectStoreCache(uri, fsspec_options(s3)).get_many([f"k{i}" for i in range(25)])) >= 20
    for writer in writers:
        writer.close()
    reader = ObjectStoreCache(uri, fsspec_options(s3))
    found = reader.get_many([f"k{i}" for i in range(25)] + ["failed"])
    assert len(found) == 25 and found["k7"].value == {"i": 7}
    assert reader.get_many(["failed"], include_errors=True)["failed"].error == "HTTP 500"
    assert reader.prune(max_entries=10) == 16
    assert len(reader.fs.ls(f"{reader.root}/segments")) == 1
    assert len(ObjectStoreCache(uri, fsspec_options(s3))) == 10

    table = pa.table({"text": [f"q{i}" for i in range(5)]})
    cache = ObjectStoreCache(f"s3://{BUCKET}/journal-prompt", fsspec_options(s3))
    prompt(table, "{text}", provider=llm, cache=cache)
    prompt(table, "{text}", provider=llm, cache=ObjectStoreCache(cache.uri, fsspec_options(s3)))
    assert server.stats().chat_requests == 5


def test_a_torn_segment_write_is_never_read(tmp_path: Path) -> None:
    cache = ObjectStoreCache(f"file://{tmp_path}/journal", flush_rows=2)
    cache.put("a", 1)
    cache.put("b", 2)
    cache.flush()
    segments = tmp_path / "journal" / "segments"
    (segments / ".tmp-00000000000000000001-dead.jsonl.part").write_text('{"key": "c", "val')
    (segments / ".tmp-00000000000000000002-dead.jsonl").write_text('{"key": "d", "val')
    assert set(ObjectStoreCache(f"file://{tmp_path}/journal").get_many(["a", "b", "c", "d"])) == {"a", "b"}


def test_download_from_s3(s3: str) -> None:
    import fsspec

    fs = fsspec.filesystem("s3", **fsspec_options(s3))
    fs.pipe_file(f"{BUCKET}/files/a.txt", b"hello from s3")
    policy = DownloadPolicy(storage_options=fsspec_options(s3), max_bytes=5, protocols=frozenset({"s3"}))
    out = download(pa.table({"url": [f"s3://{BUCKET}/files/a.txt", f"s3://{BUCKET}/files/none"]}), "url",
                   policy=DownloadPolicy(storage_options=fsspec_options(s3), protocols=frozenset({"s3"})))
    assert out.table.column("bytes").to_pylist()[0] == b"hello from s3"
    assert "no such file" in out.table.column("bytes_error").to_pylist()[1]
    capped = download(pa.table({"url": [f"s3://{BUCKET}/files/a.txt"]}), "url", policy=policy)
    assert "over max_bytes=5" in capped.table.column("bytes_error").to_pylist()[0]


class _GatedThenFlaky(ObjectStoreCache):
    """Segment writes wait for the test to open a gate; the first one then fails, as a dropped connection would."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()
        self.writes = 0

    def _write_segment(self, entries: list[dict[str, Any]]) -> str:
        self.writes += 1
        assert self.gate.wait(30), "the test never opened the gate"
        if self.writes == 1:
            raise ConnectionError("store went away")
        return super()._write_segment(entries)


def test_journal_writes_leave_the_caller_and_retry_after_a_failure(tmp_path: Path) -> None:
    uri = f"file://{tmp_path}/journal"
    cache = _GatedThenFlaky(uri, flush_rows=2)
    cache.put("a", 1)
    cache.put("b", 2)  # due: the write starts on a worker thread (with a and b) and blocks at the gate
    deadline = time.monotonic() + 30
    while cache.writes == 0:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    cache.put("c", 3)  # returns although that write has not finished: puts never wait for a write below a full buffer
    assert cache.writes == 1 and not cache.gate.is_set()
    # A full buffer beside a write under way waits for it: what a crash can lose stays bounded (2 x flush_rows).
    blocked = threading.Thread(target=cache.put, args=("d", 4))
    blocked.start()
    blocked.join(0.3)
    assert blocked.is_alive(), "a put filling the buffer did not wait for the write under way"
    cache.gate.set()
    blocked.join(30)
    cache.flush()  # the failed write's entries went back to the buffer: everything lands
    assert set(ObjectStoreCache(uri).get_many(["a", "b", "c", "d"])) == {"a", "b", "c", "d"}

    reader = ObjectStoreCache(uri)
    assert reader.get_many(["e"]) == {}
    writer = ObjectStoreCache(uri, flush_rows=1)
    writer.put("e", 5)
    writer.flush()
    assert reader.get_many(["e"])["e"].value == 5  # a segment written after the reader first listed


def test_a_repeated_failure_keeps_its_latest_reason_but_never_hides_an_answer(tmp_path: Path) -> None:
    from ai_assets import ResultCache

    for cache in (ResultCache(tmp_path / "c.sqlite"), ObjectStoreCache(f"file://{tmp_path}/j", flush_rows=1)):
        cache.put("k", error="HTTP 500")
        cache.put("k", error="HTTP 503")
        assert cache.get_many(["k"], include_errors=True)["k"].error == "HTTP 503"
        cache.put("k", {"ok": True})
        cache.put("k", error="HTTP 429")
        assert cache.get_many(["k"], include_errors=True)["k"].value == {"ok": True}
        cache.close()
