"""The request engine: sends jobs to a provider connection with bounded concurrency, RPM / TPM limits and retries.

Retry layering (one layer per kind of failure, so a row never costs more than ``RetryPolicy.max_attempts``):

* Transport failures (408 / 429 / 5xx, timeouts, dropped connections) are retried **here only**, with exponential
  backoff and full jitter, or exactly the server's ``Retry-After`` / ``retry-after-ms`` when it sends one
  (``RetryPolicy.delay``), but never longer than ``RetryPolicy.max_wait``: a longer ``Retry-After`` fails the row
  at once, naming the wait; waits of 5 s and more are logged. Providers turn their SDK's own retries off and
  raise ``TransientError``. The loop is a dozen lines rather than tenacity's ``AsyncRetrying``: one of those per
  row held plain prompts at 5 ms latency to 4,019 rows/s where this loop reaches 5,650 (N = 20,000, 64 in
  flight, one run each), all of it spent on the rows that never retry.
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
per-row errors whatever computes the answer. A connection that times its own requests (``SelfTimed``: the embedded
llama.cpp, by its measured speed) gives the engine each attempt's bound instead of ``RunOptions.timeout_s``, and
fails an attempt only once the engine has stopped working on it.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

from ai_assets.runtime.budget import Budget, BudgetExceededError
from ai_assets.runtime.errors import (
    AttemptUsage,
    BadAnswerError,
    FatalProviderError,
    InvalidOutputError,
    PermanentError,
    TransientError,
    bounded,
)
from ai_assets.runtime.limits import Limits, TokenCost
from ai_assets.runtime.options import OnError, RunOptions
from ai_assets.runtime.telemetry import CallTrace
from ai_assets.runtime.usage import Usage

__all__ = ["Connection", "Engine", "Job", "OnError", "Outcome", "Reply", "RunOptions"]
WINDOW_PER_SLOT = 4
MIN_WINDOW = 64
LONG_WAIT_S = 5.0
LONG_WAIT_LOG_EVERY_S = 10.0
T = TypeVar("T")
logger = logging.getLogger(__name__)


@dataclass
class Reply:
    """A parsed answer and the tokens it cost."""

    value: Any
    usage: AttemptUsage
    headers: Mapping[str, str] | None = None
    """The answer's rate-limit headers (``ratelimit.headers.rate_headers``), which pace the account."""


class Connection(Protocol):
    """An open connection to a provider: sends one request, raises the runtime's error types."""

    secrets: Sequence[str]

    async def send(self, request: dict[str, Any]) -> Reply: ...


@runtime_checkable
class SelfTimed(Protocol):
    """A connection that bounds its own requests (from a local engine's measured speed and its queue)."""

    def timeout_for(self, request: dict[str, Any]) -> float: ...


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
    latency_s: float | None = None
    """The last request's latency."""

    @property
    def ok(self) -> bool:
        return self.error is None


OnOutcome = Callable[[Job, Outcome], Awaitable[None]]
STOPS_THE_RUN = (FatalProviderError, BudgetExceededError)


class Engine:
    """Runs jobs as they are submitted, a bounded number at a time, over one connection."""

    def __init__(self, connection: Connection, options: RunOptions, usage: Usage, limits: Limits,
                 budget: Budget | None = None, trace: CallTrace | None = None) -> None:
        self.connection = connection
        self.options = options
        self.usage = usage
        self.limits = limits
        self.budget = budget
        self.trace = trace
        # Jobs start through a window a few times wider than the concurrency (rows sleeping before a retry do not
        # idle the slots), never all at once: a million-row partition never holds a million live coroutines.
        self._window = asyncio.Semaphore(max(WINDOW_PER_SLOT * options.concurrency, MIN_WINDOW))
        self._tasks: set[asyncio.Task[None]] = set()
        self._failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._last_wait_log = -LONG_WAIT_LOG_EVERY_S
        self._timed = connection if isinstance(connection, SelfTimed) else None

    async def submit(self, job: Job, on_outcome: OnOutcome) -> None:
        """Start ``job`` once the window has room (back-pressure for the caller)."""
        if self._failed.done():
            await self.guard(self._failed)
        if self._window.locked():
            await self.guard(self._window.acquire())
        else:
            await self._window.acquire()  # room now: no need to watch for a failure meanwhile
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
        if isinstance(awaitable, asyncio.Future) and awaitable.done() and not self._failed.done():
            done: T = awaitable.result()
            return done
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
        """Cancel whatever still runs (after a failure) and wait for it to end. A spending cap cancels nothing:
        the requests already sent finish and their answers are journalled (they are paid for); the rest stop at
        the cap."""
        capped = self._failed.done() and isinstance(self._failed.exception(), BudgetExceededError)
        if capped and self._tasks:
            await asyncio.wait(list(self._tasks), timeout=self.options.timeout_s)
        if capped and self.budget is not None:
            exc = self._failed.exception()
            assert isinstance(exc, BudgetExceededError)
            exc.restate(self.budget)
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
        policy = self.options.retry
        outcome = Outcome()
        request = job.request
        try:
            for number in range(1, policy.max_attempts + 1):
                outcome.attempts = number
                if number > 1:
                    self.usage.retries += 1
                try:
                    async with self.limits.slot(job.cost):
                        try:
                            reply = await self._send(request, job, outcome)
                        except InvalidOutputError as exc:
                            request = exc.reask_request
                            raise
                        outcome.value = reply.value
                        await on_outcome(job, outcome)  # durable before the slot is given back
                        return
                except (TransientError, InvalidOutputError) as exc:
                    if isinstance(exc, TransientError):
                        await self.limits.learn(exc.headers)  # a 429 reports the limit it hit
                    if number == policy.max_attempts:
                        raise
                    wait = policy.delay(number, exc)  # raises for a Retry-After over max_wait
                    self._say_wait(wait, job, exc)
                    await asyncio.sleep(wait)  # outside the slot
        except STOPS_THE_RUN:
            raise
        except (InvalidOutputError, TransientError, PermanentError) as exc:
            outcome.error = bounded(f"{type(exc).__name__}: {exc}", self.connection.secrets)
            outcome.transient = isinstance(exc, TransientError)
        await on_outcome(job, outcome)

    def _say_wait(self, wait: float, job: Job, error: BaseException) -> None:
        """Log a long wait (at most one line per ``LONG_WAIT_LOG_EVERY_S``), so a slow run says why."""
        now = time.monotonic()
        if wait >= LONG_WAIT_S and now - self._last_wait_log >= LONG_WAIT_LOG_EVERY_S:
            self._last_wait_log = now
            logger.warning("waiting %.1fs before retrying row %s: %s", wait, job.key[:16],
                           bounded(str(error), self.connection.secrets, 160))

    async def _send(self, request: dict[str, Any], job: Job, outcome: Outcome) -> Reply:
        """One request inside its slot, with its usage counted (also for an answer that must be re-asked)."""
        held = self.budget.reserve(job.cost) if self.budget is not None else 0  # raises at the cap
        self.usage.requests += 1
        started = time.perf_counter()
        limit = self.options.timeout_s if self._timed is None else self._timed.timeout_for(request)
        got: Reply | None = None
        try:
            async with asyncio.timeout(limit):  # no extra task per request, unlike wait_for
                reply = got = await self.connection.send(request)
        except TimeoutError as exc:
            raise TransientError(f"no answer within {limit:g}s") from exc
        except InvalidOutputError as exc:
            await self._spent(job, outcome, exc.usage)
            self.usage.reasks += 1
            outcome.last_output = exc.raw
            raise
        except BadAnswerError as exc:  # answered (and billed) with nothing usable: the row fails
            await self._spent(job, outcome, exc.usage)
            raise
        finally:
            outcome.latency_s = time.perf_counter() - started
            self.usage.latency(outcome.latency_s)
            if self.trace is not None:  # spans and metrics, when OpenTelemetry is on (runtime.telemetry)
                self.trace.request(job.key, request, outcome.attempts, outcome.latency_s, got,
                                   None if got is not None else sys.exc_info()[1])
            if self.budget is not None:
                self.budget.release(job.cost, held)
        await self._spent(job, outcome, reply.usage)
        await self.limits.learn(reply.headers)
        return reply

    async def _spent(self, job: Job, outcome: Outcome, billed: AttemptUsage) -> None:
        self.usage.add_tokens(billed)
        outcome.usage.add(billed)
        if self.budget is not None:
            self.budget.spend(billed)
        await self.limits.settle(job.cost, billed)
