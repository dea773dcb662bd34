"""The stand-in cluster, for real: PostgreSQL instance, daemon with the queued run coordinator, Celery workers on
Redis, tables on an S3-compatible server, the journal in Postgres. A 6-partition backfill of prompt + embed through
the daemon; one Celery worker process is SIGKILLed while it sends requests; Dagster retries the run. Then: every
partition materialized, every row exactly once, calls paid at most rows + concurrency x killed runs, the journal
holds every answer, the LLM runs never exceeded their tag limit, and the API key is nowhere in logs or events.
A second backfill loses a whole Celery worker (its main process and pool, as when a node goes): the executor sees
the worker stop answering pings, fails its step, and the retried run completes the backfill within minutes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from ai_assets.dagster import DeltaIOManager, LanceDBIOManager
from ai_assets.runtime.pg import connect
from ai_assets.testing import FakeOpenAIServer
from tests.services import S3_KEY, S3_REGION, S3_SECRET

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.long]
ROOT = Path(__file__).resolve().parents[1]
DAYS = [f"2024-11-0{d}" for d in range(1, 7)]
ROWS = 40  # per day
CONCURRENCY = 4
RUN_LIMIT = 3  # deploy/cluster/dagster.yaml: runs tagged ai_assets/pool=llm
SECRET = "sk-cluster-secret-never-logged"
LOST_AFTER_S = 15  # AI_ASSETS_CELERY_LOST_AFTER_S: a step fails once its worker has been silent this long
VISIBILITY_S = 30  # AI_ASSETS_CELERY_VISIBILITY_TIMEOUT_S: a taken, unstarted step returns to the queue
ASSETS = ["reviews", "review_insights", "review_embeddings"]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(latency=0.15) as server:
        yield server


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, fake: FakeOpenAIServer) -> Iterator[dict[str, Any]]:
    folder = tmp_path_factory.mktemp("cluster")
    env = os.environ | {
        "OPENAI_BASE_URL": fake.base_url, "OPENAI_API_KEY": SECRET, "OPENAI_MODEL": "gpt-4o-mini",
        "OPENAI_EMBEDDING_MODEL": "text-embedding-3-small", "OPENAI_RPM": "3000", "AI_ASSETS_START": DAYS[0],
        "AI_ASSETS_END": "2024-11-07", "AI_ASSETS_CONCURRENCY": str(CONCURRENCY),
        "AI_ASSETS_CELERY_LOST_AFTER_S": str(LOST_AFTER_S), "AI_ASSETS_CELERY_VISIBILITY_TIMEOUT_S": str(VISIBILITY_S)}
    command = [sys.executable, str(ROOT / "deploy" / "cluster" / "local.py")]
    up = [*command, "up", "--dir", str(folder), "--workers", "2", "--owner", str(os.getpid())]
    started = subprocess.run(up, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield json.loads((folder / "state.json").read_text())
    finally:
        subprocess.run([*command, "down", "--dir", str(folder)], cwd=ROOT, timeout=120, check=False)


def graphql(base: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    request = urllib.request.Request(f"{base}/graphql", headers={"Content-Type": "application/json"},
                                     data=json.dumps({"query": query, "variables": variables or {}}).encode())
    with urllib.request.urlopen(request, timeout=60) as response:
        body = json.loads(response.read())
    assert "errors" not in body, body
    return body["data"]  # type: ignore[no-any-return]


LAUNCH = """mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}"""
BACKFILL = """query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) { ... on PartitionBackfill { status } }
}"""


def seed(state: dict[str, Any], round: int = 0) -> None:
    import boto3  # type: ignore[import-untyped]

    s3 = boto3.client("s3", endpoint_url=state["services"]["s3"]["url"], aws_access_key_id=S3_KEY,
                      aws_secret_access_key=S3_SECRET, region_name=S3_REGION)
    for day in DAYS:
        body = "".join(json.dumps({"review_id": f"{day}-{i}", "product": f"phone {i % 5}",
                                   "text": f"Review {i} of {day}: the battery lasts {i + round * 100} hours."}) + "\n"
                       for i in range(ROWS))
        s3.put_object(Bucket="lake", Key=f"reviews/{day}.jsonl", Body=body.encode())


def sending_worker_process(state: dict[str, Any], port: int) -> int | None:
    """A Celery pool process (a child of a worker) with an open connection to the fake server."""
    workers = [pid for name, pid in state["processes"].items() if name.startswith("worker")]
    children = [int(c) for w in workers
                for c in Path(f"/proc/{w}/task/{w}/children").read_text().split() if Path(f"/proc/{w}").exists()]
    connected = _inodes_connected_to(port)
    for child in children:
        try:
            links = [os.readlink(f) for f in Path(f"/proc/{child}/fd").iterdir()]
        except OSError:
            continue
        if any(link.startswith("socket:[") and int(link[8:-1]) in connected for link in links):
            return child
    return None


def _inodes_connected_to(port: int) -> set[int]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port == port and fields[3] == "01":  # ESTABLISHED
                inodes.add(int(fields[9]))
    return inodes


def wait_for(what: str, check: Any, timeout_s: float, state: dict[str, Any]) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    logs = Path(state["folder"]) / "logs"
    tails = "\n".join(f"== {log.name}\n{log.read_text(errors='replace')[-2500:]}" for log in sorted(logs.glob("*.log")))
    raise AssertionError(f"timed out waiting for {what}\n{tails}")


def launch(base: str) -> str:
    params = {"partitionNames": DAYS, "assetSelection": [{"path": [a]} for a in ASSETS],
              "tags": [{"key": "ai_assets/pool", "value": "llm"}]}
    launched = graphql(base, LAUNCH, {"params": params})["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    return str(launched["backfillId"])


def wait_for_backfill(state: dict[str, Any], backfill_id: str, timeout_s: float) -> str:
    def finished() -> str | None:
        status = graphql(state["webserver"], BACKFILL, {"id": backfill_id})["partitionBackfillOrError"]["status"]
        return status if status not in ("REQUESTED", "CANCELING", "FAILING") else None

    return str(wait_for("the backfill", finished, timeout_s, state))


def check_runs(state: dict[str, Any], backfill_id: str, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every partition materialized, the killed run failed and its retry succeeded, at most RUN_LIMIT LLM runs at
    once. Returns the failed runs."""
    for key, value in state["env"].items():
        monkeypatch.setenv(key, value)
    with dg.DagsterInstance.get() as instance:
        records = instance.get_run_records(dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
        runs = {r.dagster_run.run_id: r for r in records}
        failed = [r for r in records if r.dagster_run.status == dg.DagsterRunStatus.FAILURE]
        for asset in ASSETS:
            assert instance.get_materialized_partitions(dg.AssetKey(asset)) == set(DAYS), asset
        assert len(failed) >= 1, [r.dagster_run.status for r in records]
        retries = [r for r in records if r.dagster_run.tags.get("dagster/parent_run_id") in runs]
        assert retries and all(r.dagster_run.status == dg.DagsterRunStatus.SUCCESS for r in retries)
        spans = [(r.start_time, r.end_time) for r in records if r.start_time and r.end_time]
        peak = max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans)
        assert peak <= RUN_LIMIT, peak
        assert all(r.dagster_run.status in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE)
                   for r in records), [r.dagster_run.status for r in records]  # nothing left STARTED
    return failed


def check_tables(state: dict[str, Any], hours_offset: int) -> None:
    """Every row exactly once in Delta and LanceDB, each an answer to this round's reviews."""
    rows = ROWS * len(DAYS)
    endpoint = state["services"]["s3"]["url"]
    delta = DeltaIOManager(root="s3://lake/tables/delta", storage_options={
        "AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET, "AWS_ENDPOINT_URL": endpoint,
        "AWS_REGION": S3_REGION, "AWS_ALLOW_HTTP": "true"}).store(dg.AssetKey("review_insights"), {}).read()
    lance = LanceDBIOManager(root="s3://lake/tables/lancedb", storage_options={
        "aws_access_key_id": S3_KEY, "aws_secret_access_key": S3_SECRET, "aws_endpoint": endpoint,
        "aws_region": S3_REGION, "allow_http": "true"}).store(dg.AssetKey("review_embeddings"), {}).read()
    for table, column in ((delta, "review_insights"), (lance, "review_embeddings")):
        ids = table.column("review_id").to_pylist()
        assert len(ids) == rows and len(set(ids)) == rows, column  # every row exactly once
        assert sorted(set(table.column("_partition").to_pylist())) == DAYS
        assert table.column(column).null_count == 0, column
        texts = table.column("text").to_pylist()
        assert all(f"lasts {int(i.rsplit('-', 1)[1]) + hours_offset} hours" in t
                   for i, t in zip(ids, texts, strict=True)), column


def answered_rows(state: dict[str, Any]) -> int:
    journal = connect(state["env"]["AI_ASSETS_JOURNAL"])
    with journal.cursor() as cursor:
        cursor.execute("SELECT to_regclass('ai_assets_journal')")
        if cursor.fetchone()[0] is None:  # no run has written yet
            journal.close()
            return 0
        cursor.execute("SELECT count(*) FROM ai_assets_journal WHERE error IS NULL AND value IS NOT NULL "
                       "AND key NOT LIKE 'calibration:%%'")
        count = int(cursor.fetchone()[0])
    journal.close()
    return count


def backfill_until_sending(state: dict[str, Any], fake: FakeOpenAIServer, round: int) -> tuple[str, int, int]:
    """Seed this round's reviews, launch the backfill and wait until a third of its rows are answered: the
    backfill's id, the journal's answers before it, and a Celery pool process with requests in flight."""
    seed(state, round)
    fake.reset()
    answered = answered_rows(state)
    backfill_id = launch(state["webserver"])
    wait_for("requests", lambda: fake.stats().chat_requests >= ROWS * len(DAYS) // 3, 300, state)
    port = int(fake.base_url.rsplit(":", 1)[1].split("/")[0])
    pool = wait_for("a worker sending requests", lambda: sending_worker_process(state, port), 60, state)
    return backfill_id, answered, pool


def test_backfill_on_the_cluster_survives_a_killed_worker(cluster: dict[str, Any], fake: FakeOpenAIServer,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    state = cluster
    rows = ROWS * len(DAYS)
    # Kill a Celery pool process while it has requests in flight (a third of the rows answered by then).
    backfill_id, answered, victim = backfill_until_sending(state, fake, round=0)
    os.kill(victim, signal.SIGKILL)
    killed_at = fake.stats().chat_requests

    status = wait_for_backfill(state, backfill_id, 600)
    assert status in ("COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED"), status
    failed = check_runs(state, backfill_id, monkeypatch)

    stats = fake.stats()
    killed_runs = len(failed)
    print(f"runs failed {killed_runs}, killed pid {victim} at {killed_at} requests; "
          f"paid: {stats.chat_requests} prompts and {stats.embedding_inputs} embedding inputs for {rows} rows; "
          f"backfill {status}")
    assert stats.chat_requests <= rows + CONCURRENCY * killed_runs, (stats.chat_requests, killed_at)
    assert stats.embedding_inputs <= rows + ROWS * killed_runs, stats.embedding_inputs
    assert stats.rate_limited == 0
    check_tables(state, 0)
    assert answered_rows(state) - answered == 2 * rows  # every answer and every vector

    events = connect(state["env"]["DAGSTER_POSTGRES_URL"])
    with events.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM event_logs WHERE event LIKE %s", (f"%{SECRET}%",))
        assert cursor.fetchone()[0] == 0
    events.close()
    for path in Path(state["folder"]).rglob("*"):
        if path.is_file() and path.stat().st_size < 50_000_000:
            assert SECRET.encode() not in path.read_bytes(), path


def worker_of(state: dict[str, Any], pool_process: int) -> str:
    """The name of the Celery worker whose pool ``pool_process`` belongs to."""
    parent = int(Path(f"/proc/{pool_process}/stat").read_text().rsplit(")", 1)[1].split()[1])
    return next(name for name, pid in state["processes"].items() if pid == parent)


def test_backfill_on_the_cluster_survives_a_lost_worker(cluster: dict[str, Any], fake: FakeOpenAIServer,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A whole worker SIGKILLed (main process and pool: its process group) while it sends requests. Nothing of it
    reports the loss; the executor's pings do, within LOST_AFTER_S, and the run is retried on the other worker."""
    state = cluster
    rows = ROWS * len(DAYS)
    backfill_id, answered, pool = backfill_until_sending(state, fake, round=1)  # new reviews: none journalled
    name = worker_of(state, pool)
    os.killpg(state["processes"][name], signal.SIGKILL)
    killed_at, lost_at = fake.stats().chat_requests, time.monotonic()

    status = wait_for_backfill(state, backfill_id, 600)
    recovered_s = time.monotonic() - lost_at
    assert status in ("COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED"), status
    failed = check_runs(state, backfill_id, monkeypatch)
    stats = fake.stats()
    print(f"lost {name} at {killed_at} requests; backfill {status} {recovered_s:.0f} s later; runs failed "
          f"{len(failed)}; paid: {stats.chat_requests} prompts for {rows} rows")
    assert recovered_s < 300, recovered_s
    assert stats.chat_requests <= rows + CONCURRENCY * len(failed), (stats.chat_requests, killed_at)
    check_tables(state, 100)
    assert answered_rows(state) - answered == 2 * rows
