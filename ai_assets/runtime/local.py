"""Models in this process as engine connections, so local and remote providers share one path: the engine's
timeouts, retries, per-row errors, journal and progress apply to both.

A job's inputs run as one batch on a worker thread (the event loop keeps planning the next window meanwhile). A
run function may answer an input with ``ItemError`` (an image that does not decode). If the whole batch raises or
times out, the row pipeline sends its inputs again one by one, each with its own timeout and retries, so that a bad
input fails alone and the others keep their answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from ai_assets.runtime.engine import Job, Outcome, Reply
from ai_assets.runtime.errors import AttemptUsage, PermanentError

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
        try:
            values = await asyncio.to_thread(self._run, request[INPUTS])
        except Exception as exc:  # a model raises many types: the input's fault, not worth the same batch again
            raise PermanentError(f"{type(exc).__name__}: {exc}") from exc
        values = list(values)
        if len(values) != len(request[INPUTS]):  # one result per input, or no row can be told its own
            raise PermanentError(f"the local model returned {len(values)} result(s) for {len(request[INPUTS])} "
                                 "input(s)")
        return Reply(values, AttemptUsage())


@asynccontextmanager
async def local_connection(run: RunBatch, provider: object = None) -> AsyncIterator[LocalConnection]:
    """A connection to a local model; the provider's ``load()`` (if it has one) runs first, so loading the
    weights does not count against the first request's timeout."""
    load = getattr(provider, "load", None)
    if callable(load):
        await asyncio.to_thread(load)
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
