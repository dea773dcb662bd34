"""Postgres connections for the journal and the shared rate limits (psycopg2, the driver dagster-postgres ships)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from ai_assets.runtime.errors import ConfigError, MissingExtraError

PG_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg2")
T = TypeVar("T")


def is_postgres_url(location: str) -> bool:
    return urlsplit(str(location)).scheme in PG_SCHEMES


def dsn(url: str) -> str:
    """A libpq URL from a SQLAlchemy-style one (``postgresql+psycopg2://`` -> ``postgresql://``)."""
    parts = urlsplit(url)
    if parts.scheme not in PG_SCHEMES:
        raise ConfigError(f"not a Postgres URL: {parts.scheme}://...")
    return urlunsplit(("postgresql", *parts[1:]))


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for logs and messages)."""
    parts = urlsplit(str(url))
    if parts.password is None:
        return str(url)
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, f"{parts.username or ''}:***@{host}", *parts[2:]))


def connect(url: str) -> Any:
    """An autocommit psycopg2 connection: every statement is its own transaction, durable when it returns."""
    try:
        import psycopg2
    except ImportError as exc:
        raise MissingExtraError("psycopg2", "cluster") from exc
    connection = psycopg2.connect(dsn(url))
    connection.autocommit = True
    return connection


class Connection:
    """One autocommit connection shared by a process's threads, opened again once if the server dropped it
    (a restart, an idle timeout); ``schema`` is created on first use, under an advisory lock so that workers
    starting together do not race on ``CREATE TABLE IF NOT EXISTS`` (which is not safe concurrently)."""

    def __init__(self, url: str, schema: str, name: str) -> None:
        self.url = url
        self._schema, self._name = schema, name
        self._lock = threading.Lock()
        self._connection: Any = None
        self.run(lambda cursor: None)

    def _open(self) -> Any:
        connection = connect(self.url)
        with connection.cursor() as cursor:
            cursor.execute("BEGIN; SELECT pg_advisory_xact_lock(hashtext(%s)); " + self._schema + "; COMMIT",
                           (self._name,))
        return connection

    def run(self, work: Callable[[Any], T]) -> T:
        """``work(cursor)`` under the lock; on a dropped connection, once more on a fresh one."""
        import psycopg2

        with self._lock:
            for attempt in (1, 2):
                if self._connection is None or self._connection.closed:
                    self._connection = self._open()
                try:
                    with self._connection.cursor() as cursor:
                        return work(cursor)
                except (psycopg2.OperationalError, psycopg2.InterfaceError):
                    self._close()
                    if attempt == 2:
                        raise
        raise AssertionError("unreachable")

    def _close(self) -> None:
        if self._connection is not None and not self._connection.closed:
            self._connection.close()
        self._connection = None

    def close(self) -> None:
        with self._lock:
            self._close()
