"""Postgres connections for the journal and the shared rate limits (psycopg2, the driver dagster-postgres ships)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ai_assets.runtime.errors import ConfigError, MissingExtraError

PG_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg2")


def is_postgres_url(location: str) -> bool:
    return urlsplit(str(location)).scheme in PG_SCHEMES


def dsn(url: str) -> str:
    """A libpq URL from a SQLAlchemy-style one (``postgresql+psycopg2://`` -> ``postgresql://``)."""
    parts = urlsplit(url)
    if parts.scheme not in PG_SCHEMES:
        raise ConfigError(f"not a Postgres URL: {parts.scheme}://...")
    return urlunsplit(("postgresql", *parts[1:]))


def connect(url: str) -> Any:
    """An autocommit psycopg2 connection: every statement is its own transaction, durable when it returns."""
    try:
        import psycopg2
    except ImportError as exc:
        raise MissingExtraError("psycopg2", "cluster") from exc
    connection = psycopg2.connect(dsn(url))
    connection.autocommit = True
    return connection
