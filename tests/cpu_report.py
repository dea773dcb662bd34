"""CPU seconds per test (this process and the children it waited for), to see where a 2-core run's time goes:
``pytest -p tests.cpu_report`` writes ``cpu-report.<worker>.tsv`` (test id, CPU s, wall s) to $AI_ASSETS_CPU_REPORT
(a folder). Wall time hides CPU: four workers on two cores wait on each other."""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def _cpu() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    folder = os.environ.get("AI_ASSETS_CPU_REPORT")
    cpu, wall = _cpu(), time.monotonic()
    yield
    if folder:
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        with (Path(folder) / f"cpu-report.{worker}.tsv").open("a") as sink:
            sink.write(f"{item.nodeid}\t{_cpu() - cpu:.1f}\t{time.monotonic() - wall:.1f}\n")
