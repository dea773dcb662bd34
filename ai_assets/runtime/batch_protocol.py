"""The batch client protocol batch mode drives (``ai_assets.runtime.batch``): submit / status / results, as
instructor's batch providers model a vendor's batch API, so that OpenAI's upload-then-create flow
(``providers.openai_batch``) and Anthropic's Message Batches (``providers.anthropic_batch``) share one runtime,
one journal and one way of never paying twice.

A request is a value before it is sent: its journal key is a hash of the provider's identity and the exact body,
so a line's ``custom_id`` (the key, or a hash of it in the vendor's alphabet) names the same request in every run,
and a run that finds a key answered, or pending in a batch, never sends it again.

Result lines come back in one neutral shape, OpenAI's output-line shape (the runtime reads nothing else):
``{"custom_id", "response": {"status_code", "body"}}`` for an answer or a failed request, or
``{"custom_id", "error": {"code", "message"}}`` for a line that was never run (``batch_expired``,
``batch_cancelled``).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ai_assets.runtime.errors import bounded

logger = logging.getLogger(__name__)
Record = Callable[[Mapping[str, Any]], Awaitable[None]]
"""Writes what identifies a submission to the journal (durably) before the batch is created."""


@dataclass(frozen=True)
class BatchState:
    """A batch as the runtime sees it: ``done`` (nothing more will change), ``failed`` (the whole batch was
    refused; the reason, masked and cut), ``empty`` (done with nothing to read); ``raw``: the vendor's object."""

    id: str
    done: bool
    failed: str | None = None
    empty: bool = False
    raw: Mapping[str, Any] = field(default_factory=dict)


class BatchClient(Protocol):
    """A vendor's batch API. ``max_requests`` / ``max_bytes``: its limits per batch (the run uses the smaller of
    these and ``BatchOptions``')."""

    max_requests: int
    max_bytes: int

    def custom_id(self, key: str) -> str:
        """The line id for a journal key, in the vendor's alphabet and length (the key itself where it fits)."""
        ...

    def line(self, custom_id: str, endpoint: str, request: Mapping[str, Any]) -> str:
        """One request as the vendor's batch line (JSON, no newline)."""
        ...

    async def submit(self, lines: Sequence[str], custom_ids: Sequence[str], endpoint: str, record: Record) -> str:
        """Create one batch of ``lines``; ``record`` is awaited before the create call (so a kill at any point
        leaves something the next run can ``recover`` from); the batch id."""
        ...

    async def recover(self, record: Mapping[str, Any], endpoint: str) -> list[str]:
        """The batch(es) a record without a batch id may stand for (a run killed between ``record`` and the id
        being written): found, or created from what was recorded; [] when there is none (send the rows again)."""
        ...

    async def status(self, batch_id: str) -> BatchState: ...

    def results(self, state: BatchState) -> AsyncIterator[Mapping[str, Any]]:
        """The result lines of a done batch in the neutral shape (see the module), in any order."""
        ...

    async def custom_ids(self, state: BatchState) -> list[str]:
        """The line ids of a batch that failed as a whole."""
        ...


class Ledger:
    """``custom_id`` -> the row keys a line answers and its request, and the keys awaited and answered, in a
    temporary SQLite file (a million rows pending cost no memory)."""

    def __init__(self) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix="ai_assets-batch-")
        self._db = sqlite3.connect(Path(self._folder.name) / "ledger.sqlite")
        self._db.execute("CREATE TABLE lines (custom_id TEXT PRIMARY KEY, keys TEXT, request TEXT)")
        self._db.execute("CREATE TABLE awaited (key TEXT PRIMARY KEY, answered INTEGER)")

    def add(self, custom_id: str, keys: Sequence[str], request: Mapping[str, Any] | None) -> None:
        self._db.execute("INSERT OR REPLACE INTO lines VALUES (?, ?, ?)",
                         (custom_id, json.dumps(list(keys)), None if request is None else json.dumps(request)))

    def get(self, custom_id: str) -> tuple[list[str], dict[str, Any] | None]:
        row = self._db.execute("SELECT keys, request FROM lines WHERE custom_id = ?", (custom_id,)).fetchone()
        if row is None:
            return [], None
        return json.loads(row[0]), None if row[1] is None else json.loads(row[1])

    def await_keys(self, keys: Sequence[str]) -> None:
        self._db.executemany("INSERT OR IGNORE INTO awaited VALUES (?, 0)", [(k,) for k in keys])

    def answer(self, key: str) -> None:
        self._db.execute("UPDATE awaited SET answered = 1 WHERE key = ?", (key,))

    def unanswered(self) -> list[str]:
        return [row[0] for row in self._db.execute("SELECT key FROM awaited WHERE answered = 0")]

    def close(self) -> None:
        self._db.close()
        self._folder.cleanup()


def parsed_line(text: str | bytes) -> Mapping[str, Any] | None:
    """One result line, or None for a blank or unreadable one (its rows stay unanswered: they end as row errors
    and the next run sends them)."""
    if not text.strip():
        return None
    try:
        line = json.loads(text)
    except (ValueError, RecursionError):
        shown = text if isinstance(text, str) else text.decode("utf-8", "replace")
        logger.warning("skipping an unreadable batch result line: %s", bounded(shown, (), 120))
        return None
    return line if isinstance(line, Mapping) and isinstance(line.get("custom_id"), str) else None
