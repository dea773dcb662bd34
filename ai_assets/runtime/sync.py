"""Running the async pipeline from sync code: a coroutine to completion, or an async stream as an iterator."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
_DONE = object()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _in_running_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def run_sync(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine from sync code; from inside a running loop (Jupyter), on a worker thread."""

    def run() -> T:
        # The result leaves through a box, not as the task's return value: on exit asyncio.Runner calls
        # signal.getsignal(), whose failed Enum lookup formats repr(task) and with it the whole result (seconds
        # of numpy repr for a few thousand vectors; bench/bench_embed.py showed 0.55 of raw encode before this).
        box: list[T] = []

        async def main() -> None:
            box.append(await make())

        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(main())
        return box[0]

    if not _in_running_loop():
        return run()
    results: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            results.append(run())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, name="ai_assets-run")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return results[0]


def iterate_sync(make: Callable[[], AsyncIterator[T]], *, ahead: int = 2) -> Iterator[T]:
    """Iterate an async stream from sync code: it runs on an event loop of its own thread, at most ``ahead``
    items in front of the consumer (requests in flight keep going meanwhile). Closing the iterator early stops
    the stream, and its ``finally`` blocks run before the close returns."""
    items: queue.SimpleQueue[Any] = queue.SimpleQueue()
    started = threading.Event()
    state: dict[str, Any] = {}

    async def main() -> None:
        state["loop"] = asyncio.get_running_loop()
        state["space"] = space = asyncio.Semaphore(ahead)
        state["task"] = asyncio.current_task()
        started.set()
        stream = make()
        try:
            async for item in stream:
                await space.acquire()
                items.put(item)
        except asyncio.CancelledError:
            items.put((_DONE, None))
            return
        except BaseException as exc:
            items.put((_DONE, exc))
            return
        finally:
            close = getattr(stream, "aclose", None)
            if close is not None:
                await close()
        items.put((_DONE, None))

    def run() -> None:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(main())

    thread = threading.Thread(target=run, name="ai_assets-stream", daemon=True)
    thread.start()
    started.wait()
    loop: asyncio.AbstractEventLoop = state["loop"]
    finished = False
    try:
        while True:
            item = items.get()
            if isinstance(item, tuple) and len(item) == 2 and item[0] is _DONE:
                finished = True
                if item[1] is not None:
                    raise item[1]
                return
            with contextlib.suppress(RuntimeError):  # the stream may have ended and closed its loop already
                loop.call_soon_threadsafe(state["space"].release)
            yield item
    finally:
        if not finished and thread.is_alive():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(state["task"].cancel)
        thread.join()
