"""The Celery executor's watch over its workers, against real Celery workers on a real Redis, with a fake clock
(the minutes between steps of a run pass in an instant; the pings are real).

What it models: Celery's remote-control ``ping`` (docs.celeryq.dev, "Workers Guide: ping") is answered by every
running worker that receives it within the timeout, and by nothing from a worker that is gone or stalled; an old
answer says nothing of a worker's state now. So a worker is judged on pings sent to it, never on the age of its
last answer: one that ran a step of the run long ago and starts another is alive, one whose process is killed
is lost once it has failed pings for ``lost_after_s``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ai_assets.dagster.celery import WorkerWatch
from tests.services import Service, stop_pid

pytestmark = pytest.mark.slow
HOST = "watchtest"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def start_worker(redis: Service, name: str, folder: Path) -> subprocess.Popen[bytes]:
    log = (folder / f"{name}.log").open("ab")
    return subprocess.Popen([sys.executable, "-m", "celery", "-b", redis.url, "worker", "-n", f"{name}@{HOST}",
                             "-P", "solo", "-c", "1", "--without-mingle", "--without-gossip", "-l", "INFO"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


@pytest.fixture
def workers(redis: Service, tmp_path: Path) -> Iterator[tuple[Any, dict[str, subprocess.Popen[bytes]]]]:
    from celery import Celery

    app = Celery(broker=redis.url)
    processes = {name: start_worker(redis, name, tmp_path) for name in ("w1", "w2")}
    try:
        deadline = time.monotonic() + 60
        wanted = {f"{name}@{HOST}" for name in processes}
        while time.monotonic() < deadline:
            answered = {n for reply in app.control.ping(destination=sorted(wanted), timeout=1.0) or [] for n in reply}
            if answered == wanted:
                break
        else:
            logs = "\n".join(p.read_text(errors="replace")[-2000:] for p in tmp_path.glob("*.log"))
            raise AssertionError(f"celery workers did not answer pings\n{logs}")
        yield app, processes
    finally:
        for process in processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGCONT)
                stop_pid(process.pid, group=True)
        app.close()


def test_a_worker_that_answered_long_ago_is_pinged_not_judged(
        workers: tuple[Any, dict[str, subprocess.Popen[bytes]]]) -> None:
    """w1 ran the run's first step and answered; 100 s later (more than ``lost_after_s``) it starts the next step
    while w2's step has just had the round's ping. w1 is alive: it is asked, not judged on its old answer."""
    app, _ = workers
    clock = Clock()
    watch = WorkerWatch(app, ping_every_s=10, lost_after_s=15, clock=clock)
    assert watch.lost(f"w1@{HOST}") is None  # pinged, answered
    clock.now += 95
    assert watch.lost(f"w2@{HOST}") is None  # a round for w2's step
    clock.now += 5  # w1's next step, within the round's ping_every_s
    for _ in range(4):  # the execution loop polls every started step, rounds every 10 s
        assert watch.lost(f"w1@{HOST}") is None
        assert watch.lost(f"w2@{HOST}") is None
        clock.now += 10


def test_a_stalled_worker_that_answers_again_is_not_lost_and_a_killed_one_is(
        workers: tuple[Any, dict[str, subprocess.Popen[bytes]]]) -> None:
    """w1 stalls (SIGSTOP: no answer, as a worker starved of CPU) for one round and answers the next: alive, and
    its silence starts afresh. w2 is killed with its pool: lost once its unanswered pings span ``lost_after_s``,
    not before, and the error's silence is the time over which it failed pings."""
    app, processes = workers
    clock = Clock()
    watch = WorkerWatch(app, ping_every_s=10, lost_after_s=15, clock=clock)
    w1, w2 = f"w1@{HOST}", f"w2@{HOST}"
    assert watch.lost(w1) is None and watch.lost(w2) is None
    os.killpg(processes["w1"].pid, signal.SIGSTOP)
    os.killpg(processes["w2"].pid, signal.SIGKILL)
    processes["w2"].wait(timeout=10)
    verdicts: list[tuple[float | None, float | None]] = []
    for round in range(4):
        clock.now += 10
        if round == 1:
            os.killpg(processes["w1"].pid, signal.SIGCONT)
        verdicts.append((watch.lost(w1), watch.lost(w2)))
    assert [alive for alive, _ in verdicts] == [None] * 4
    assert [gone for _, gone in verdicts] == [None, None, 20.0, 30.0]  # pings failed at +10, +20, +30, +40
