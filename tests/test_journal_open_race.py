"""A process that opens a SQLite journal while another process upgrades it gets a working journal.

Models SQLite's documented locking (sqlite.org/lang_transaction.html and wal.html: in WAL mode readers go on while
one connection holds the write lock; ``BEGIN IMMEDIATE`` takes that lock at once). An upgrade that reads the
columns outside the lock and adds the missing ones after waiting for it adds them a second time: CI saw two
overlapping runs fail with "duplicate column name: tokens_out". The test holds the write lock itself, lets the
opening process reach its wait, upgrades the journal, and releases: the opener must find the columns there.
"""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import time
from pathlib import Path

from ai_assets.runtime.cache.sqlite import ResultCache

OLD_SCHEMA = ("CREATE TABLE results (key TEXT PRIMARY KEY, value TEXT, error TEXT, created REAL NOT NULL, "
              "used REAL NOT NULL)")
NEW_COLUMNS = {"run": "TEXT", "tokens_in": "INTEGER NOT NULL DEFAULT 0", "tokens_out": "INTEGER NOT NULL DEFAULT 0"}


def _open(path: str, errors: object) -> None:
    try:
        ResultCache(path).close()
    except Exception as exc:  # the failure is the finding
        errors.put(repr(exc))  # type: ignore[attr-defined]


def _has_open(pid: int, path: str) -> bool:
    folder = Path(f"/proc/{pid}/fd")
    try:
        return any(os.path.realpath(fd) == os.path.realpath(path) for fd in folder.iterdir())
    except OSError:
        return False


def test_a_journal_opened_while_another_process_upgrades_it_is_not_upgraded_twice(tmp_path: Path) -> None:
    path = str(tmp_path / "journal.sqlite")
    with sqlite3.connect(path) as db:  # a journal written by an earlier version
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(OLD_SCHEMA)
        db.execute("CREATE TABLE claims (key TEXT PRIMARY KEY, owner TEXT NOT NULL, expires REAL NOT NULL)")
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process's upgrade, under way
    context = multiprocessing.get_context("spawn")
    errors = context.Queue()
    opener = context.Process(target=_open, args=(path, errors))
    opener.start()
    deadline = time.monotonic() + 60
    while not _has_open(opener.pid or 0, path) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # from opening the file to waiting on the lock: a few statements, none of them a write
    for name, kind in NEW_COLUMNS.items():
        holder.execute(f"ALTER TABLE results ADD COLUMN {name} {kind}")
    holder.execute("COMMIT")
    holder.close()
    opener.join(90)
    found = [errors.get() for _ in range(errors.qsize())]
    assert opener.exitcode == 0 and found == [], found
