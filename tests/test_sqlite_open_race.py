"""Processes opening one new SQLite spend ledger at once all open it. A ledger is opened by each run that records
its spend and by the automation sensor's tick; SQLite answers ``PRAGMA journal_mode=WAL`` with SQLITE_BUSY at
once, without the busy handler, while another connection holds a lock during the change (sqlite.org/wal.html,
"Activating And Configuring WAL Mode"; sqlite3_busy_handler: the handler is not always invoked). The journal had
this race (tests/test_semantic_review.py); the ledger opened its file the same way."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

from ai_assets.runtime.ledger import open_ledger


def _open(path: str, barrier: Any, errors: Any) -> None:
    barrier.wait()
    try:
        open_ledger(path).close()
    except Exception as error:  # what failed is what the test reports
        errors.put(f"{type(error).__name__}: {error}")


def test_eight_processes_opening_a_new_ledger_at_once_all_open_it(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    failures: list[str] = []
    for trial in range(30):
        barrier, errors = context.Barrier(8), context.Queue()
        path = str(tmp_path / f"ledger-{trial}.sqlite")
        workers = [context.Process(target=_open, args=(path, barrier, errors)) for _ in range(8)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
        while not errors.empty():
            failures.append(errors.get())
    assert not failures, (len(failures), failures[:3])
