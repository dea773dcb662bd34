"""The journal in one SQLite file (WAL mode): every ``put_many`` is one committed transaction."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ai_assets.runtime.cache import CachedResult, Entry

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    key TEXT PRIMARY KEY,
    value TEXT,
    error TEXT,
    created REAL NOT NULL,
    used REAL NOT NULL
)
"""
_COLUMNS = {"run": "TEXT", "tokens_in": "INTEGER NOT NULL DEFAULT 0", "tokens_out": "INTEGER NOT NULL DEFAULT 0"}
_BATCH = 500
# An answer replaces anything; a failure replaces only a failure (so the latest reason shows), never an answer.
_UPSERT = """
INSERT INTO results (key, value, error, run, tokens_in, tokens_out, created, used) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(key) DO UPDATE SET value=excluded.value, error=excluded.error, run=excluded.run,
    tokens_in=excluded.tokens_in, tokens_out=excluded.tokens_out, created=excluded.created, used=excluded.used
WHERE excluded.error IS NULL OR results.error IS NOT NULL
"""


class ResultCache:
    """Results by key in a SQLite file; several processes on one machine may share it (writers take turns)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=60, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # a commit survives a killed process (not a power cut)
        self._db.execute(_SCHEMA)
        present = {row[1] for row in self._db.execute("PRAGMA table_info(results)")}
        for name, kind in _COLUMNS.items():  # journals written by earlier versions gain the new columns
            if name not in present:
                self._db.execute(f"ALTER TABLE results ADD COLUMN {name} {kind}")

    def get_many(self, keys: Iterable[str], *, include_errors: bool = False) -> dict[str, CachedResult]:
        wanted = list(dict.fromkeys(keys))
        found: dict[str, CachedResult] = {}
        with self._lock:
            for start in range(0, len(wanted), _BATCH):
                chunk = wanted[start:start + _BATCH]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    f"SELECT key, value, error, run, tokens_in, tokens_out FROM results WHERE key IN ({marks})", chunk)
                for key, value, error, run, tokens_in, tokens_out in rows:
                    if error is None or include_errors:
                        found[key] = CachedResult(None if value is None else json.loads(value), error, run,
                                                  tokens_in, tokens_out)
        return found

    def put_many(self, entries: Sequence[Entry]) -> None:
        if not entries:
            return
        now = time.time()
        rows = [(e.key, None if e.error is not None else json.dumps(e.value, separators=(",", ":")), e.error, e.run,
                 e.tokens_in, e.tokens_out, now, now) for e in entries]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(_UPSERT, rows)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def put(self, key: str, value: Any = None, *, error: str | None = None, run: str | None = None) -> None:
        """One entry (see ``put_many``)."""
        self.put_many([Entry(key, value, error, run)])

    def flush(self) -> None:
        """Nothing to do: every ``put_many`` is a committed transaction."""

    def __len__(self) -> int:
        with self._lock:
            (count,) = self._db.execute("SELECT COUNT(*) FROM results").fetchone()
        return int(count)

    def prune(self, *, max_entries: int | None = None, older_than_s: float | None = None) -> int:
        removed = 0
        with self._lock:
            if older_than_s is not None:
                removed += self._db.execute("DELETE FROM results WHERE created < ?",
                                            (time.time() - older_than_s,)).rowcount
            if max_entries is not None:
                removed += self._db.execute(
                    "DELETE FROM results WHERE key NOT IN (SELECT key FROM results ORDER BY created DESC LIMIT ?)",
                    (max_entries,)).rowcount
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return removed

    def close(self) -> None:
        with self._lock:
            self._db.close()
