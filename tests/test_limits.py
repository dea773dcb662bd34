"""Rate limits, measured by what the fake server saw: the rate over the run, the largest burst in any window, and
the 429s a server enforcing the same limit would have answered."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pytest

from ai_assets import OpenAICompatibleProvider, PromptParams, RateLimit, RunOptions, prompt
from ai_assets.testing import FakeOpenAIServer
from tests.services import Service

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
WINDOW_S = 5.0  # the server's sliding window: 240 rpm is 20 requests in any 5 s, so 60 requests fill it 3 times


def arrivals(server: FakeOpenAIServer) -> list[tuple[float, int]]:
    return sorted(server.stats().timeline)


def rate(points: Sequence[tuple[float, int]], *, tokens: bool) -> float:
    """Requests (or tokens) a second between the first and the last arrival: each arrival after the first
    spent one interval of the limit."""
    span = points[-1][0] - points[0][0]
    amount = sum(t for _, t in points[1:]) if tokens else len(points) - 1
    return amount / span


def largest_burst(points: Sequence[tuple[float, int]], window_s: float, *, tokens: bool) -> float:
    """The most requests (or tokens) that arrived within any ``window_s`` seconds."""
    best = 0.0
    for i, (start, _) in enumerate(points):
        inside = [t for at, t in points[i:] if at - start <= window_s]
        best = max(best, sum(inside) if tokens else len(inside))
    return best


def rows(n: int, chars: int = 40) -> pa.Table:
    return pa.table({"text": [f"{i:04d} " + "x" * (chars - 5) for i in range(n)]})


def test_rpm_below_sixty_is_paced_exactly(server: FakeOpenAIServer, llm: OpenAICompatibleProvider) -> None:
    n, rpm = 9, 30  # one request every 2 s; the old limiter raised anything below 60 to 60
    prompt(rows(n), "{text}", provider=llm, options=RunOptions(concurrency=8, rpm=rpm))
    points = arrivals(server)
    assert len(points) == n
    assert rate(points, tokens=False) == pytest.approx(rpm / 60, rel=0.05)
    # No burst at start or anywhere: any 2 s hold at most one interval's request plus the one that opens it.
    assert largest_burst(points, 1.9, tokens=False) == 1


def test_tpm_paces_large_requests_by_the_tokens_they_need(server: FakeOpenAIServer,
                                                          llm: OpenAICompatibleProvider) -> None:
    n, tpm = 9, 60_000  # about 1,000 tokens a request at 1,000 tokens a second: one request a second
    params = PromptParams(max_output_tokens=8)
    prompt(rows(n, chars=3_990), "{text}", provider=llm, params=params, options=RunOptions(concurrency=8, tpm=tpm))
    points = arrivals(server)
    assert len(points) == n and min(t for _, t in points) > 990
    assert rate(points, tokens=True) == pytest.approx(tpm / 60, rel=0.05)
    assert largest_burst(points, 0.9, tokens=True) <= max(t for _, t in points)  # one request per second at most


def test_a_server_enforcing_the_same_limit_refuses_nothing(server: FakeOpenAIServer,
                                                           llm: OpenAICompatibleProvider) -> None:
    server.set_rate_limit(rpm=240, tpm=60_000, window_s=WINDOW_S)
    try:
        prompt(rows(30, chars=400), "{text}", provider=llm, params=PromptParams(max_output_tokens=16),
               options=RunOptions(concurrency=16, rpm=240, tpm=60_000))
        stats = server.stats()
        assert stats.rate_limited == 0 and stats.chat_requests == 30
    finally:
        server.set_rate_limit()


WORKER = """
import pathlib, sys, time, pyarrow as pa
from ai_assets import OpenAICompatibleProvider, RateLimit, RunOptions, prompt
base_url, store, worker, n, gate = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), pathlib.Path(sys.argv[5])
llm = OpenAICompatibleProvider("fake", base_url=base_url, api_key="sk-shared-account",
                               rate_limit=RateLimit(rpm=240, store=None if store == "-" else store))
table = pa.table({"text": [f"worker {worker} row {i}" for i in range(n)]})
(gate.parent / f"ready-{worker}").touch()
while not gate.exists():  # every worker starts sending at once: the rate is the limiter's, not the start-up's
    time.sleep(0.01)
out = prompt(table, "{text}", provider=llm, options=RunOptions(concurrency=8, on_error="null"))
if store != "-":
    assert out.table.column("response").null_count == 0, out.table.column("response_error").to_pylist()
"""


BURN = "import sys, time\nend = time.monotonic() + float(sys.argv[1])\nwhile time.monotonic() < end:\n    pass\n"


def burners(count: int, seconds: float) -> list[subprocess.Popen[bytes]]:
    """``count`` processes that spin on a CPU for ``seconds`` (each ends by itself): a loaded machine."""
    return [subprocess.Popen([sys.executable, "-c", BURN, str(seconds)]) for _ in range(count)]


def started(workers: int, base_url: str, store: str, rows_each: int) -> list[subprocess.Popen[bytes]]:
    """``workers`` processes, released together once each has imported and built its provider: a process that
    starts late (a loaded machine takes seconds to import) would otherwise leave gaps that lower the measured
    rate without the limiter having anything to do with it (seen with 4 pytest workers on 2 cores: 3.35/s)."""
    gate = Path(tempfile.mkdtemp()) / "go"
    processes = [subprocess.Popen([sys.executable, "-c", WORKER, base_url, store, str(w), str(rows_each), str(gate)],
                                  cwd=ROOT) for w in range(workers)]
    deadline = time.monotonic() + 180
    while len(list(gate.parent.glob("ready-*"))) < workers:
        assert time.monotonic() < deadline and all(p.poll() is None for p in processes), "a worker did not start"
        time.sleep(0.05)
    gate.touch()
    return processes


def run_workers(server: FakeOpenAIServer, store: str, workers: int = 4, rows_each: int = 15, load: int = 0) -> None:
    """``workers`` processes sharing one account's limit (240 rpm) through ``store``, against a strict
    sliding-window server that answers 429 above that limit (no tolerance: a request spaced exactly at the limit
    and jittered a millisecond early is refused, so only the limiter's headroom keeps this at 0)."""
    server.set_rate_limit(rpm=240, window_s=WINDOW_S)
    load_processes = burners(load, seconds=workers * rows_each / 4 + 15)
    try:
        processes = started(workers, server.base_url, store, rows_each)
        for process in processes:
            assert process.wait(timeout=300) == 0
        stats = server.stats()
        points = arrivals(server)
        assert stats.rate_limited == 0, f"{stats.rate_limited} requests refused by the server"
        assert len(points) == workers * rows_each
        assert rate(points, tokens=False) == pytest.approx(240 / 60, rel=0.05)
        assert largest_burst(points, WINDOW_S - 1e-6, tokens=False) <= 240 * WINDOW_S / 60
    finally:
        for burner in load_processes:
            burner.kill()
            burner.wait()
        server.set_rate_limit()


def test_four_processes_share_one_account_limit_through_a_file_store(server: FakeOpenAIServer,
                                                                     tmp_path: Path) -> None:
    run_workers(server, f"file://{tmp_path}/limits")


def test_four_processes_share_one_account_limit_through_redis(server: FakeOpenAIServer, redis: Service) -> None:
    run_workers(server, redis.url)


def test_four_processes_share_one_account_limit_through_postgres(server: FakeOpenAIServer, pg_url: str) -> None:
    run_workers(server, pg_url)


def test_the_shared_limit_holds_on_a_loaded_machine(server: FakeOpenAIServer, pg_url: str) -> None:
    """The same four processes while eight more spin on the CPUs (load about 12 on two cores): a permit taken at
    one instant and a request sent late under CPU pressure must not bunch past the limit."""
    run_workers(server, pg_url, load=8)


def test_a_limit_held_in_this_process_only_is_exceeded_by_four(server: FakeOpenAIServer) -> None:
    """The control: without a shared store, four processes send four times the limit and meet 429s."""
    server.set_rate_limit(rpm=240, window_s=WINDOW_S)
    try:
        processes = started(4, server.base_url, "-", 15)
        for process in processes:
            assert process.wait(timeout=300) == 0
        assert server.stats().rate_limited > 0
    finally:
        server.set_rate_limit()


def test_rate_limit_config_is_checked() -> None:
    with pytest.raises(ValueError, match="rpm must be > 0"):
        RateLimit(rpm=0)


def test_without_headroom_a_strict_window_refuses_the_request_spaced_exactly_at_the_limit(
        server: FakeOpenAIServer, llm: OpenAICompatibleProvider) -> None:
    """The control for the headroom: paced exactly at 240 rpm, the 21st request lands on the window's edge and
    the strict server refuses at least one request; with the default 2 % headroom it refuses none."""
    server.set_rate_limit(rpm=240, window_s=WINDOW_S)
    try:
        prompt(rows(30), "{text}", provider=llm, options=RunOptions(concurrency=8, rpm=240, rate_headroom=0.0))
        exact = server.stats().rate_limited
        server.reset()
        server.set_rate_limit(rpm=240, window_s=WINDOW_S)
        prompt(rows(30, chars=41), "{text}", provider=llm, options=RunOptions(concurrency=8, rpm=240))
        assert server.stats().rate_limited == 0
        assert exact >= 1
    finally:
        server.set_rate_limit()


def test_a_request_larger_than_the_whole_tpm_limit_fails_its_row_at_once(llm: OpenAICompatibleProvider) -> None:
    table = pa.table({"text": ["short", "y" * 40_000]})
    out = prompt(table, "{text}", provider=llm, params=PromptParams(max_output_tokens=8),
                 options=RunOptions(tpm=6_000, on_error="null"))
    assert out.table.column("response")[0].as_py() is not None
    error = out.table.column("response_error")[1].as_py()
    assert "more than the whole limit of tpm=6000" in error
