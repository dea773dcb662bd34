"""Crash-safe, incremental partitions: every test counts calls at the fake OpenAI-compatible server."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pytest

from ai_assets import RetryPolicy, RunOptions
from ai_assets.dagster import (
    OpenAICompatibleResource,
    ParquetIOManager,
    ResultCacheResource,
    ingest_asset,
    prompt_asset,
)
from ai_assets.storage.base import with_partition
from ai_assets.storage.delta import DeltaStore
from ai_assets.storage.lance import LanceStore
from ai_assets.storage.parquet import ParquetStore
from ai_assets.testing import FakeOpenAIServer, Fault
from tests.kinds import TABLE_STORE_KINDS, local_io_manager

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
DAGSTER = str(Path(sys.executable).with_name("dagster"))


def write_rows(folder: Path, partition: str, n: int, start: int = 0, tag: str = "row") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / f"{partition}.jsonl").open("a") as handle:
        for i in range(start, start + n):
            handle.write(json.dumps({"id": i, "text": f"{tag} {partition} {i}"}) + "\n")


IN_PROCESS = json.dumps({"execution": {"config": {"in_process": {}}}})


def cli(tmp_path: Path, server: FakeOpenAIServer, partition: str, backend: str = "parquet",
        home_name: str = "home", steps: str = "in_process", **env: str) -> subprocess.Popen[str]:
    """``dagster asset materialize`` of ``partition``. ``steps="multiprocess"`` (Dagster's default executor, a
    process per step, as a user's definitions run) for a run the test kills; the others run their steps in the
    run's process, which costs a third of the process starts."""
    home = tmp_path / home_name
    if not home.exists():
        home.mkdir()
        shutil.copy(ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
        # Create the SQLite schema once: concurrent first runs would race to create it inside Dagster.
        with dg.DagsterInstance.from_config(str(home)):
            pass
    environment = {**os.environ, "DAGSTER_HOME": str(home), "AI_ASSETS_OUT": str(tmp_path / "out"),
                   "RESUME_SOURCE": str(tmp_path / "src"), "RESUME_BACKEND": backend,
                   "OPENAI_BASE_URL": server.base_url, **env}
    return subprocess.Popen(
        [DAGSTER, "asset", "materialize", "-f", str(ROOT / "tests" / "resume_defs.py"), "--select", "*",
         "--partition", partition, *(["--config-json", IN_PROCESS] if steps == "in_process" else [])],
        cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)


def finish(process: subprocess.Popen[str]) -> None:
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-4000:]


@pytest.mark.parametrize(("journal", "bound"), [("sqlite", 8), ("postgres", 8), ("object_store", 2 * 64 + 8)])
def test_sigkill_mid_partition_then_cli_rerun_pays_only_for_what_was_lost(
    tmp_path: Path, server: FakeOpenAIServer, journal: str, bound: int, request: pytest.FixtureRequest
) -> None:
    """A kill of a streamed partition loses at most the requests in flight (8) with the SQLite or Postgres journal;
    with the object-store journal, also what it had not written yet: at most 2 x flush_rows (64) more (see the
    README's crash-safety table). The kill leaves the partition's previous version whole."""
    n, first = 1000, 100
    env: dict[str, str] = {}
    if journal == "object_store":
        env["RESUME_JOURNAL"] = f"file://{tmp_path}/journal"
    elif journal == "postgres":
        env["RESUME_JOURNAL"] = request.getfixturevalue("pg_url")
    write_rows(tmp_path / "src", "p1", first)  # a first version of the partition, then the day's other rows
    finish(cli(tmp_path, server, "p1", **env))
    store = ParquetStore(str(tmp_path / "out" / "parquet" / "answers"))
    previous = store.read(["p1"])
    write_rows(tmp_path / "src", "p1", n - first, start=first)
    server.set_latency(0.05)
    run = cli(tmp_path, server, "p1", steps="multiprocess", **env)
    deadline = time.monotonic() + 180
    while server.stats().chat_requests < n // 2:
        assert run.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.killpg(run.pid, signal.SIGKILL)  # the run process and its step process, mid-partition
    run.wait()
    at_kill = server.stats().chat_requests
    assert at_kill < n
    assert store.read(["p1"]).equals(previous)  # the killed run left the previous version whole

    finish(cli(tmp_path, server, "p1", **env))
    total = server.stats().chat_requests
    assert total <= n + bound, f"{total} calls for {n} rows (killed at {at_kill})"
    table = ParquetStore(str(tmp_path / "out" / "parquet" / "answers")).read(["p1"])
    assert table.num_rows == n
    assert sorted(table.column("id").to_pylist()) == list(range(n))
    assert table.column("answers").null_count == 0

    server.reset()
    finish(cli(tmp_path, server, "p1", **env))
    assert server.stats().chat_requests == 0
    assert ParquetStore(str(tmp_path / "out" / "parquet" / "answers")).read(["p1"]).equals(table)


def pipeline(tmp_path: Path, server: FakeOpenAIServer, template: str = "{text}",
             retry_failed_rows: bool = True) -> tuple[list[dg.AssetsDefinition], dict[str, Any]]:
    partitions = dg.StaticPartitionsDefinition(["p1"])
    raw = ingest_asset("raw", path=str(tmp_path / "src" / "{partition}.jsonl"), partitions_def=partitions)
    options = RunOptions(concurrency=8, on_error="null", retry=RetryPolicy(max_attempts=2, base_wait=0.01),
                         retry_failed_rows=retry_failed_rows)
    answers = prompt_asset("answers", raw, template=template, provider_key="llm", options=options,
                           partitions_def=partitions)
    resources = {"llm": OpenAICompatibleResource(model="fake", base_url=server.base_url, api_key="k"),
                 "ai_cache": ResultCacheResource(path=str(tmp_path / "cache.sqlite")),
                 "io_manager": ParquetIOManager(root=str(tmp_path / "out"))}
    return [raw, answers], resources


def materialize(assets: list[dg.AssetsDefinition], resources: dict[str, Any]) -> dict[str, Any]:
    result = dg.materialize(assets, partition_key="p1", resources=resources)
    assert result.success
    return {k: v.value for k, v in result.asset_materializations_for_node("answers")[0].metadata.items()}


def answers_table(tmp_path: Path) -> pa.Table:
    return ParquetStore(str(tmp_path / "out" / "answers")).read(["p1"])


def test_failed_rows_are_retried_alone(tmp_path: Path, server: FakeOpenAIServer) -> None:
    write_rows(tmp_path / "src", "p1", 180)
    write_rows(tmp_path / "src", "p1", 20, start=180, tag="fail-me")
    server.set_faults(Fault("500", match="fail-me", attempts=None))
    assets, resources = pipeline(tmp_path, server)
    first = materialize(assets, resources)
    assert first["ai/rows_with_errors"] == 20 and first["ai/rows_sent"] == 200
    assert server.stats().chat_requests == 180 + 20 * 2
    assert answers_table(tmp_path).column("answers").null_count == 20

    server.set_faults()
    server.reset()
    second = materialize(assets, resources)
    assert server.stats().chat_requests == 20
    assert set(server.stats().by_key) == {f"fail-me p1 {i}" for i in range(180, 200)}
    assert second["ai/rows_from_cache"] == 180 and second["ai/rows_with_errors"] == 0
    assert answers_table(tmp_path).column("answers").null_count == 0


def test_failed_rows_can_be_kept_final(tmp_path: Path, server: FakeOpenAIServer) -> None:
    write_rows(tmp_path / "src", "p1", 10)
    write_rows(tmp_path / "src", "p1", 2, start=10, tag="fail-me")
    server.set_faults(Fault("500", match="fail-me", attempts=None))
    assets, resources = pipeline(tmp_path, server, retry_failed_rows=False)
    materialize(assets, resources)
    server.set_faults()
    server.reset()
    again = materialize(assets, resources)
    assert server.stats().chat_requests == 0
    assert again["ai/rows_with_errors"] == 2
    errors = answers_table(tmp_path).column("answers_error").to_pylist()
    assert sum("HTTP 500" in (e or "") for e in errors) == 2


def test_only_changed_or_new_rows_are_sent(tmp_path: Path, server: FakeOpenAIServer) -> None:
    n = 200
    write_rows(tmp_path / "src", "p1", n)
    assets, resources = pipeline(tmp_path, server)
    materialize(assets, resources)
    assert server.stats().chat_requests == n
    before = answers_table(tmp_path)

    server.reset()
    materialize(assets, resources)  # nothing changed
    assert server.stats().chat_requests == 0
    assert answers_table(tmp_path).equals(before)

    changed, _ = pipeline(tmp_path, server, template="Answer briefly: {text}")
    materialize(changed, resources)  # a new prompt: every row again
    assert server.stats().chat_requests == n

    server.reset()
    write_rows(tmp_path / "src", "p1", 50, start=n)
    materialize(assets, resources)  # 50 appended rows under the first prompt
    assert server.stats().chat_requests == 50
    assert answers_table(tmp_path).num_rows == n + 50


WRITER = """
import sys, pyarrow as pa
from ai_assets.storage.base import with_partition
from ai_assets.storage.{module} import {cls}
store = {cls}({args})
version = int(sys.argv[1])
while True:
    version += 1
    rows = 50_000 + version
    table = pa.table({{"v": [version] * rows, "text": ["x" * 80] * rows}})
    store.write(with_partition(table, "p"), ["p"])
    print(version, flush=True)
"""

STORES = {
    "parquet": ("parquet", "ParquetStore", "{root!r}"),
    "delta": ("delta", "DeltaStore", "{root!r}"),
    "lancedb": ("lance", "LanceStore", "{root!r}, 't'"),
}


@pytest.mark.parametrize("backend", list(STORES))
def test_sigkill_during_a_write_keeps_the_previous_version(tmp_path: Path, backend: str) -> None:
    module, cls, args = STORES[backend]
    root = str(tmp_path / backend)
    code = WRITER.format(module=module, cls=cls, args=args.format(root=root))
    store = {"parquet": lambda: ParquetStore(root), "delta": lambda: DeltaStore(root),
             "lancedb": lambda: LanceStore(root, "t")}[backend]
    rng = random.Random(7)
    version = 0
    for _ in range(3):
        writer = subprocess.Popen([sys.executable, "-c", code, str(version)], stdout=subprocess.PIPE, text=True)
        assert writer.stdout is not None
        version = int(writer.stdout.readline())  # one complete write has landed
        time.sleep(rng.uniform(0.0, 0.4))
        writer.send_signal(signal.SIGKILL)
        rest, _ = writer.communicate()
        version = max([version, *(int(v) for v in rest.split())])
        table = store().read(["p"])
        versions = set(table.column("v").to_pylist())
        assert len(versions) == 1, f"a torn partition: versions {versions}"
        (landed,) = versions
        assert landed in (version, version + 1)  # the last complete write, or one that committed at the kill
        assert table.num_rows == 50_000 + landed
        version = landed
    store().write(with_partition(pa.table({"v": [0], "text": ["after"]}), "p"), ["p"])
    assert store().read(["p"]).column("text").to_pylist() == ["after"]
    if backend == "delta":
        DeltaStore(root).vacuum(retention_hours=0)
        assert DeltaStore(root).read(["p"]).num_rows == 1


@pytest.mark.parametrize("backend", TABLE_STORE_KINDS)
def test_two_partitions_at_once_into_one_table(tmp_path: Path, server: FakeOpenAIServer, backend: str) -> None:
    write_rows(tmp_path / "src", "p1", 120)
    write_rows(tmp_path / "src", "p2", 80)
    # One Dagster instance per run: what is under test is the shared table (and journal), not two processes
    # writing one SQLite run storage, which Dagster does not support well.
    runs = [cli(tmp_path, server, key, backend, home_name=f"home-{key}") for key in ("p1", "p2")]
    for run in runs:
        finish(run)
    table = local_io_manager(backend, tmp_path / "out").store(dg.AssetKey("answers"), {}).read()
    assert table.num_rows == 200
    pairs = list(zip(table.column("_partition").to_pylist(), table.column("id").to_pylist(), strict=True))
    assert len(set(pairs)) == 200
    assert server.stats().chat_requests == 200


def _journal_env(journal: str, tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    if journal == "object_store":
        return {"RESUME_JOURNAL": f"file://{tmp_path}/journal"}
    if journal == "postgres":
        return {"RESUME_JOURNAL": request.getfixturevalue("pg_url")}
    return {}


@pytest.mark.parametrize("journal", ["sqlite", "postgres", "object_store"])
def test_two_runs_of_one_partition_at_once_pay_at_most_n_plus_2c(
    tmp_path: Path, server: FakeOpenAIServer, journal: str, request: pytest.FixtureRequest
) -> None:
    """A re-launch while the first run is alive (or a sensor and a backfill overlapping): the rows each run claims
    in the journal are not sent by the other, which waits for their answers. Bound: N + 2 x C (C = 8)."""
    n = 1000
    env = _journal_env(journal, tmp_path, request)
    write_rows(tmp_path / "src", "p1", n)
    server.set_latency(0.1)  # 1,000 rows at 8 in flight: ~12 s of sending; both runs start together
    first = cli(tmp_path, server, "p1", home_name="home-a", **env)
    second = cli(tmp_path, server, "p1", home_name="home-b", **env)
    finish(first)
    finish(second)
    paid = server.stats().chat_requests
    print(f"two overlapping runs, {journal} journal: {paid} calls for {n} rows")
    assert paid <= n + 2 * 8, f"{paid} calls for {n} rows by two overlapping runs"
    table = ParquetStore(str(tmp_path / "out" / "parquet" / "answers")).read(["p1"])
    assert sorted(table.column("id").to_pylist()) == list(range(n))
    assert table.column("answers").null_count == 0


def test_a_run_waiting_on_a_killed_run_takes_its_rows_over(tmp_path: Path, server: FakeOpenAIServer) -> None:
    """The second run waits for rows the first holds; the first is SIGKILLed: its claims belong to a process of
    this host that no longer exists, so the second takes them at once and finishes the partition."""
    n = 1000
    write_rows(tmp_path / "src", "p1", n)
    server.set_latency(0.05)
    first = cli(tmp_path, server, "p1", home_name="home-a", steps="multiprocess")
    deadline = time.monotonic() + 180
    while server.stats().chat_requests < 50:
        assert first.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    second = cli(tmp_path, server, "p1", home_name="home-b")
    while server.stats().chat_requests < n // 2:
        assert first.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    started = time.monotonic()
    finish(second)
    assert time.monotonic() - started < 60  # no wait for the claims' expiry (60 s)
    paid = server.stats().chat_requests
    assert paid <= n + 2 * 8, f"{paid} calls for {n} rows"
    table = ParquetStore(str(tmp_path / "out" / "parquet" / "answers")).read(["p1"])
    assert sorted(table.column("id").to_pylist()) == list(range(n)) and table.column("answers").null_count == 0
