"""Journal writes on one thread, group-committed: as many entries per transaction as are waiting."""

from __future__ import annotations

import asyncio
import queue
import threading
from typing import Any

from ai_assets.runtime.cache import Cache, Entry


class JournalWriter:
    """Journal writes on one thread, as many entries per transaction as are waiting (group commit)."""

    def __init__(self, cache: Cache) -> None:
        self.cache = cache
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name="ai_assets-journal-writer", daemon=True)
        self._thread.start()

    async def write(self, entries: list[Entry]) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._queue.put((entries, loop, done))
        await done

    def _work(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)
                    break
                batch.append(item)
            error: BaseException | None = None
            try:
                self.cache.put_many([entry for entries, _, _ in batch for entry in entries])
            except BaseException as exc:
                error = exc
            for _, loop, done in batch:
                loop.call_soon_threadsafe(_settle, done, error)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()


def _settle(done: asyncio.Future[None], error: BaseException | None) -> None:
    if done.done():
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)
