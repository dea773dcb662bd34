"""Rate-limit stores: process memory, a folder of locked files, Redis, Postgres. Each keeps one float per bucket."""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ai_assets.runtime.errors import ConfigError, MissingExtraError
from ai_assets.runtime.ratelimit import RateStore

_STORES: dict[str | None, RateStore] = {}
_STORES_LOCK = threading.Lock()
BUCKET_TTL_S = 24 * 3600


class MemoryStore:
    """Buckets in this process (every event loop and thread of it); ``clock`` is injectable for tests."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._tat: dict[str, float] = {}
        self._lock = threading.Lock()
        self._clock = clock

    async def reserve(self, bucket: str, interval_s: float) -> float:
        with self._lock:
            now = self._clock()
            start = max(self._tat.get(bucket, now), now) + interval_s
            self._tat[bucket] = start
        return start - now

    async def adjust(self, bucket: str, delta_s: float) -> None:
        with self._lock:
            if bucket in self._tat:
                self._tat[bucket] += delta_s


class FileStore:
    """Buckets in a folder on one machine: one small file each, read and rewritten under ``flock``. The clock is
    wall time (processes share it); ``clock`` is injectable for tests."""

    def __init__(self, folder: str | Path, clock: Callable[[], float] = time.time) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._clock = clock

    def _path(self, bucket: str) -> Path:
        return self.folder / (hashlib.sha256(bucket.encode()).hexdigest()[:32] + ".tat")

    def _update(self, bucket: str, interval_s: float, reserve: bool) -> float:
        fd = os.open(self._path(bucket), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            raw = os.read(fd, 64)
            now = self._clock()
            tat = float(raw) if raw else now
            tat = max(tat, now) + interval_s if reserve else tat + interval_s
            os.lseek(fd, 0, os.SEEK_SET)
            os.ftruncate(fd, 0)
            os.write(fd, repr(tat).encode())
            return tat - now
        finally:
            os.close(fd)  # closing releases the lock

    async def reserve(self, bucket: str, interval_s: float) -> float:
        return self._update(bucket, interval_s, reserve=True)

    async def adjust(self, bucket: str, delta_s: float) -> None:
        self._update(bucket, delta_s, reserve=False)


_RESERVE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local start = math.max(tat, now) + tonumber(ARGV[1])
redis.call('SET', KEYS[1], string.format('%.6f', start), 'EX', tonumber(ARGV[2]))
return string.format('%.6f', start - now)
"""


def _timed(call: Callable[[], Any]) -> tuple[Any, float]:
    """``call()`` (a round trip to a store's server) and the ``time.monotonic()`` at which the server most likely
    read its clock: half-way through the round trip, timed on the thread that made it, so that the time spent
    waiting for a thread, a lock or the event loop is not taken for the server's. On a link slower one way than the
    other the estimate is off by up to half the round trip (under a millisecond to a store on the same network)."""
    before = time.monotonic()
    answer = call()
    return answer, (before + time.monotonic()) / 2


def _wait_from(read_at: float, wait: float) -> float:
    """A wait the server measured from ``read_at``, measured from now instead (less, or below zero, when the answer
    came back late)."""
    return read_at + wait - time.monotonic()


class RedisStore:
    """Buckets in Redis; the reservation is one Lua script on the server's clock, so workers' clocks may differ.
    The wait it returns is measured from when the script ran (see ``_timed``), not from when the answer arrived."""

    def __init__(self, url: str) -> None:
        try:
            import redis
        except ImportError as exc:
            raise MissingExtraError("redis", "cluster") from exc
        self._client = redis.Redis.from_url(url)
        self._reserve = self._client.register_script(_RESERVE_LUA)

    def _key(self, bucket: str) -> str:
        return f"ai_assets:rate:{bucket}"

    async def reserve(self, bucket: str, interval_s: float) -> float:
        wait, read_at = await asyncio.to_thread(
            _timed, lambda: self._reserve(keys=[self._key(bucket)], args=[interval_s, BUCKET_TTL_S]))
        return _wait_from(read_at, float(wait))

    async def adjust(self, bucket: str, delta_s: float) -> None:
        await asyncio.to_thread(self._client.incrbyfloat, self._key(bucket), delta_s)


_PG_SCHEMA = """
CREATE TABLE IF NOT EXISTS ai_assets_rate_limits (bucket TEXT PRIMARY KEY, tat DOUBLE PRECISION NOT NULL)
"""
_PG_RESERVE = """
INSERT INTO ai_assets_rate_limits AS r (bucket, tat) VALUES (%(bucket)s, extract(epoch from clock_timestamp()) + %(s)s)
ON CONFLICT (bucket) DO UPDATE SET tat = GREATEST(r.tat, extract(epoch from clock_timestamp())) + %(s)s
RETURNING tat - extract(epoch from clock_timestamp())
"""
_PG_ADJUST = "UPDATE ai_assets_rate_limits SET tat = tat + %(s)s WHERE bucket = %(bucket)s"


class PostgresStore:
    """Buckets in a Postgres table; one statement per reservation, serialised by the row lock. The wait it returns
    is measured from when the statement ran (see ``_timed``), not from when the answer arrived."""

    def __init__(self, url: str) -> None:
        from ai_assets.runtime.pg import Connection

        self._connection = Connection(url, _PG_SCHEMA, "ai_assets_rate_limits")

    def _run(self, sql: str, params: dict[str, Any]) -> tuple[Any, float]:
        def work(cursor: Any) -> tuple[Any, float]:
            def statement() -> Any:
                cursor.execute(sql, params)
                return cursor.fetchone() if cursor.description else None

            return _timed(statement)

        return self._connection.run(work)

    async def reserve(self, bucket: str, interval_s: float) -> float:
        (wait,), read_at = await asyncio.to_thread(self._run, _PG_RESERVE, {"bucket": bucket, "s": interval_s})
        return _wait_from(read_at, float(wait))

    async def adjust(self, bucket: str, delta_s: float) -> None:
        await asyncio.to_thread(self._run, _PG_ADJUST, {"bucket": bucket, "s": delta_s})


def open_store(location: str | None) -> RateStore:
    with _STORES_LOCK:
        if location not in _STORES:
            _STORES[location] = _build(location)
        return _STORES[location]


def _build(location: str | None) -> RateStore:
    if location is None:
        return MemoryStore()
    scheme = urlparse(location).scheme.split("+", 1)[0]
    if scheme == "file":
        return FileStore(urlparse(location).path)
    if scheme in ("redis", "rediss", "unix"):
        return RedisStore(location)
    if scheme in ("postgresql", "postgres"):
        return PostgresStore(location)
    raise ConfigError(f"rate-limit store {location!r}: use file:///folder, redis://... or postgresql+psycopg2://...")
