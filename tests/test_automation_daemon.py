"""Declarative Automation through Dagster's own daemon (``dagster-daemon run``), not by hand: a spending cap holds a
tick's runs and says why, raising the cap in the ledger releases them; a code change to a prompt requests a run,
which pays only for the rows whose request changed.

Models Dagster's documented behaviour (docs.dagster.io, "Declarative Automation": the automation condition sensor
evaluates each asset's condition every tick and launches runs for its true subset; "code_version_changed": true
when the asset's code version differs from the last evaluation's; "Arbitrary Python automation conditions":
evaluated in the code location with ``use_user_code_server=True``). The daemon launches each run in its own process,
against the fake OpenAI server on 127.0.0.1, which counts what it was sent.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from ai_assets.runtime.ledger import Spend, open_ledger
from ai_assets.testing import FakeOpenAIServer
from tests.services import guard

ROOT = Path(__file__).resolve().parents[1]
DAEMON = Path(sys.executable).with_name("dagster-daemon")
DEFINITIONS = '''
import dagster as dg
import pyarrow as pa
from ai_assets import Prices
from ai_assets.dagster import OpenAICompatibleResource, ParquetIOManager, ResultCacheResource, SpendCap, prompt_asset

PARTS = dg.StaticPartitionsDefinition(["a", "b"])
cap = SpendCap({ledger!r}, usd=1.0)


@dg.asset(partitions_def=PARTS,
          automation_condition=dg.AutomationCondition.missing() & ~dg.AutomationCondition.in_progress())
def reviews(context: dg.AssetExecutionContext) -> pa.Table:
    return pa.table({{"text": [f"{{context.partition_key}}: great phone", f"{{context.partition_key}}: bad battery"]}})


insights = prompt_asset(
    "insights", reviews, template={template!r}, output_column={output!r}, partitions_def=PARTS,
    prices=Prices(input_per_million=1_000_000.0),
    automation_condition=(dg.AutomationCondition.missing() | dg.AutomationCondition.code_version_changed())
    & ~dg.AutomationCondition.in_progress() & cap.condition())

defs = dg.Definitions(
    assets=[reviews, insights], sensors=[cap.sensor(minimum_interval_seconds=2)], executor=dg.in_process_executor,
    resources={{"llm": OpenAICompatibleResource(model="m", base_url={base_url!r}, api_key="unused"),
                "ai_cache": ResultCacheResource(path={journal!r}),
                "io_manager": ParquetIOManager(root={warehouse!r})}})
'''


class Deployment:
    """A DAGSTER_HOME, a workspace over one definitions file, and the daemon started and stopped by PID."""

    def __init__(self, tmp_path: Path, server: FakeOpenAIServer) -> None:
        self.home = tmp_path / "home"
        self.home.mkdir()
        (self.home / "dagster.yaml").write_text(  # runs in the daemon's process: no process start per run
            "telemetry:\n  enabled: false\nrun_launcher:\n  module: dagster._core.launcher.sync_in_memory_run_launcher"
            "\n  class: SyncInMemoryRunLauncher\n")
        self.code = tmp_path / "defs.py"
        self.ledger = str(tmp_path / "ledger.sqlite")
        self.fields = {"ledger": self.ledger, "base_url": server.base_url, "journal": str(tmp_path / "j.sqlite"),
                       "warehouse": str(tmp_path / "warehouse")}
        (tmp_path / "workspace.yaml").write_text(f"load_from:\n  - python_file: {self.code}\n")
        self.workspace = tmp_path / "workspace.yaml"
        self.log = tmp_path / "daemon.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._instance: dg.DagsterInstance | None = None

    def write(self, template: str = "Review: {text}", output: str = "insights") -> None:
        self.code.write_text(DEFINITIONS.format(template=template, output=output, **self.fields))

    def start(self) -> None:
        self.instance()  # its storage is created here, before the daemon opens it (SQLite schema creation races)
        env = {**os.environ, "DAGSTER_HOME": str(self.home), "PYTHONPATH": str(ROOT)}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen([str(DAEMON), "run", "-w", str(self.workspace)], env=env, cwd=ROOT,
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        guard(self.process.pid, group=True)  # also when this test run is killed and no teardown runs

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:  # the daemon may ignore SIGTERM while a tick runs
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(15)
        self.process = None

    def instance(self) -> dg.DagsterInstance:
        if self._instance is None:
            self._instance = dg.DagsterInstance.from_config(str(self.home))
        return self._instance

    def wait(self, what: str, done: Callable[[], bool], timeout_s: float = 300.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if done():
                return
            assert self.process is not None and self.process.poll() is None, self.log.read_text()[-3000:]
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting for {what}; daemon log:\n{self.log.read_text()[-3000:]}")


@pytest.fixture
def deployment(tmp_path: Path, server: FakeOpenAIServer) -> Iterator[Deployment]:
    made = Deployment(tmp_path, server)
    try:
        yield made
    finally:
        made.stop()


def _runs(instance: dg.DagsterInstance) -> list[Any]:
    return list(instance.get_runs())


def _held(instance: dg.DagsterInstance) -> str | None:
    """The budget's reason in the latest evaluation of ``insights`` (what the UI's automation history shows)."""
    records = instance.schedule_storage.get_auto_materialize_asset_evaluations(  # type: ignore[union-attr]
        key=dg.AssetKey("insights"), limit=1)
    if not records:
        return None
    stack = [records[0].get_evaluation_with_run_ids().evaluation]
    while stack:
        node = stack.pop()
        reason = (node.metadata or {}).get("ai/budget")
        if reason is not None and getattr(reason, "value", "") != "within budget":
            return str(reason.value)
        stack.extend(node.child_evaluations)
    return None


def test_the_daemon_holds_runs_over_the_cap_and_a_prompt_changed_in_code_pays_only_for_changed_requests(
        deployment: Deployment, server: FakeOpenAIServer) -> None:
    """One deployment, three rounds of the daemon. 1: this month's $1 cap is already spent: a tick holds both
    partitions of insights and says why; the cap raised in the ledger (the CLI) releases them at the next tick:
    4 rows, 4 requests. 2: the output column renamed in the code (a new code version, the same requests): the
    daemon requests the runs, the journal answers every row, 0 requests. 3: the template edited: 4 requests, one per
    row whose request changed."""
    ledger = open_ledger(deployment.ledger)
    ledger.record([Spend("elsewhere", "x", "r0", 1.0, time.time())])
    ledger.close()
    deployment.write()
    deployment.start()
    instance = deployment.instance()
    deployment.wait("a tick that holds insights", lambda: _held(instance) is not None)
    reason = _held(instance)
    assert reason is not None and "2 held" in reason and "spent of $1" in reason
    assert _materialized(instance) == [] and server.stats().chat_requests == 0
    subprocess.run([sys.executable, "-m", "ai_assets.dagster.budget", deployment.ledger, "default", "1000"],
                   check=True, cwd=ROOT, capture_output=True)
    deployment.wait("insights materialized", lambda: len(_materialized(instance)) == 2 and _idle(instance))
    assert server.stats().chat_requests == 4
    deployment.stop()
    for number, (template, output, sent) in enumerate([("Review: {text}", "insight", 0),
                                                       ("Customer review: {text}", "insight", 4)], start=2):
        before = server.stats().chat_requests
        deployment.write(template, output)
        deployment.start()
        deployment.wait(f"round {number}: {template!r} -> {output}",
                        lambda n=number: len(_materialized(instance)) == 2 * n and _idle(instance))
        deployment.stop()
        assert server.stats().chat_requests - before == sent, (template, output)


def _materialized(instance: dg.DagsterInstance) -> list[str | None]:
    records = instance.fetch_materializations(dg.AssetKey("insights"), limit=1000).records
    return [r.partition_key for r in records]


def _idle(instance: dg.DagsterInstance) -> bool:
    return all(r.is_finished for r in instance.get_runs())
