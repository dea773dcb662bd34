"""The spend ledger: what each partition of each asset cost when it was materialized, and the caps a period's
spending must fit (``ai_assets.dagster.SpendCap`` reads it before an automation tick requests a run).

Fed by the billed usage of each materialization (the journal's answers that were paid for in that run; answers read
back from the journal cost nothing and are not counted), one entry per (asset, partition, run): recording the same
run's partition twice (a retried step, a re-read output) keeps one. SQLite for a file path, Postgres for
``postgresql://...``, Redis for ``redis://...``, as the journal and the shared rate limits are opened. A cap lives in
the ledger, so raising it takes effect at the next tick without a redeploy.
"""

from __future__ import annotations

import calendar
import json
import math
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from ai_assets.runtime.errors import ConfigError
from ai_assets.runtime.sqlite_wal import wal_mode

Period = Literal["day", "month"]
RECENT = 20
"""How many of an asset's last recorded partitions estimate its next one."""


@dataclass(frozen=True)
class Spend:
    """One partition's materialization and what it was billed, in US dollars."""

    asset: str
    partition: str
    run_id: str
    usd: float
    at: float
    """When (seconds since the epoch)."""
    cap: str = "default"
    """The name of the cap it counts against (``SpendCap.name``): caps in one ledger count their own spending."""

    def __post_init__(self) -> None:
        if not math.isfinite(self.usd) or self.usd < 0:
            raise ConfigError(f"spend of {self.asset} {self.partition}: cost must be a finite number >= 0, "
                              f"got {self.usd!r}")


class SpendLedger(Protocol):
    def record(self, spends: Sequence[Spend]) -> None:
        """Add ``spends``; one per (asset, partition, run), the last recorded kept."""
        ...

    def spent(self, since: float, cap: str = "default") -> float:
        """US dollars recorded against ``cap`` at or after ``since`` (seconds since the epoch)."""
        ...

    def recent_costs(self, asset: str, last: int = RECENT, cap: str = "default") -> list[float]:
        """The costs of ``asset``'s last ``last`` partitions recorded against ``cap``, newest first."""
        ...

    def cap(self, name: str) -> float | None:
        """The cap set under ``name`` (None: none set)."""
        ...

    def set_cap(self, name: str, usd: float) -> None: ...

    def close(self) -> None: ...


def period_start(period: Period, now: float | None = None) -> float:
    """The start of the calendar day or month (UTC) that holds ``now``."""
    moment = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "month":
        start = start.replace(day=1)
    elif period != "day":
        raise ConfigError(f"budget period must be 'day' or 'month', got {period!r}")
    return calendar.timegm(start.timetuple())


def check_cap(usd: float) -> float:
    if not isinstance(usd, (int, float)) or isinstance(usd, bool) or not math.isfinite(usd) or usd < 0:
        raise ConfigError(f"a spending cap must be a finite number of dollars >= 0, got {usd!r}")
    return float(usd)


def open_ledger(location: str | Path) -> SpendLedger:
    """SQLite for a file path (or ``sqlite:///path``), Postgres for ``postgresql://...``, Redis for
    ``redis://...``."""
    from ai_assets.runtime.pg import is_postgres_url

    text = str(location)
    if is_postgres_url(text):
        return SqlLedger(_PostgresRunner(text))
    if text.startswith(("redis://", "rediss://")):
        return RedisLedger(text)
    if text.startswith("sqlite:///"):
        text = text.removeprefix("sqlite:///")
    elif "://" in text:
        raise ConfigError(f"a spend ledger is a file path, sqlite:///, postgresql:// or redis:// URL; got "
                          f"{text.split('://', 1)[0]}://...")
    return SqlLedger(_SqliteRunner(Path(text)))


_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS ai_assets_spend (cap TEXT NOT NULL, asset TEXT NOT NULL, "
    "partition_key TEXT NOT NULL, run_id TEXT NOT NULL, usd DOUBLE PRECISION NOT NULL, at DOUBLE PRECISION NOT NULL, "
    "PRIMARY KEY (cap, asset, partition_key, run_id))",
    "CREATE INDEX IF NOT EXISTS ai_assets_spend_at ON ai_assets_spend (cap, at)",
    "CREATE TABLE IF NOT EXISTS ai_assets_caps (name TEXT PRIMARY KEY, usd DOUBLE PRECISION NOT NULL)",
]
_UPSERT = ("INSERT INTO ai_assets_spend (cap, asset, partition_key, run_id, usd, at) "
           "VALUES ({p}, {p}, {p}, {p}, {p}, {p}) "
           "ON CONFLICT (cap, asset, partition_key, run_id) DO UPDATE SET usd = excluded.usd, at = excluded.at")


class _Runner(Protocol):
    marker: str

    def execute(self, statement: str, rows: Sequence[tuple[Any, ...]] = ((),)) -> list[tuple[Any, ...]]: ...

    def close(self) -> None: ...


class _SqliteRunner:
    marker = "?"

    def __init__(self, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a regular file on the way (ENOTDIR/EEXIST), no permission (EACCES), ...
            raise ConfigError(f"spend ledger {path}: cannot create its folder {path.parent} "
                              f"({exc.strerror or exc})") from exc
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
        wal_mode(self._db, 30)  # runs and the automation sensor open a new ledger at once
        for statement in _SCHEMA:
            self._db.execute(statement)

    def execute(self, statement: str, rows: Sequence[tuple[Any, ...]] = ((),)) -> list[tuple[Any, ...]]:
        with self._lock:
            if len(rows) > 1:
                self._db.executemany(statement, rows)
                return []
            return self._db.execute(statement, rows[0]).fetchall()

    def close(self) -> None:
        self._db.close()


class _PostgresRunner:
    marker = "%s"

    def __init__(self, url: str) -> None:
        from ai_assets.runtime.pg import Connection

        self._connection = Connection(url, "; ".join(_SCHEMA), "ai_assets_spend")

    def execute(self, statement: str, rows: Sequence[tuple[Any, ...]] = ((),)) -> list[tuple[Any, ...]]:
        def work(cursor: Any) -> list[tuple[Any, ...]]:
            if len(rows) > 1:
                cursor.executemany(statement, rows)
                return []
            cursor.execute(statement, rows[0])
            return list(cursor.fetchall()) if cursor.description else []

        return self._connection.run(work)

    def close(self) -> None:
        self._connection.close()


class SqlLedger:
    """The ledger in SQLite or Postgres: one table of spends, one of caps."""

    def __init__(self, runner: _Runner) -> None:
        self._run = runner
        self._p = runner.marker

    def record(self, spends: Sequence[Spend]) -> None:
        if spends:
            self._run.execute(_UPSERT.format(p=self._p),
                              [(s.cap, s.asset, s.partition, s.run_id, s.usd, s.at) for s in spends])

    def spent(self, since: float, cap: str = "default") -> float:
        rows = self._run.execute(f"SELECT COALESCE(SUM(usd), 0) FROM ai_assets_spend WHERE cap = {self._p} "
                                 f"AND at >= {self._p}", [(cap, since)])
        return float(rows[0][0])

    def recent_costs(self, asset: str, last: int = RECENT, cap: str = "default") -> list[float]:
        rows = self._run.execute(f"SELECT usd FROM ai_assets_spend WHERE cap = {self._p} AND asset = {self._p} "
                                 f"ORDER BY at DESC LIMIT {int(last)}", [(cap, asset)])
        return [float(r[0]) for r in rows]

    def cap(self, name: str) -> float | None:
        rows = self._run.execute(f"SELECT usd FROM ai_assets_caps WHERE name = {self._p}", [(name,)])
        return float(rows[0][0]) if rows else None

    def set_cap(self, name: str, usd: float) -> None:
        self._run.execute(f"INSERT INTO ai_assets_caps (name, usd) VALUES ({self._p}, {self._p}) "
                          "ON CONFLICT (name) DO UPDATE SET usd = excluded.usd", [(name, check_cap(usd))])

    def close(self) -> None:
        self._run.close()


class RedisLedger:
    """The ledger in Redis: each spend a hash field (one per cap, asset, partition and run), a member of its cap's
    sorted set scored by its time (and of its cap and asset's own); caps in a hash."""

    def __init__(self, url: str, prefix: str = "ai_assets:ledger") -> None:
        try:
            import redis
        except ImportError as exc:
            from ai_assets.runtime.errors import MissingExtraError

            raise MissingExtraError("redis", "cluster") from exc
        self._redis = redis.Redis.from_url(url)
        self._spends, self._times, self._caps = f"{prefix}:spends", f"{prefix}:times", f"{prefix}:caps"

    def record(self, spends: Sequence[Spend]) -> None:
        pipe = self._redis.pipeline()
        for s in spends:
            field = json.dumps([s.cap, s.asset, s.partition, s.run_id])
            pipe.hset(self._spends, field, json.dumps([s.usd, s.at]))
            pipe.zadd(self._times_of(s.cap), {field: s.at})
            pipe.zadd(self._times_of(s.cap, s.asset), {field: s.at})
        pipe.execute()

    def _times_of(self, *names: str) -> str:
        """The sorted set of a cap's spends (or of one asset's under it); JSON keeps ``a:b`` and ``a``/``b:`` apart."""
        return f"{self._times}:{json.dumps(list(names))}"

    def _entries(self, fields: list[bytes]) -> list[tuple[list[str], float, float]]:
        values = self._redis.hmget(self._spends, fields) if fields else []
        out = []
        for field, value in zip(fields, values, strict=True):
            if value is not None:
                usd, at = json.loads(value)
                out.append((json.loads(field), float(usd), float(at)))
        return out

    def spent(self, since: float, cap: str = "default") -> float:
        return sum(usd for _, usd, _ in self._entries(self._redis.zrangebyscore(self._times_of(cap), since, "+inf")))

    def recent_costs(self, asset: str, last: int = RECENT, cap: str = "default") -> list[float]:
        newest = self._redis.zrevrange(self._times_of(cap, asset), 0, int(last) - 1)
        return [usd for _, usd, _ in self._entries(newest)]

    def cap(self, name: str) -> float | None:
        value = self._redis.hget(self._caps, name)
        return None if value is None else float(value)

    def set_cap(self, name: str, usd: float) -> None:
        self._redis.hset(self._caps, name, check_cap(usd))

    def close(self) -> None:
        self._redis.close()
