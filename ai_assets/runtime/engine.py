"""The request engine: sends jobs to a provider connection with bounded concurrency, RPM / TPM limits and retries.

Retry layering (one layer per kind of failure, so a row never costs more than ``RetryPolicy.max_attempts``):

* Transport failures (408 / 429 / 5xx, timeouts, dropped connections) are retried **here only**, by tenacity, with
  exponential backoff and full jitter, or exactly the server's ``Retry-After`` / ``retry-after-ms`` when it sends
  one. Providers turn their SDK's own retries off and raise ``TransientError``.
* Invalid output (JSON that does not parse or validate against the Pydantic model) is re-asked **here only**: the
  provider raises ``InvalidOutputError`` carrying the re-ask request instructor built; instructor's own retry loop
  is not used. Tokens of every attempt are added to the usage.
* Both share one budget: ``max_attempts`` requests per row, whatever mix of failures it met.
* ``PermanentError`` (400, 422, ...) fails the row at once; a ``FatalProviderError`` (401, 403, 404) or a spending
  cap (``BudgetExceededError``) stops the whole run, since every other row would fail the same way.
* Sleeping between attempts happens outside the concurrency slot, so one throttled row never idles a slot.
* An answer is handed to ``on_outcome`` (the journal) while its slot is still held: the next request starts only
  once the answer is durable, so a killed run has paid for at most ``concurrency`` answers it did not keep.

Local models go through the same engine (``ai_assets.runtime.local``): one path for retries, timeouts and
per-row errors whatever computes the answer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt

from ai_assets.runtime.budget import Budget, BudgetExceededError
from ai_assets.runtime.errors import (
    AttemptUsage,
    ConfigError,
    FatalProviderError,
    InvalidOutputError,
    PermanentError,
    TransientError,
    bounded,
)
from ai_assets.runtime.limits import Limits, TokenCost
from ai_assets.runtime.retry import RetryPolicy
from ai_assets.runtime.usage import Usage

OnError = Literal["raise", "null"]
WINDOW_PER_SLOT = 4
MIN_WINDOW = 64
T = TypeVar("T")


@dataclass(frozen=True)
class RunOptions:
    """How a function talks to its provider. None of these change an answer, so none enter cache keys.

    ``concurrency``: requests in flight. ``rpm`` / ``tpm``: this run's pace (any rate, exactly; a provider's
    ``RateLimit`` paces a whole account). ``timeout_s``: per request. ``retry``: attempts per row and waits.
    ``on_error``: ``"raise"`` fails the call on the first failed row; ``"null"`` gives it a null value and an error
    text. ``batch_size``: inputs per embedding request (split further to the provider's limits).
    ``retry_failed_rows``: a later run sends rows that failed before (a retry of the same run never does).
    ``window_rows`` / ``window_bytes``: how much of a stream is alive at a time. ``max_cost`` (US dollars, with
    ``prices``) / ``max_tokens``: stop sending once this run's spending reaches the cap."""

    concurrency: int = 16
    rpm: float | None = None
    tpm: float | None = None
    timeout_s: float = 120.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    on_error: OnError = "raise"
    batch_size: int = 64
    retry_failed_rows: bool = True
    window_rows: int = 8192
    window_bytes: int = 64 * 1024 * 1024
    max_cost: float | None = None
    max_tokens: int | None = None

    def __post_init__(self) -> None:
        for name in ("concurrency", "batch_size", "window_rows", "window_bytes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"RunOptions.{name} must be >= 1, got {getattr(self, name)}")
        if self.on_error not in ("raise", "null"):
            raise ConfigError(f"RunOptions.on_error must be 'raise' or 'null', got {self.on_error!r}")
        for name in ("rpm", "tpm", "timeout_s", "max_cost", "max_tokens"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"RunOptions.{name} must be > 0, got {value}")


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
    """One request. ``keys``: the rows it answers when it answers several (an embedding batch)."""

    key: str
    request: dict[str, Any]
    cost: TokenCost = field(default_factory=lambda: TokenCost(0))
    keys: tuple[str, ...] | None = None


@dataclass
class Outcome:
    value: Any = None
    error: str | None = None
    attempts: int = 0
    last_output: str | None = None
    usage: AttemptUsage = field(default_factory=AttemptUsage)
    transient: bool = False
    """The last failure was transient (retries ran out) rather than about the input."""

    @property
    def ok(self) -> bool:
        return self.error is None


OnOutcome = Callable[[Job, Outcome], Awaitable[None]]
STOPS_THE_RUN = (FatalProviderError, BudgetExceededError)


class Engine:
    """Runs jobs as they are submitted, a bounded number at a time, over one connection."""

    def __init__(self, connection: Connection, options: RunOptions, usage: Usage, limits: Limits,
                 budget: Budget | None = None) -> None:
        self.connection = connection
        self.options = options
        self.usage = usage
        self.limits = limits
        self.budget = budget
        # Jobs start through a window a few times wider than the concurrency (rows sleeping before a retry do not
        # idle the slots), never all at once: a million-row partition never holds a million live coroutines.
        self._window = asyncio.Semaphore(max(WINDOW_PER_SLOT * options.concurrency, MIN_WINDOW))
        self._tasks: set[asyncio.Task[None]] = set()
        self._failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def submit(self, job: Job, on_outcome: OnOutcome) -> None:
        """Start ``job`` once the window has room (back-pressure for the caller)."""
        await self.guard(self._window.acquire())
        self._start(job, on_outcome, windowed=True)

    def submit_now(self, job: Job, on_outcome: OnOutcome) -> None:
        """Start ``job`` at once, beside the window (for the parts of a job that failed: never blocks a job's
        own outcome handler on room it holds itself)."""
        self._start(job, on_outcome, windowed=False)

    def _start(self, job: Job, on_outcome: OnOutcome, *, windowed: bool) -> None:
        task = asyncio.ensure_future(self._run(job, on_outcome, windowed))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def guard(self, awaitable: Awaitable[T]) -> T:
        """Await ``awaitable``, unless the run stops first: then raise what stopped it."""
        waiting = asyncio.ensure_future(awaitable)
        watched: set[asyncio.Future[Any]] = {waiting, self._failed}
        await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        if waiting.done():
            return waiting.result()
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        exc = self._failed.exception()
        assert exc is not None
        raise exc

    async def close(self) -> None:
        """Cancel whatever still runs (after a failure) and wait for it to end."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._failed.done():
            self._failed.exception()  # retrieved: no "exception never retrieved" warning at exit

    async def _run(self, job: Job, on_outcome: OnOutcome, windowed: bool) -> None:
        try:
            await self._attempts(job, on_outcome)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # stops the run: a fatal provider error, the budget, or a bug
            if not self._failed.done():
                self._failed.set_exception(exc)
        finally:
            if windowed:
                self._window.release()

    async def _attempts(self, job: Job, on_outcome: OnOutcome) -> None:
        """One job's attempts: the request, then retries and re-asks within ``options.retry.max_attempts``."""
        options, usage = self.options, self.usage
        policy = options.retry
        outcome = Outcome()
        request = job.request
        recorded = False
        retrying = AsyncRetrying(stop=stop_after_attempt(policy.max_attempts), wait=policy.wait,
                                 retry=retry_if_exception_type((TransientError, InvalidOutputError)), reraise=True)
        try:
            async for attempt in retrying:
                with attempt:
                    outcome.attempts += 1
                    if outcome.attempts > 1:
                        usage.retries += 1
                    async with self.limits.slot(job.cost):
                        try:
                            reply = await self._send(request, job, outcome)
                        except InvalidOutputError as exc:
                            request = exc.reask_request
                            raise
                        outcome.value = reply.value
                        await on_outcome(job, outcome)
                        recorded = True
        except STOPS_THE_RUN:
            raise
        except (InvalidOutputError, TransientError, PermanentError) as exc:
            outcome.error = bounded(f"{type(exc).__name__}: {exc}", self.connection.secrets)
            outcome.transient = isinstance(exc, TransientError)
        if not recorded:
            await on_outcome(job, outcome)

    async def _send(self, request: dict[str, Any], job: Job, outcome: Outcome) -> Reply:
        """One request inside its slot, with its usage counted (also for an answer that must be re-asked)."""
        if self.budget is not None:
            self.budget.reserve(job.cost)  # raises BudgetExceededError once the cap is reached
        self.usage.requests += 1
        started = time.perf_counter()
        try:
            reply = await asyncio.wait_for(self.connection.send(request), self.options.timeout_s)
        except TimeoutError as exc:
            raise TransientError(f"no answer within {self.options.timeout_s:g}s") from exc
        except InvalidOutputError as exc:
            await self._spent(job, outcome, exc.usage)
            self.usage.reasks += 1
            outcome.last_output = exc.raw
            raise
        finally:
            self.usage.latency(time.perf_counter() - started)
            if self.budget is not None:
                self.budget.release(job.cost)
        await self._spent(job, outcome, reply.usage)
        return reply

    async def _spent(self, job: Job, outcome: Outcome, billed: AttemptUsage) -> None:
        self.usage.add_tokens(billed)
        outcome.usage.add(billed)
        if self.budget is not None:
            self.budget.spend(billed)
        await self.limits.settle(job.cost, billed)
