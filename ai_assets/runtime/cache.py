"""Persistent, content-addressed result caches: the journal that makes re-runs and resumed runs free.

The key hashes everything that decides an answer: provider, model, every request parameter, the output schema and
the input content. Two homes:

* ``ResultCache``: one SQLite file in WAL mode, for a local disk. Each finished row is committed on its own, so a
  killed run keeps every answer it was paid for; SQLite transactions make every write atomic (a half-written entry
  is never read back) and several processes may share the file (writers wait on SQLite's lock).
* ``ObjectStoreCache`` (``ai_assets.runtime.object_cache``): immutable segment objects on any fsspec URI (S3, GCS,
  Azure, a shared folder), for runs on machines with no shared disk.

``open_cache(location)`` picks by the location's form.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    key TEXT PRIMARY KEY,
    value TEXT,
    error TEXT,
    created REAL NOT NULL,
    used REAL NOT NULL
)
"""
_BATCH = 500


def cache_key(*parts: Mapping[str, Any] | str) -> str:
    """A stable SHA-256 over JSON-able parts (dict order does not matter)."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True)
class CachedResult:
    value: Any
    error: str | None


class Cache(Protocol):
    """What the AI functions need from a result cache."""

    def get_many(self, keys: Iterable[str], *, include_errors: bool = False) -> dict[str, CachedResult]: ...

    def put(self, key: str, value: Any = None, *, error: str | None = None) -> None: ...

    def flush(self) -> None:
        """Make every ``put`` so far durable."""
        ...

    def prune(self, *, max_entries: int | None = None, unused_for_s: float | None = None) -> int: ...

    def close(self) -> None: ...

    def __len__(self) -> int: ...


class ResultCache:
    """Results by key. ``error`` entries record failed rows; they are returned only when asked for."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=60, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)

    def get_many(self, keys: Iterable[str], *, include_errors: bool = False) -> dict[str, CachedResult]:
        wanted = list(dict.fromkeys(keys))
        found: dict[str, CachedResult] = {}
        with self._lock:
            for start in range(0, len(wanted), _BATCH):
                chunk = wanted[start:start + _BATCH]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(f"SELECT key, value, error FROM results WHERE key IN ({marks})", chunk)
                for key, value, error in rows:
                    if error is None or include_errors:
                        found[key] = CachedResult(None if value is None else json.loads(value), error)
            if found:
                now = time.time()
                self._db.executemany("UPDATE results SET used=? WHERE key=?", [(now, k) for k in found])
        return found

    def put(self, key: str, value: Any = None, *, error: str | None = None) -> None:
        """Store one result (or one failure) durably. A success replaces anything; a failure replaces only an
        earlier failure (so the error column shows the latest reason) and never an answer."""
        now = time.time()
        encoded = None if error is not None else json.dumps(value, separators=(",", ":"))
        with self._lock:
            if error is not None:
                self._db.execute(
                    "INSERT INTO results VALUES (?, NULL, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET "
                    "error=excluded.error, used=excluded.used WHERE results.error IS NOT NULL",
                    (key, error, now, now))
            else:
                self._db.execute(
                    "INSERT INTO results VALUES (?, ?, NULL, ?, ?) ON CONFLICT(key) DO UPDATE SET "
                    "value=excluded.value, error=NULL, used=excluded.used", (key, encoded, now, now))

    def flush(self) -> None:
        """Nothing to do: every ``put`` is its own committed transaction."""

    def __len__(self) -> int:
        with self._lock:
            (count,) = self._db.execute("SELECT COUNT(*) FROM results").fetchone()
        return int(count)

    def prune(self, *, max_entries: int | None = None, unused_for_s: float | None = None) -> int:
        """Drop least-recently-used entries beyond ``max_entries`` and entries unused for ``unused_for_s``."""
        removed = 0
        with self._lock:
            if unused_for_s is not None:
                cutoff = time.time() - unused_for_s
                removed += self._db.execute("DELETE FROM results WHERE used < ?", (cutoff,)).rowcount
            if max_entries is not None:
                removed += self._db.execute(
                    "DELETE FROM results WHERE key NOT IN (SELECT key FROM results ORDER BY used DESC LIMIT ?)",
                    (max_entries,)).rowcount
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return removed

    def close(self) -> None:
        with self._lock:
            self._db.close()


def open_cache(location: str | Path, storage_options: Mapping[str, Any] | None = None) -> Cache:
    """A SQLite cache for a file path, an object-store cache for a URI (``s3://bucket/prefix``, ``file://...``)."""
    if "://" in str(location):
        from ai_assets.runtime.object_cache import ObjectStoreCache

        return ObjectStoreCache(str(location), storage_options)
    return ResultCache(location)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m ai_assets.runtime.cache LOCATION [--max-entries N] [--unused-days D]``: report and prune."""
    parser = argparse.ArgumentParser(description="Inspect and prune an ai_assets result cache")
    parser.add_argument("path", help="a SQLite file or an object-store URI")
    parser.add_argument("--max-entries", type=int, default=None, help="keep at most this many, newest used first")
    parser.add_argument("--unused-days", type=float, default=None, help="drop entries unused for this long")
    args = parser.parse_args(argv)
    cache = open_cache(args.path)
    before = len(cache)
    removed = cache.prune(max_entries=args.max_entries,
                          unused_for_s=None if args.unused_days is None else args.unused_days * 86_400)
    print(f"{args.path}: {before} entries, {removed} removed, {len(cache)} kept")
    cache.close()


if __name__ == "__main__":
    main()
