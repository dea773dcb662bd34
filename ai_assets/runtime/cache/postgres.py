"""The journal in Postgres: the database every Dagster deployment already runs, shared by every worker.

Every ``put_many`` is one statement in autocommit mode (atomic and durable when it returns); concurrent writers
are serialised per key by the primary key's row lock, and an answer is never replaced by a failure.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

from ai_assets.runtime.cache import CachedResult, Entry
from ai_assets.runtime.pg import connect

TABLE = "ai_assets_journal"
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    key TEXT PRIMARY KEY,
    value TEXT,
    error TEXT,
    run TEXT,
    tokens_in INTEGER NOT NULL DEFAULT 0,
    tokens_out INTEGER NOT NULL DEFAULT 0,
    created DOUBLE PRECISION NOT NULL
)
"""
_UPSERT = f"""
INSERT INTO {TABLE} AS t (key, value, error, run, tokens_in, tokens_out, created) VALUES %s
ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, error = EXCLUDED.error, run = EXCLUDED.run,
    tokens_in = EXCLUDED.tokens_in, tokens_out = EXCLUDED.tokens_out, created = EXCLUDED.created
WHERE EXCLUDED.error IS NULL OR t.error IS NOT NULL
"""
_BATCH = 1000


class PostgresCache:
    def __init__(self, url: str) -> None:
        self.url = url
        self._connection = connect(url)
        self._lock = threading.Lock()
        with self._lock, self._connection.cursor() as cursor:
            cursor.execute(_SCHEMA)

    def get_many(self, keys: Iterable[str], *, include_errors: bool = False) -> dict[str, CachedResult]:
        wanted = list(dict.fromkeys(keys))
        found: dict[str, CachedResult] = {}
        with self._lock, self._connection.cursor() as cursor:
            for start in range(0, len(wanted), _BATCH):
                cursor.execute(f"SELECT key, value, error, run, tokens_in, tokens_out FROM {TABLE} "
                               "WHERE key = ANY(%s)", (wanted[start:start + _BATCH],))
                for key, value, error, run, tokens_in, tokens_out in cursor.fetchall():
                    if error is None or include_errors:
                        found[key] = CachedResult(None if value is None else json.loads(value), error, run,
                                                  tokens_in, tokens_out)
        return found

    def put_many(self, entries: Sequence[Entry]) -> None:
        if not entries:
            return
        from psycopg2.extras import execute_values

        now = time.time()
        latest = {e.key: e for e in entries}  # one statement may not touch a key twice
        rows = [(e.key, None if e.error is not None else json.dumps(e.value, separators=(",", ":")), e.error, e.run,
                 e.tokens_in, e.tokens_out, now) for e in latest.values()]
        with self._lock, self._connection.cursor() as cursor:
            execute_values(cursor, _UPSERT, rows, page_size=len(rows))

    def put(self, key: str, value: Any = None, *, error: str | None = None, run: str | None = None) -> None:
        self.put_many([Entry(key, value, error, run)])

    def flush(self) -> None:
        """Nothing to do: every ``put_many`` is a committed statement."""

    def __len__(self) -> int:
        with self._lock, self._connection.cursor() as cursor:
            cursor.execute(f"SELECT COUNT(*) FROM {TABLE}")
            (count,) = cursor.fetchone()
        return int(count)

    def prune(self, *, max_entries: int | None = None, older_than_s: float | None = None) -> int:
        removed = 0
        with self._lock, self._connection.cursor() as cursor:
            if older_than_s is not None:
                cursor.execute(f"DELETE FROM {TABLE} WHERE created < %s", (time.time() - older_than_s,))
                removed += cursor.rowcount
            if max_entries is not None:
                cursor.execute(f"DELETE FROM {TABLE} WHERE key NOT IN "
                               f"(SELECT key FROM {TABLE} ORDER BY created DESC LIMIT %s)", (max_entries,))
                removed += cursor.rowcount
        return removed

    def close(self) -> None:
        with self._lock:
            self._connection.close()
