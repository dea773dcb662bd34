"""Processes opening one new SQLite file at once all open it: the journal (two runs of one partition started
together: a retry while the first still runs, two Dagster run workers) and the spend ledger (each run recording its
spend, the automation sensor's tick). SQLite answers ``PRAGMA journal_mode=WAL`` with SQLITE_BUSY at once, without
calling the busy handler, while another connection holds a lock during the change (sqlite.org/wal.html,
"Activating And Configuring WAL Mode"; sqlite3_busy_handler: the handler is not always invoked). Both failed with
"database is locked": the journal in a review of tests/test_semantic_rows.py's two-runs test, the ledger in its
red-first run of this test."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ai_assets.runtime.cache.sqlite import ResultCache
from ai_assets.runtime.ledger import open_ledger

OPENERS: dict[str, Callable[[str], Any]] = {"journal": ResultCache, "ledger": open_ledger}


def _open(kind: str, path: str, barrier: Any, errors: Any) -> None:
    barrier.wait()
    try:
        OPENERS[kind](path).close()
    except Exception as error:  # what failed is what the test reports
        errors.put(f"{type(error).__name__}: {error}")


@pytest.mark.parametrize("kind", sorted(OPENERS))
def test_eight_processes_opening_a_new_file_at_once_all_open_it(kind: str, tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    failures: list[str] = []
    for trial in range(40):
        barrier, errors = context.Barrier(8), context.Queue()
        path = str(tmp_path / f"{kind}-{trial}.sqlite")
        workers = [context.Process(target=_open, args=(kind, path, barrier, errors)) for _ in range(8)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
        while not errors.empty():
            failures.append(errors.get())
    assert not failures, (len(failures), failures[:3])
