"""Opening a SQLite file that several processes share (the journal, the spend ledger) in WAL mode."""

from __future__ import annotations

import sqlite3
import time


def wal_mode(db: sqlite3.Connection, timeout_s: float) -> None:
    """WAL mode, waiting (at most ``timeout_s``) for processes that open the same new file at once: SQLite
    answers the journal-mode change with SQLITE_BUSY at once, without its busy handler, while another connection
    holds a lock (sqlite3_busy_handler: the handler is not always invoked), so two runs starting together failed
    with "database is locked"."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
