"""A shared rate limit keeps its promise when a process is kept off the CPU between its permit and its send.

What it models: a provider's requests-per-minute limit counted over a sliding window (OpenAI's rate-limit guide:
limits are requests per minute, may be enforced over shorter periods, and a request over them gets a 429 with
Retry-After; the fake server's strict window does the same). Requests paced 2 % below the limit leave 2 % of a
window as slack; a request that takes its permit, is descheduled (a machine at load 10: the issue's failure) and
goes late bunches with the requests that go on time after it, and a window then holds more than the limit.

Two event loops on two threads stand for two processes sharing one account through a real file store; one of them
stalls (a blocking sleep on its loop, as a process the scheduler does not run) again and again. Every request's
send instant is recorded where the request would be written to the socket, right after ``Limits.slot`` lets it go.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from ai_assets.runtime.limits import Limits, TokenCost
from ai_assets.runtime.ratelimit import RateLimit

pytestmark = pytest.mark.slow

RPM = 480  # 8 a second: 40 requests in any 5-s window
WINDOW_S = 5.0
EACH = 40


def most_in_a_window(sends: list[float], window_s: float) -> int:
    sends = sorted(sends)
    return max(sum(1 for t in sends[i:] if t - start < window_s) for i, start in enumerate(sends))


def run(limits: Limits, sends: list[float], stall_s: float, stop: threading.Event) -> None:
    async def request() -> None:
        async with limits.slot(TokenCost(10)):
            sends.append(time.monotonic())

    async def stalls() -> None:
        while not stop.is_set():
            await asyncio.sleep(0.7)
            time.sleep(stall_s)  # the whole loop stops, as a descheduled process does

    async def main() -> None:
        stalling = asyncio.create_task(stalls()) if stall_s else None
        await asyncio.gather(*(request() for _ in range(EACH)))
        if stalling is not None:
            stalling.cancel()

    asyncio.run(main())


def test_a_process_stalled_between_permit_and_send_does_not_bunch_past_the_limit(tmp_path: Path) -> None:
    account = RateLimit(rpm=RPM, store=f"file://{tmp_path}/limits", account="shared")
    stalled, steady = (Limits.build(16, None, None, account=(account, "acct")) for _ in range(2))
    sends: list[float] = []
    stop = threading.Event()
    threads = [threading.Thread(target=run, args=(stalled, sends, 0.4, stop)),
               threading.Thread(target=run, args=(steady, sends, 0.0, stop))]
    for thread in threads:
        thread.start()
    threads[1].join(timeout=60)
    stop.set()
    threads[0].join(timeout=60)
    assert len(sends) == 2 * EACH
    most, span = most_in_a_window(sends, WINDOW_S), max(sends) - min(sends)
    print(f"most in a {WINDOW_S:g}-s window: {most} (limit {RPM * WINDOW_S / 60:g}); slots given up: stalled "
          f"{stalled.given_up}, steady {steady.given_up}; rate {(len(sends) - 1) / span:.2f}/s")
    assert most <= RPM * WINDOW_S / 60
    assert stalled.given_up > 0  # the stalled process's late permits were given up, not used
    assert (len(sends) - 1) / span <= RPM / 60  # never faster than the limit
    assert (len(sends) - 1) / span >= 0.6 * RPM / 60  # and given-up slots cost a share of the rate, not all of it
