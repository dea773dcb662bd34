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
from ai_assets.runtime.ratelimit.breaker import BreakerRecord, Event, Verdict, record_of, step, text_of

_STORES: dict[str | None, RateStore] = {}
_STORES_LOCK = threading.Lock()
BUCKET_TTL_S = 24 * 3600


class MemoryStore:
    """Buckets in this process (every event loop and thread of it); ``clock`` is injectable for tests."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._tat: dict[str, float] = {}
        self._breakers: dict[str, BreakerRecord] = {}
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

    async def raise_to(self, bucket: str, wait_s: float) -> None:
        with self._lock:
            now = self._clock()
            self._tat[bucket] = max(self._tat.get(bucket, now), now + wait_s)

    async def breaker(self, name: str, event: Event, threshold: int, cooldown_s: float) -> Verdict:
        with self._lock:
            record, verdict = step(self._breakers.get(name, BreakerRecord()), event, self._clock(), threshold,
                                   cooldown_s)
            self._breakers[name] = record
        return verdict


class FileStore:
    """Buckets in a folder on one machine: one small file each, read and rewritten under ``flock``. The clock is
    wall time (processes share it); ``clock`` is injectable for tests."""

    def __init__(self, folder: str | Path, clock: Callable[[], float] = time.time) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._clock = clock

    def _path(self, bucket: str) -> Path:
        return self.folder / (hashlib.sha256(bucket.encode()).hexdigest()[:32] + ".tat")

    def _locked(self, bucket: str, change: Callable[[bytes, float], bytes]) -> bytes:
        """Rewrite a bucket's file under ``flock`` with ``change(old content, now)``; the new content."""
        fd = os.open(self._path(bucket), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            new = change(os.read(fd, 128), self._clock())
            os.lseek(fd, 0, os.SEEK_SET)
            os.ftruncate(fd, 0)
            os.write(fd, new)
            return new
        finally:
            os.close(fd)  # closing releases the lock

    def _update(self, bucket: str, interval_s: float, mode: str) -> float:
        waited = [0.0]

        def change(raw: bytes, now: float) -> bytes:
            tat = float(raw) if raw else now
            if mode == "reserve":
                tat = max(tat, now) + interval_s
            elif mode == "raise":
                tat = max(tat, now + interval_s)
            else:
                tat += interval_s
            waited[0] = tat - now
            return repr(tat).encode()

        self._locked(bucket, change)
        return waited[0]

    async def reserve(self, bucket: str, interval_s: float) -> float:
        return self._update(bucket, interval_s, "reserve")

    async def adjust(self, bucket: str, delta_s: float) -> None:
        self._update(bucket, delta_s, "adjust")

    async def raise_to(self, bucket: str, wait_s: float) -> None:
        self._update(bucket, wait_s, "raise")

    async def breaker(self, name: str, event: Event, threshold: int, cooldown_s: float) -> Verdict:
        verdict: list[Verdict] = []

        def change(raw: bytes, now: float) -> bytes:
            record, said = step(record_of(raw), event, now, threshold, cooldown_s)
            verdict.append(said)
            return text_of(record).encode()

        self._locked(name, change)
        return verdict[0]


_RESERVE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local start = math.max(tat, now) + tonumber(ARGV[1])
redis.call('SET', KEYS[1], string.format('%.6f', start), 'EX', tonumber(ARGV[2]))
return string.format('%.6f', start - now)
"""

_RAISE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
redis.call('SET', KEYS[1], string.format('%.6f', math.max(tat, now + tonumber(ARGV[1]))), 'EX', tonumber(ARGV[2]))
return 1
"""
_BREAKER_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local raw = redis.call('GET', KEYS[1])
local failures, opened, probe = 0, 0, 0
if raw then
  local f, o, p = string.match(raw, '^(%d+) ([%d%.eE+-]+) ([%d%.eE+-]+)$')
  if f then failures, opened, probe = tonumber(f) or 0, tonumber(o) or 0, tonumber(p) or 0 end
end
if opened > now then opened = now end  -- never held open past one cool-down from now (breaker.step)
if probe > now then probe = now end
local event, threshold, cooldown = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local verdict = 'closed'
if event == 'success' then
  failures, opened, probe = 0, 0, 0
elseif event == 'failure' then
  failures = failures + 1
  if opened > 0 or failures >= threshold then opened, probe, verdict = now, 0, 'open' end
elseif opened == 0 then
  if failures > 0 then verdict = 'suspect' end
else
  if now - opened < cooldown or (probe > 0 and now - probe < cooldown) then
    verdict = 'open'
  else
    probe, verdict = now, 'probe'
  end
end
redis.call('SET', KEYS[1], string.format('%d %.6f %.6f', failures, opened, probe), 'EX', tonumber(ARGV[4]))
return verdict
"""


def _verdict(said: Any) -> Verdict:
    text = said.decode() if isinstance(said, bytes) else str(said)
    verdicts: dict[str, Verdict] = {"probe": "probe", "open": "open", "suspect": "suspect"}
    return verdicts.get(text, "closed")


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
        self._raise = self._client.register_script(_RAISE_LUA)
        self._breaker = self._client.register_script(_BREAKER_LUA)

    def _key(self, bucket: str) -> str:
        return f"ai_assets:rate:{bucket}"

    async def reserve(self, bucket: str, interval_s: float) -> float:
        wait, read_at = await asyncio.to_thread(
            _timed, lambda: self._reserve(keys=[self._key(bucket)], args=[interval_s, BUCKET_TTL_S]))
        return _wait_from(read_at, float(wait))

    async def adjust(self, bucket: str, delta_s: float) -> None:
        await asyncio.to_thread(self._client.incrbyfloat, self._key(bucket), delta_s)

    async def raise_to(self, bucket: str, wait_s: float) -> None:
        await asyncio.to_thread(lambda: self._raise(keys=[self._key(bucket)], args=[wait_s, BUCKET_TTL_S]))

    async def breaker(self, name: str, event: Event, threshold: int, cooldown_s: float) -> Verdict:
        said = await asyncio.to_thread(
            lambda: self._breaker(keys=[self._key(name)], args=[event, threshold, cooldown_s, BUCKET_TTL_S]))
        return _verdict(said)


_PG_SCHEMA = """
CREATE TABLE IF NOT EXISTS ai_assets_rate_limits (bucket TEXT PRIMARY KEY, tat DOUBLE PRECISION NOT NULL);
CREATE TABLE IF NOT EXISTS ai_assets_breakers (name TEXT PRIMARY KEY, record TEXT NOT NULL)
"""
_PG_RESERVE = """
INSERT INTO ai_assets_rate_limits AS r (bucket, tat) VALUES (%(bucket)s, extract(epoch from clock_timestamp()) + %(s)s)
ON CONFLICT (bucket) DO UPDATE SET tat = GREATEST(r.tat, extract(epoch from clock_timestamp())) + %(s)s
RETURNING tat - extract(epoch from clock_timestamp())
"""
_PG_ADJUST = "UPDATE ai_assets_rate_limits SET tat = tat + %(s)s WHERE bucket = %(bucket)s"
_PG_RAISE = """
INSERT INTO ai_assets_rate_limits AS r (bucket, tat) VALUES (%(bucket)s, extract(epoch from clock_timestamp()) + %(s)s)
ON CONFLICT (bucket) DO UPDATE SET tat = GREATEST(r.tat, extract(epoch from clock_timestamp()) + %(s)s)
"""


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

    async def raise_to(self, bucket: str, wait_s: float) -> None:
        await asyncio.to_thread(self._run, _PG_RAISE, {"bucket": bucket, "s": wait_s})

    async def breaker(self, name: str, event: Event, threshold: int, cooldown_s: float) -> Verdict:
        def work(cursor: Any) -> Verdict:
            cursor.execute("BEGIN")
            try:
                cursor.execute("INSERT INTO ai_assets_breakers (name, record) VALUES (%s, '') ON CONFLICT DO NOTHING",
                               (name,))
                cursor.execute("SELECT record, extract(epoch from clock_timestamp()) FROM ai_assets_breakers "
                               "WHERE name = %s FOR UPDATE", (name,))
                raw, now = cursor.fetchone()
                record, verdict = step(record_of(raw), event, float(now), threshold, cooldown_s)
                cursor.execute("UPDATE ai_assets_breakers SET record = %s WHERE name = %s", (text_of(record), name))
                cursor.execute("COMMIT")
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
            return verdict

        return await asyncio.to_thread(self._connection.run, work)


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
