"""What a task gives the row pipeline: a plan per window (a key and payload per row, or why a row is skipped),
jobs to send, how answers are split, stored and turned into output columns, and its connection."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

import pyarrow as pa

from ai_assets.runtime.engine import Connection, Job, Outcome
from ai_assets.runtime.errors import Skip
from ai_assets.runtime.ratelimit import RateLimit

Progress = Callable[[int, int | None], None]
"""``progress(rows_done, rows_total)``; the total is None for a stream."""


@dataclass(frozen=True)
class Prefix:
    """The prompt prefix a row starts with: a short name (its ``prompt_cache_key``) and its estimated tokens."""

    name: str
    tokens: int


def by_prefix(keys: list[str], prefixes: Mapping[str, Prefix]) -> list[str]:
    """``keys`` with each prompt-prefix group together, groups in order of first appearance, rows in order within
    a group (a stable sort)."""
    first: dict[str, int] = {}
    names = {k: prefixes[k].name if k in prefixes else "" for k in keys}
    for key in keys:
        first.setdefault(names[key], len(first))
    return sorted(keys, key=lambda k: first[names[k]])


@dataclass
class Plan:
    """One window: a key per row (None: not sent, for the reason in ``skips``) and the payload of every key."""

    keys: list[str | None]
    skips: list[Skip | None]
    payloads: dict[str, Any]
    prefixes: dict[str, Prefix] = field(default_factory=dict)
    """Key -> its prompt-prefix group: keys of one group are sent together (``RunOptions.order_by_prefix``)."""


class OneRowJobs:
    """What a task whose jobs are one row each, with JSON values, shares: its outcome is the row's, a failed job is
    never split, and the journal stores values as they are."""

    def split(self, job: Job, outcome: Outcome) -> list[tuple[str, Outcome]]:
        return [(job.key, outcome)]

    def retry_alone(self, outcome: Outcome) -> bool:
        return False

    def encode(self, value: Any) -> Any:
        return value

    def decode(self, stored: Any) -> Any:
        return stored


class Task(Protocol):
    """What an AI function does to each window; the pipeline does everything else."""

    max_concurrency: int | None
    """A cap below ``RunOptions.concurrency`` (a local model runs one batch at a time)."""

    account: tuple[RateLimit, str] | None
    """The provider account's shared rate limit and its name, if any."""

    def plan(self, batch: pa.RecordBatch) -> Plan: ...

    def jobs(self, keys: Sequence[str], payloads: Mapping[str, Any]) -> list[Job]: ...

    def split(self, job: Job, outcome: Outcome) -> list[tuple[str, Outcome]]:
        """A job's outcome per row key (a batch job answers several)."""
        ...

    def retry_alone(self, outcome: Outcome) -> bool:
        """Whether the rows of a failed job of several rows are sent again one by one (so that one bad input
        fails alone), rather than all failing with the job."""
        ...

    def encode(self, value: Any) -> Any:
        """A value as the journal stores it (JSON-able)."""
        ...

    def decode(self, stored: Any) -> Any: ...

    def columns(self, values: list[Any], errors: list[str | None], *, final: bool) -> dict[str, pa.Array] | None:
        """The output columns for a window's values; None while they cannot be typed yet (e.g. no vector seen
        to give the dimension), unless ``final``."""
        ...

    def connect(self) -> AbstractAsyncContextManager[Connection]: ...
