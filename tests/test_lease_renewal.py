"""A journal that fails once while a run renews its row claims (a Postgres connection reset, SQLite's
"database is locked" past its busy timeout: both documented, transient) must not stop the renewal: the claims
would lapse and another run would take the rows over and pay for them again."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from ai_assets.runtime.cache.sqlite import ResultCache
from ai_assets.runtime.leases import Leases


class FlakyJournal:
    """A real SQLite journal whose ``renew`` raises the first ``failures`` times."""

    def __init__(self, journal: ResultCache, failures: int) -> None:
        self.journal = journal
        self.failures = failures
        self.renewed = 0

    def renew(self, owner: str, ttl_s: float) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise OSError("connection reset by peer")
        self.renewed += 1
        self.journal.renew(owner, ttl_s)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.journal, name)


def run_watch(journal: FlakyJournal, seconds: float) -> BaseException | None:
    leases = Leases(journal, ttl_s=6.0)  # type: ignore[arg-type]
    failed: list[str] = []

    async def main() -> BaseException | None:
        async def send(keys: list[str]) -> None:
            return None

        watch = asyncio.ensure_future(leases.watch(lambda keys: {}, lambda k, h: True, send,
                                                   lambda keys, exc: failed.extend(keys)))
        await asyncio.sleep(seconds)
        if watch.done():
            return watch.exception()
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)
        return None

    return asyncio.run(main())


def test_one_failed_renewal_is_tried_again_and_the_watch_goes_on(tmp_path: Path) -> None:
    journal = FlakyJournal(ResultCache(tmp_path / "journal.sqlite"), failures=1)
    started = time.monotonic()
    assert run_watch(journal, 3.5) is None
    assert journal.renewed >= 1, "the claims were never renewed after the journal came back"
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("failures", [1000])
def test_a_journal_down_for_longer_than_the_claims_hold_stops_the_watch(tmp_path: Path, failures: int) -> None:
    journal = FlakyJournal(ResultCache(tmp_path / "journal.sqlite"), failures=failures)
    error = run_watch(journal, 4.5)
    assert isinstance(error, OSError)
