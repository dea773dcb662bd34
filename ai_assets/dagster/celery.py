"""Dagster's Celery executor, watching the workers that run its steps.

A Celery worker lost whole (its main process and its pool: a container or node gone) reports nothing: the step's
task stays STARTED in the result backend and dagster-celery's run worker waits for it for good, so the run stays
STARTED and a backfill never ends. This executor is dagster-celery's, with one addition: every
``ping_every_s`` it pings the worker each started step runs on (workers publish STARTED with their hostname when
``task_track_started`` is set, as ``deploy/cluster/dagster_celery_config.py`` does), and a step whose worker has
failed every ping for ``lost_after_s`` fails with an error naming the worker (see ``WorkerWatch``). The run then
fails, and the instance's run retries re-execute it from the failure, where the journal answers every row the lost
worker had paid for.

A worker that only loses a pool process is seen by Celery itself (``WorkerLostError``); a step that was taken but
not yet started comes back to the queue after the broker's visibility timeout (see the Celery settings).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import dagster as dg

PING_EVERY_S = 10.0
LOST_AFTER_S = 60.0
PING_TIMEOUT_S = 2.0


class WorkerGoneError(RuntimeError):
    """The Celery worker running a step stopped answering pings."""


class WorkerWatch:
    """Which workers answer pings. The workers asked about since the last round are pinged together, at most once
    per ``ping_every_s``; a worker counts as lost once it has failed ``lost_after_s`` of consecutive pings: its
    silence runs from the first ping it failed to answer to the latest, so it is measured over pings sent and
    never from an old answer. A worker that ran an earlier step long ago is pinged before anything is judged,
    and one nobody asked about in a round starts afresh the next time (its silence in between is unknown).
    ``clock`` is injectable for tests."""

    def __init__(self, app: Any, ping_every_s: float, lost_after_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.app = app
        self.ping_every_s = ping_every_s
        self.lost_after_s = lost_after_s
        self._clock = clock
        self._last_ping = float("-inf")
        self._unanswered: dict[str, tuple[float, float]] = {}  # worker: (first, latest) unanswered ping
        self._wanted: set[str] = set()

    def lost(self, hostname: str) -> float | None:
        """Seconds ``hostname`` has failed pings for, once that is over ``lost_after_s``; else None."""
        self._wanted.add(hostname)
        now = self._clock()
        if now - self._last_ping >= self.ping_every_s:
            self._ping(now)
        first, latest = self._unanswered.get(hostname, (0.0, 0.0))
        silent = latest - first
        return silent if silent > self.lost_after_s else None

    def _ping(self, now: float) -> None:
        self._last_ping = now
        asked, self._wanted = sorted(self._wanted), set()
        replies = self.app.control.ping(destination=asked, timeout=PING_TIMEOUT_S) or []
        answered = {name for reply in replies for name in reply}
        self._unanswered = {name: (self._unanswered.get(name, (now, now))[0], now)
                            for name in asked if name not in answered}


class WatchedResult:
    """A step's ``AsyncResult`` that is also ready, with an error, when the worker running it is lost."""

    def __init__(self, result: Any, watch: WorkerWatch, step_key: str) -> None:
        self._result = result
        self._watch = watch
        self._step_key = step_key
        self._gone: str | None = None

    def ready(self) -> bool:
        if self._result.ready():
            return True
        if self._result.state != "STARTED" or not isinstance(self._result.info, dict):
            return False
        hostname = self._result.info.get("hostname")
        if not isinstance(hostname, str):
            return False
        silent = self._watch.lost(hostname)
        if silent is None:
            return False
        self._gone = (f"Celery worker {hostname!r} running step {self._step_key!r} has not answered pings for "
                      f"{silent:.0f} s (lost_after_s={self._watch.lost_after_s:g}): taken as lost")
        return True

    def get(self) -> Any:
        if self._gone is not None:
            raise WorkerGoneError(self._gone)
        return self._result.get()

    def revoke(self) -> None:
        self._result.revoke()


def _watched_executor(config: dict[str, Any]) -> dg.Executor:
    from dagster._core.execution.retries import RetryMode
    from dagster_celery.core_execution_loop import core_celery_execution_loop
    from dagster_celery.executor import CeleryExecutor, _submit_task

    ping_every_s = float(config.get("ping_every_s", PING_EVERY_S))
    lost_after_s = float(config.get("lost_after_s", LOST_AFTER_S))

    class WatchedCeleryExecutor(CeleryExecutor):
        def execute(self, plan_context: Any, execution_plan: Any) -> Any:
            watches: dict[int, WorkerWatch] = {}  # one per Celery app (the loop makes one per execution)

            def submit(app: Any, context: Any, step: Any, queue: str, priority: int, known_state: Any) -> Any:
                if id(app) not in watches:
                    watches[id(app)] = WorkerWatch(app, ping_every_s, lost_after_s)
                watch = watches[id(app)]
                result = _submit_task(app, context, step, queue, priority, known_state)  # type: ignore[no-untyped-call]
                return WatchedResult(result, watch, step.key)

            return core_celery_execution_loop(  # type: ignore[no-untyped-call]  # dagster-celery is untyped
                plan_context, execution_plan, step_execution_fn=submit)

    return WatchedCeleryExecutor(  # type: ignore[no-untyped-call]
        broker=config.get("broker"), backend=config.get("backend"), config_source=config.get("config_source"),
        include=config.get("include"), retries=RetryMode.from_config(config["retries"]))


def watched_celery_executor() -> dg.ExecutorDefinition:
    """dagster-celery's executor (same config, plus ``ping_every_s`` and ``lost_after_s``) that fails a step whose
    worker is lost instead of waiting for it forever (see the module's docstring)."""
    from dagster_celery.executor import CELERY_CONFIG

    schema = {**CELERY_CONFIG,
              "ping_every_s": dg.Field(float, is_required=False, default_value=PING_EVERY_S,
                                       description="How often the workers running started steps are pinged."),
              "lost_after_s": dg.Field(float, is_required=False, default_value=LOST_AFTER_S,
                                       description="A step fails once its worker has not answered for this long.")}

    @dg.executor(name="celery", config_schema=schema, requirements=dg.multiple_process_executor_requirements())
    def celery(init_context: dg.InitExecutorContext) -> dg.Executor:
        return _watched_executor(dict(init_context.executor_config))

    return celery
