"""The request engine: sends jobs to a provider connection with bounded concurrency, RPM / TPM limits and retries.

Retry layering (one layer per kind of failure, so a row never costs more than ``RetryPolicy.max_attempts``):

* Transport failures (408 / 429 / 5xx, timeouts, dropped connections) are retried **here only**, by tenacity, with
  exponential backoff and full jitter, or exactly the server's ``Retry-After`` / ``retry-after-ms`` when it sends
  one. Providers turn their SDK's own retries off (``max_retries=0``) and raise ``TransientError``.
* Invalid output (JSON that does not parse or validate against the Pydantic model) is re-asked **here only**: the
  provider raises ``InvalidOutputError`` carrying the re-ask request instructor built; instructor's own retry loop
  is not used. Tokens of every attempt are added to the usage.
* Both share one budget: ``max_attempts`` requests per row, whatever mix of failures it met.
* ``PermanentError`` (400, 422, ...) fails the row at once; a ``fatal`` one (401, 403, 404) stops the whole run,
  since every other row would fail the same way.
* Sleeping between attempts happens outside the concurrency slot, so one throttled row never idles a slot.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt

from ai_assets.runtime.errors import (
    AttemptUsage,
    FatalProviderError,
    InvalidOutputError,
    PermanentError,
    TransientError,
    bounded,
)
from ai_assets.runtime.limits import Limits
from ai_assets.runtime.retry import RetryPolicy
from ai_assets.runtime.usage import Usage

OnError = Literal["raise", "null"]
WINDOW_PER_SLOT = 4
MIN_WINDOW = 256


@dataclass(frozen=True)
class RunOptions:
    """How a function talks to its provider. None of these change an answer, so none enter cache keys."""

    concurrency: int = 16
    rpm: int | None = None
    tpm: int | None = None
    timeout_s: float = 120.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    on_error: OnError = "raise"
    batch_size: int = 64
    retry_failed_rows: bool = True
    """Send rows that failed in an earlier run again; False keeps their cached error as final."""

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.on_error not in ("raise", "null"):
            raise ValueError(f"on_error must be 'raise' or 'null', got {self.on_error!r}")


@dataclass
class Reply:
    """A parsed answer and the tokens it cost."""

    value: Any
    usage: AttemptUsage


class Connection(Protocol):
    """An open connection to a provider: sends one request, raises the runtime's error types."""

    secrets: Sequence[str]

    async def send(self, request: dict[str, Any]) -> Reply: ...


@dataclass(frozen=True)
class Job:
    key: str
    request: dict[str, Any]
    tokens: int


@dataclass
class Outcome:
    value: Any = None
    error: str | None = None
    attempts: int = 0
    last_output: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


async def run_jobs(
    jobs: Sequence[Job],
    connection: Connection,
    options: RunOptions,
    usage: Usage,
    on_outcome: Callable[[Job, Outcome], None] | None = None,
) -> list[Outcome]:
    """Run every job; each outcome is handed to ``on_outcome`` (e.g. the cache) as soon as it is final."""
    limits = Limits(options.concurrency, options.rpm, options.tpm)
    # Jobs start through a window a few times wider than the concurrency (so rows sleeping before a retry do not
    # idle the slots) instead of all at once: a million-row partition never holds a million live coroutines.
    window = asyncio.Semaphore(max(WINDOW_PER_SLOT * options.concurrency, MIN_WINDOW))
    fatal: list[BaseException] = []

    async def windowed(job: Job) -> Outcome:
        try:
            outcome = await _run_one(job, connection, options, limits, usage)
        except BaseException as exc:
            fatal.append(exc)
            raise
        finally:
            window.release()
        if on_outcome is not None:
            on_outcome(job, outcome)
        return outcome

    tasks: list[asyncio.Task[Outcome]] = []
    try:
        for job in jobs:
            await window.acquire()
            if fatal:
                window.release()
                break
            tasks.append(asyncio.ensure_future(windowed(job)))
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def _run_one(job: Job, connection: Connection, options: RunOptions, limits: Limits, usage: Usage) -> Outcome:
    """One job's attempts: the request, then retries and re-asks within ``options.retry.max_attempts``."""
    policy = options.retry
    outcome = Outcome()
    request = job.request
    retrying = AsyncRetrying(
        stop=stop_after_attempt(policy.max_attempts),
        wait=policy.wait,
        retry=retry_if_exception_type((TransientError, InvalidOutputError)),
        reraise=True,
    )
    try:
        async for attempt in retrying:
            with attempt:
                outcome.attempts += 1
                if outcome.attempts > 1:
                    usage.retries += 1
                async with limits.slot(job.tokens):
                    usage.requests += 1
                    started = time.perf_counter()
                    try:
                        reply = await asyncio.wait_for(connection.send(request), options.timeout_s)
                    except TimeoutError as exc:
                        raise TransientError(f"no answer within {options.timeout_s:g}s") from exc
                    except InvalidOutputError as exc:
                        usage.add_tokens(exc.usage)
                        usage.reasks += 1
                        outcome.last_output = exc.raw
                        request = exc.reask_request
                        raise
                    finally:
                        usage.latencies_s.append(time.perf_counter() - started)
                usage.add_tokens(reply.usage)
                outcome.value = reply.value
    except FatalProviderError:
        raise
    except (TransientError, InvalidOutputError, PermanentError) as exc:
        outcome.error = bounded(f"{type(exc).__name__}: {exc}", connection.secrets)
    return outcome
