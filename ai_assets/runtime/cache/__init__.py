"""The journal: a persistent, content-addressed store of answers that makes re-runs and resumed runs free.

The key hashes everything that decides an answer: provider, model, every request parameter, the output schema and
the input content. An entry is an answer (``value``) or a failure (``error``, with the run that recorded it), plus
the tokens it cost. Three homes, one protocol:

* ``ResultCache`` (``sqlite``): one SQLite file in WAL mode on a local disk; several processes may share it.
* ``ObjectStoreCache`` (``object_store``): immutable segment objects on any fsspec URI (S3, GCS, Azure), for workers
  with no shared disk; durable every ``flush_rows`` entries or ``flush_s`` seconds.
* ``PostgresCache`` (``postgres``): a table in the Postgres every Dagster deployment already runs.

``open_cache(location)`` picks by the location's form. Writes go through ``put_many`` in batches (one transaction
each); the row pipeline waits for a write to commit before it counts the row as done, so a killed run loses only
the requests in flight. ``python -m ai_assets.runtime.cache`` reports and prunes a journal.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


def cache_key(*parts: Mapping[str, Any] | str) -> str:
    """A stable SHA-256 over JSON-able parts (dict order does not matter)."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True)
class Entry:
    """One journal write: an answer, or a failure recorded by ``run``; ``tokens_*`` are what it cost."""

    key: str
    value: Any = None
    error: str | None = None
    run: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0


@dataclass(frozen=True)
class CachedResult:
    value: Any
    error: str | None
    run: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0


def merge_entry(previous: CachedResult | None, entry: Entry) -> bool:
    """Whether ``entry`` replaces ``previous``: an answer replaces anything, a failure only another failure."""
    return previous is None or entry.error is None or previous.error is not None


class Cache(Protocol):
    """What the row pipeline needs from a journal."""

    def get_many(self, keys: Iterable[str], *, include_errors: bool = False) -> dict[str, CachedResult]: ...

    def put_many(self, entries: Sequence[Entry]) -> None:
        """Store entries durably (one transaction where the backend has them) before returning."""
        ...

    def flush(self) -> None:
        """Make every write so far durable (a no-op where ``put_many`` already is)."""
        ...

    def prune(self, *, max_entries: int | None = None, older_than_s: float | None = None) -> int:
        """Remove entries written more than ``older_than_s`` ago, then all but the newest ``max_entries``."""
        ...

    def close(self) -> None: ...

    def __len__(self) -> int: ...


def open_cache(location: str | Path, storage_options: Mapping[str, Any] | None = None) -> Cache:
    """SQLite for a file path, Postgres for ``postgresql+psycopg2://...``, an object store for another URI."""
    from ai_assets.runtime.pg import is_postgres_url

    text = str(location)
    if is_postgres_url(text):
        from ai_assets.runtime.cache.postgres import PostgresCache

        return PostgresCache(text)
    if "://" in text:
        from ai_assets.runtime.cache.object_store import ObjectStoreCache

        return ObjectStoreCache(text, storage_options)
    from ai_assets.runtime.cache.sqlite import ResultCache

    return ResultCache(location)
