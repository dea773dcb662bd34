"""The services the tests start (PostgreSQL, Redis) stop when the process that started them dies, even by SIGKILL
with no teardown: pg_ctl and redis-server detach from their starter (PostgreSQL docs, "pg_ctl start": the server
runs in the background; redis.conf "daemonize yes"), so nothing else would stop them. Seen: a test run cut by a
timeout left a PostgreSQL running after the session."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.services import alive

ROOT = Path(__file__).resolve().parents[1]
STARTER = """
import sys, tempfile
from pathlib import Path
from tests.services import start_postgres, start_redis
service = start_postgres() if sys.argv[1] == "postgres" else start_redis(Path(tempfile.mkdtemp()))
print(service.pid, flush=True)
import time
time.sleep(600)
"""


@pytest.mark.parametrize("kind", ["postgres", "redis"])
def test_a_service_stops_when_its_starter_is_killed(kind: str) -> None:
    starter = subprocess.Popen([sys.executable, "-c", STARTER, kind], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert starter.stdout is not None
    pid = int(starter.stdout.readline())
    assert alive(pid)
    starter.send_signal(signal.SIGKILL)  # no teardown runs
    starter.wait(30)
    deadline = time.monotonic() + 60
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive(pid), f"{kind} (pid {pid}) outlived the process that started it"


def test_a_service_started_for_nobody_outlives_its_starter() -> None:
    """`scripts/cluster up` starts PostgreSQL and exits; the cluster runs until `down`. CI saw the guard stop the
    cluster's PostgreSQL the moment `up` returned, and both cluster tests failed on a database shutting down."""
    started = subprocess.run([sys.executable, "-c", "from tests.services import start_postgres\n"
                              "print(start_postgres(owner=None).pid)"], cwd=ROOT, capture_output=True, text=True,
                             timeout=120, check=True)
    pid = int(started.stdout.split()[-1])
    try:
        time.sleep(2)  # the guard polls every 0.5 s
        assert alive(pid), "PostgreSQL started with owner=None stopped when its starter exited"
    finally:
        os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + 30
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)


def test_a_process_group_that_ignores_sigterm_is_killed_with_its_children() -> None:
    """`dagster dev` ignores SIGINT/SIGTERM when started in the background (the brief; seen: a `dagster dev`,
    its code server and its daemon left running after a killed test run), and its children are its process group:
    the guard signals the group and follows with SIGKILL."""
    starter = subprocess.Popen([sys.executable, "-c", GROUP_STARTER], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert starter.stdout is not None
    leader, child = (int(p) for p in starter.stdout.readline().split())
    starter.send_signal(signal.SIGKILL)
    starter.wait(30)
    deadline = time.monotonic() + 60
    while (alive(leader) or alive(child)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive(leader) and not alive(child)


GROUP_STARTER = """
import signal, subprocess, sys, time
from tests.services import guard
code = "import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); " \\
       "c = subprocess.Popen([sys.executable, '-c', 'import signal, time; signal.signal(signal.SIGTERM, " \\
       "signal.SIG_IGN); time.sleep(600)']); print(c.pid, flush=True); time.sleep(600)"
leader = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True)
child = leader.stdout.readline().strip()
guard(leader.pid, group=True)
print(leader.pid, child, flush=True)
time.sleep(600)
"""
