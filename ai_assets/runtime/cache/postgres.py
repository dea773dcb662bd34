"""The journal in Postgres: the database every Dagster deployment already runs, shared by every worker.

Every ``put_many`` is one statement in autocommit mode (atomic and durable when it returns); concurrent writers
are serialised per key by the primary key's row lock, and an answer is never replaced by a failure.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from typing import Any

from ai_assets.runtime.cache import CachedResult, Entry
from ai_assets.runtime.cache.lease import owner_gone
from ai_assets.runtime.pg import Connection

TABLE = "ai_assets_journal"
CLAIMS = "ai_assets_claims"
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    key TEXT PRIMARY KEY,
    value TEXT,
    error TEXT,
    run TEXT,
    tokens_in INTEGER NOT NULL DEFAULT 0,
    tokens_out INTEGER NOT NULL DEFAULT 0,
    created DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS {CLAIMS} (key TEXT PRIMARY KEY, owner TEXT NOT NULL, expires DOUBLE PRECISION NOT NULL)
"""
_UPSERT = f"""
INSERT INTO {TABLE} AS t (key, value, error, run, tokens_in, tokens_out, created) VALUES %s
ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, error = EXCLUDED.error, run = EXCLUDED.run,
    tokens_in = EXCLUDED.tokens_in, tokens_out = EXCLUDED.tokens_out, created = EXCLUDED.created
WHERE EXCLUDED.error IS NULL OR t.error IS NOT NULL
"""
_BATCH = 1000
# Claims the keys without an answer, unless another owner holds a live claim: one statement, so concurrent
# claimers are serialised by the claims table's row locks and exactly one of them gets each key.
_CLAIM = f"""
INSERT INTO {CLAIMS} AS c (key, owner, expires)
SELECT w.key, %(owner)s, %(expires)s FROM unnest(%(keys)s::text[]) AS w(key)
WHERE NOT EXISTS (SELECT 1 FROM {TABLE} j WHERE j.key = w.key AND j.error IS NULL)
ON CONFLICT (key) DO UPDATE SET owner = EXCLUDED.owner, expires = EXCLUDED.expires
WHERE c.owner = EXCLUDED.owner OR c.expires < %(now)s OR c.owner = ANY(%(gone)s)
RETURNING key
"""


class PostgresCache:
    def __init__(self, url: str) -> None:
        self.url = url
        self._connection = Connection(url, _SCHEMA, TABLE)

    def get_many(self, keys: Iterable[str], *, include_errors: bool = False) -> dict[str, CachedResult]:
        wanted = list(dict.fromkeys(keys))

        def work(cursor: Any) -> dict[str, CachedResult]:
            found: dict[str, CachedResult] = {}
            for start in range(0, len(wanted), _BATCH):
                cursor.execute(f"SELECT key, value, error, run, tokens_in, tokens_out FROM {TABLE} "
                               "WHERE key = ANY(%s)", (wanted[start:start + _BATCH],))
                for key, value, error, run, tokens_in, tokens_out in cursor.fetchall():
                    if error is None or include_errors:
                        found[key] = CachedResult(None if value is None else json.loads(value), error, run,
                                                  tokens_in, tokens_out)
            return found

        return self._connection.run(work) if wanted else {}

    def put_many(self, entries: Sequence[Entry]) -> None:
        if not entries:
            return
        from psycopg2.extras import execute_values

        now = time.time()
        latest = {e.key: e for e in entries}  # one statement may not touch a key twice
        rows = [(e.key, None if e.error is not None else json.dumps(e.value, separators=(",", ":")), e.error, e.run,
                 e.tokens_in, e.tokens_out, now) for e in latest.values()]
        self._connection.run(lambda cursor: execute_values(cursor, _UPSERT, rows, page_size=len(rows)))

    def put(self, key: str, value: Any = None, *, error: str | None = None, run: str | None = None) -> None:
        self.put_many([Entry(key, value, error, run)])

    def flush(self) -> None:
        """Nothing to do: every ``put_many`` is a committed statement."""

    def __len__(self) -> int:
        def work(cursor: Any) -> int:
            cursor.execute(f"SELECT COUNT(*) FROM {TABLE}")
            return int(cursor.fetchone()[0])

        return self._connection.run(work)

    def prune(self, *, max_entries: int | None = None, older_than_s: float | None = None) -> int:
        def work(cursor: Any) -> int:
            removed = 0
            if older_than_s is not None:
                cursor.execute(f"DELETE FROM {TABLE} WHERE created < %s", (time.time() - older_than_s,))
                removed += cursor.rowcount
            if max_entries is not None:
                cursor.execute(f"DELETE FROM {TABLE} WHERE key NOT IN "
                               f"(SELECT key FROM {TABLE} ORDER BY created DESC LIMIT %s)", (max_entries,))
                removed += cursor.rowcount
            return removed

        return self._connection.run(work)

    # -- claims on rows in flight (see ai_assets.runtime.cache.lease) -----------------------------------------
    def claim(self, keys: list[str], owner: str, ttl_s: float) -> set[str]:
        def work(cursor: Any) -> set[str]:
            held: set[str] = set()
            for start in range(0, len(keys), _BATCH):
                chunk = keys[start:start + _BATCH]
                now = time.time()
                cursor.execute(f"SELECT DISTINCT owner FROM {CLAIMS} WHERE key = ANY(%s) AND owner <> %s "
                               "AND expires >= %s", (chunk, owner, now))
                gone = [o for (o,) in cursor.fetchall() if owner_gone(o)]
                cursor.execute(_CLAIM, {"owner": owner, "expires": now + ttl_s, "keys": chunk, "now": now,
                                        "gone": gone})
                held.update(k for (k,) in cursor.fetchall())
            return held

        return self._connection.run(work) if keys else set()

    def renew(self, owner: str, ttl_s: float) -> None:
        self._connection.run(lambda cursor: cursor.execute(
            f"UPDATE {CLAIMS} SET expires = %s WHERE owner = %s", (time.time() + ttl_s, owner)))

    def release(self, owner: str) -> None:
        self._connection.run(lambda cursor: cursor.execute(f"DELETE FROM {CLAIMS} WHERE owner = %s", (owner,)))

    def close(self) -> None:
        self._connection.close()
