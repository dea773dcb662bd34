"""The journal in one SQLite file (WAL mode): every ``put_many`` is one committed transaction. Claims on rows in
flight (``ai_assets.runtime.cache.lease``) live in a second table of the same file."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ai_assets.runtime.cache import CachedResult, Entry
from ai_assets.runtime.cache.lease import owner_gone
from ai_assets.runtime.errors import ConfigError
from ai_assets.runtime.sqlite_wal import wal_mode

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    key TEXT PRIMARY KEY,
    value TEXT,
    error TEXT,
    created REAL NOT NULL,
    used REAL NOT NULL
)
"""
_CLAIMS = "CREATE TABLE IF NOT EXISTS claims (key TEXT PRIMARY KEY, owner TEXT NOT NULL, expires REAL NOT NULL)"
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
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=60, check_same_thread=False, isolation_level=None)
            wal_mode(self._db, 60)
            self._db.execute("PRAGMA synchronous=NORMAL")  # a commit survives a killed process (not a power cut)
            self._create_or_upgrade()
        except (sqlite3.Error, OSError) as exc:
            raise self._error(exc) from exc

    def _create_or_upgrade(self) -> None:
        """The tables, and the columns that journals written by earlier versions lack, in one write transaction:
        processes opening a new journal at once take turns (``BEGIN IMMEDIATE`` holds SQLite's write lock), so the
        second sees the first one's columns instead of adding them again ("duplicate column name")."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute(_SCHEMA)
            self._db.execute(_CLAIMS)
            present = {row[1] for row in self._db.execute("PRAGMA table_info(results)")}
            for name, kind in _COLUMNS.items():
                if name not in present:
                    self._db.execute(f"ALTER TABLE results ADD COLUMN {name} {kind}")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def _error(self, exc: BaseException) -> ConfigError:
        """A journal failure that names the file and what to do about it."""
        text = str(exc)
        if "readonly" in text or "read-only" in text or isinstance(exc, PermissionError):
            hint = "the file or its folder is read-only: give the run write access, or point the cache elsewhere"
        elif "not a database" in text or "malformed" in text:
            hint = "the file is not a readable SQLite journal: move it away (its answers are lost) or restore it"
        else:
            hint = "check the file and its folder"
        return ConfigError(f"journal {self.path}: {type(exc).__name__}: {text} ({hint})")

    def get_many(self, keys: Iterable[str], *, include_errors: bool = False) -> dict[str, CachedResult]:
        wanted = list(dict.fromkeys(keys))
        found: dict[str, CachedResult] = {}
        with self._lock:
            try:
                for start in range(0, len(wanted), _BATCH):
                    chunk = wanted[start:start + _BATCH]
                    marks = ",".join("?" * len(chunk))
                    rows = self._db.execute(f"SELECT key, value, error, run, tokens_in, tokens_out FROM results "
                                            f"WHERE key IN ({marks})", chunk)
                    for key, value, error, run, tokens_in, tokens_out in rows:
                        if error is None or include_errors:
                            found[key] = CachedResult(None if value is None else json.loads(value), error, run,
                                                      tokens_in, tokens_out)
            except sqlite3.Error as exc:
                raise self._error(exc) from exc
        return found

    def put_many(self, entries: Sequence[Entry]) -> None:
        if not entries:
            return
        now = time.time()
        rows = [(e.key, None if e.error is not None else json.dumps(e.value, separators=(",", ":")), e.error, e.run,
                 e.tokens_in, e.tokens_out, now, now) for e in entries]
        self._transaction(lambda: self._db.executemany(_UPSERT, rows))

    def _transaction(self, work: Callable[[], T]) -> T:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    result = work()
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise self._error(exc) from exc
            return result

    # -- claims on rows in flight (see ai_assets.runtime.cache.lease) -----------------------------------------
    def claim(self, keys: list[str], owner: str, ttl_s: float) -> set[str]:
        def work() -> set[str]:
            now = time.time()
            held: set[str] = set()
            gone: dict[str, bool] = {}
            for start in range(0, len(keys), _BATCH):
                chunk = keys[start:start + _BATCH]
                marks = ",".join("?" * len(chunk))
                answered = {k for (k,) in self._db.execute(
                    f"SELECT key FROM results WHERE error IS NULL AND key IN ({marks})", chunk)}
                claims = {k: (o, e) for k, o, e in self._db.execute(
                    f"SELECT key, owner, expires FROM claims WHERE key IN ({marks})", chunk)}
                free = [k for k in chunk if k not in answered and (
                    k not in claims or claims[k][0] == owner or claims[k][1] < now
                    or gone.setdefault(claims[k][0], owner_gone(claims[k][0])))]
                self._db.executemany("INSERT INTO claims VALUES (?, ?, ?) ON CONFLICT(key) DO UPDATE SET "
                                     "owner = excluded.owner, expires = excluded.expires",
                                     [(k, owner, now + ttl_s) for k in free])
                held.update(free)
            return held

        return self._transaction(work) if keys else set()

    def renew(self, owner: str, ttl_s: float) -> None:
        self._transaction(lambda: self._db.execute("UPDATE claims SET expires = ? WHERE owner = ?",
                                                   (time.time() + ttl_s, owner)))

    def release(self, owner: str) -> None:
        self._transaction(lambda: self._db.execute("DELETE FROM claims WHERE owner = ?", (owner,)))

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
