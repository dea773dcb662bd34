"""Models in this process as engine connections, so local and remote providers share one path: the engine's
timeouts, retries, per-row errors, journal and progress apply to both.

A job's inputs run as one batch on a worker thread (the event loop keeps planning the next window meanwhile). A
run function may answer an input with ``ItemError`` (an image that does not decode); if the whole batch raises, its
inputs are run one by one so that a bad input fails alone and the others keep their answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from ai_assets.runtime.engine import Job, Outcome, Reply
from ai_assets.runtime.errors import AttemptUsage, PermanentError, bounded

INPUTS = "inputs"


@dataclass(frozen=True)
class ItemError:
    """One input of a batch that failed (its row gets ``message`` as error)."""

    message: str


RunBatch = Callable[[list[Any]], Sequence[Any]]


class LocalConnection:
    secrets: Sequence[str] = ()

    def __init__(self, run: RunBatch) -> None:
        self._run = run

    async def send(self, request: dict[str, Any]) -> Reply:
        items: list[Any] = request[INPUTS]
        try:
            values = await asyncio.to_thread(self._run, items)
        except Exception as exc:  # a model raises many types; isolate the input that caused it
            if len(items) == 1:
                raise PermanentError(f"{type(exc).__name__}: {exc}") from exc
            values = [await self._one(item) for item in items]
        return Reply(list(values), AttemptUsage())

    async def _one(self, item: Any) -> Any:
        try:
            return (await asyncio.to_thread(self._run, [item]))[0]
        except Exception as exc:
            return ItemError(bounded(f"{type(exc).__name__}: {exc}"))


@asynccontextmanager
async def local_connection(run: RunBatch) -> AsyncIterator[LocalConnection]:
    yield LocalConnection(run)


def split_items(job: Job, outcome: Outcome) -> list[tuple[str, Outcome]]:
    """A batch job's outcome per row key: each value, or each input's own error, or the job's error for all."""
    keys = job.keys or (job.key,)
    if not outcome.ok:
        return [(key, outcome) for key in keys]
    parts = []
    for key, value in zip(keys, outcome.value, strict=True):
        if isinstance(value, ItemError):
            parts.append((key, Outcome(error=value.message, attempts=outcome.attempts)))
        else:
            parts.append((key, Outcome(value, attempts=outcome.attempts)))
    return parts
