"""Failover to fallback providers, with a circuit breaker shared by every worker process.

Modelled behaviour: the circuit-breaker pattern as Nygard's "Release It!", Polly and resilience4j document it
(closed -> open after N consecutive failures -> one half-open probe after a cool-down -> closed on its success,
open again on its failure); HTTP semantics of RFC 9110 (5xx: the server failed, try elsewhere; 4xx: the request
is at fault, the same request fails everywhere; 429: too many requests, the server is up) and Anthropic's 529
"overloaded_error". Primaries and fallbacks are real fake servers on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from ai_assets import OpenAICompatibleProvider, RunOptions, prompt
from ai_assets.providers.failover import Failover, member_names
from ai_assets.runtime.cache import open_cache
from ai_assets.runtime.errors import ConfigError
from ai_assets.runtime.ratelimit.breaker import BreakerRecord, BreakerSettings, breaker_name, step
from ai_assets.runtime.ratelimit.stores import FileStore, MemoryStore
from ai_assets.testing import FakeOpenAIServer, Fault
from tests.services import Service

ROOT = Path(__file__).resolve().parents[1]


# -- the breaker's rule -----------------------------------------------------------------------------------------
def test_the_breaker_opens_after_threshold_failures_probes_once_after_the_cooldown_and_closes_on_success() -> None:
    record, threshold, cooldown = BreakerRecord(), 3, 10.0
    for now in (0.0, 1.0):
        record, verdict = step(record, "failure", now, threshold, cooldown)
        assert verdict == "closed"
    assert step(record, "ask", 1.5, threshold, cooldown)[1] == "suspect"  # closed, failures on record
    record, verdict = step(record, "failure", 2.0, threshold, cooldown)
    assert verdict == "open"
    assert step(record, "ask", 11.9, threshold, cooldown)[1] == "open"  # still cooling down
    record, verdict = step(record, "ask", 12.0, threshold, cooldown)
    assert verdict == "probe"
    assert step(record, "ask", 12.1, threshold, cooldown)[1] == "open"  # one probe at a time
    failed, verdict = step(record, "failure", 12.5, threshold, cooldown)  # the probe failed: a new cool-down
    assert verdict == "open" and step(failed, "ask", 20.0, threshold, cooldown)[1] == "open"
    assert step(failed, "ask", 22.5, threshold, cooldown)[1] == "probe"
    record, verdict = step(record, "success", 12.5, threshold, cooldown)
    assert (record, verdict) == (BreakerRecord(), "closed")
    assert step(record, "ask", 12.6, threshold, cooldown)[1] == "closed"


@given(st.lists(st.tuples(st.sampled_from(["ask", "failure", "success"]), st.floats(0, 5)), max_size=60),
       st.integers(1, 6), st.floats(0.5, 10))
def test_the_breaker_never_lets_two_probes_out_in_one_cooldown_and_success_always_closes(
        events: list[tuple[str, float]], threshold: int, cooldown: float) -> None:
    record, now, last_probe = BreakerRecord(), 0.0, None
    consecutive = 0
    for event, gap in events:
        now += gap
        was_open, opened_at = bool(record.opened_at), record.opened_at
        record, verdict = step(record, event, now, threshold, cooldown)  # type: ignore[arg-type]
        if event == "success":
            assert verdict == "closed" and record == BreakerRecord()
            consecutive, last_probe = 0, None
        elif event == "failure":
            consecutive += 1
            assert (verdict == "open") == (was_open or consecutive >= threshold)
        elif not was_open:
            assert verdict == ("suspect" if consecutive else "closed")
        elif verdict == "probe":
            assert now - opened_at >= cooldown
            assert last_probe is None or now - last_probe >= cooldown
            last_probe = now


def test_breaker_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="threshold"):
        BreakerSettings(threshold=0)
    with pytest.raises(ConfigError, match="cooldown_s"):
        BreakerSettings(cooldown_s=float("nan"))


def test_a_breaker_is_keyed_by_the_providers_identity_never_its_key() -> None:
    a = OpenAICompatibleProvider("m", base_url="http://h:1/v1", api_key="sk-first-secret-key")
    b = OpenAICompatibleProvider("m", base_url="http://h:1/v1", api_key="sk-other-secret-key")
    assert breaker_name(a.identity()) == breaker_name(b.identity())
    assert "sk-" not in breaker_name(a.identity()) and "h:1" not in breaker_name(a.identity())


def test_members_are_named_by_provider_and_model_and_told_apart_by_host() -> None:
    assert member_names([{"provider": "openai-compatible", "model": "a", "base_url": "http://x:1/v1"},
                         {"provider": "openai-compatible", "model": "a", "base_url": "http://y:2/v1"},
                         {"provider": "anthropic", "model": "c"}]) == [
        "openai-compatible:a@x:1", "openai-compatible:a@y:2", "anthropic:c"]


async def _shared(make: object) -> None:
    first, second = make(), make()  # type: ignore[operator]  # two clients of one store, as two processes are
    name = f"breaker:test-{time.monotonic_ns()}"
    for _ in range(2):
        assert await first.breaker(name, "failure", 3, 60.0) == "closed"
    assert await second.breaker(name, "ask", 3, 60.0) == "suspect"
    assert await second.breaker(name, "failure", 3, 60.0) == "open"
    assert await first.breaker(name, "ask", 3, 60.0) == "open"
    assert await first.breaker(name, "ask", 3, 0.0) == "probe"  # cool-down over (a zero one here)
    assert await second.breaker(name, "success", 3, 0.0) == "closed"
    assert await first.breaker(name, "ask", 3, 60.0) == "closed"


def test_breaker_state_is_shared_through_a_file_store(tmp_path: Path) -> None:
    asyncio.run(_shared(lambda: FileStore(tmp_path / "limits")))


def test_breaker_state_is_shared_through_redis(redis: Service) -> None:
    from ai_assets.runtime.ratelimit.stores import RedisStore

    asyncio.run(_shared(lambda: RedisStore(redis.url)))


def test_breaker_state_is_shared_through_postgres(pg_url: str) -> None:
    from ai_assets.runtime.ratelimit.stores import PostgresStore

    asyncio.run(_shared(lambda: PostgresStore(pg_url)))


def test_a_corrupt_breaker_file_reads_as_closed(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    asyncio.run(store.breaker("b", "ask", 3, 1.0))
    for path in tmp_path.iterdir():
        path.write_text("garbage \x00 here")
    assert asyncio.run(store.breaker("b", "ask", 3, 1.0)) == "closed"
    assert asyncio.run(MemoryStore().breaker("b", "ask", 3, 1.0)) == "closed"


# -- failing over -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def servers() -> object:
    with FakeOpenAIServer() as primary, FakeOpenAIServer() as fallback:
        yield primary, fallback


@pytest.fixture
def pair(servers: tuple[FakeOpenAIServer, FakeOpenAIServer]) -> tuple[FakeOpenAIServer, FakeOpenAIServer]:
    for server in servers:
        server.set_faults()
        server.set_latency(0.0)
        server.reset()
    return servers


def chain(pair: tuple[FakeOpenAIServer, FakeOpenAIServer], store: str | None = None, threshold: int = 3,
          cooldown_s: float = 60.0) -> Failover:
    """The two servers as a chain; its breakers in ``store`` (default: a folder of its own, so that no test sees
    another's breaker, as the process-wide memory store would)."""
    primary, fallback = pair
    store = store or f"file://{tempfile.mkdtemp(prefix='breakers-')}"
    return Failover(OpenAICompatibleProvider("primary-model", base_url=primary.base_url, api_key="sk-primary-key1"),
                    OpenAICompatibleProvider("fallback-model", base_url=fallback.base_url,
                                             api_key="sk-fallback-key2"),
                    breaker=BreakerSettings(threshold=threshold, cooldown_s=cooldown_s, store=store))


def rows(n: int, tag: str = "row") -> pa.Table:
    return pa.table({"q": [f"{tag} {i}" for i in range(n)]})


PRIMARY, FALLBACK = "openai-compatible:primary-model", "openai-compatible:fallback-model"


@pytest.mark.parametrize("kind", ["500", "502", "503", "529", "reset"])
def test_a_down_primary_moves_every_row_to_the_fallback_and_stops_being_paid_for(
        pair: tuple[FakeOpenAIServer, FakeOpenAIServer], kind: str, tmp_path: Path) -> None:
    """Before: no Failover existed; a down primary failed every row after max_attempts requests each."""
    primary, fallback = pair
    primary.set_faults(Fault(kind, attempts=None))  # type: ignore[arg-type]
    concurrency = 4
    out = prompt(rows(60), "{q}", provider=chain(pair, f"file://{tmp_path}"),
                 options=RunOptions(concurrency=concurrency, on_error="null"))
    assert out.table.column("response").null_count == 0
    assert set(out.table.column("response_provider").to_pylist()) == {FALLBACK}
    assert primary.stats().requests <= 3 + concurrency  # the breaker's threshold + the requests in flight
    assert fallback.stats().requests == 60


def test_a_primary_that_times_out_fails_over_within_the_rows_attempt(
        pair: tuple[FakeOpenAIServer, FakeOpenAIServer]) -> None:
    primary, _ = pair
    primary.set_faults(Fault("timeout", attempts=None, delay=5.0))
    started = time.monotonic()
    out = prompt(rows(8), "{q}", provider=chain(pair), options=RunOptions(concurrency=4, timeout_s=0.5))
    assert out.table.column("response_provider").to_pylist() == [FALLBACK] * 8
    assert time.monotonic() - started < 5  # the breaker opened after 3: the rest never waited for the primary
    assert primary.stats().requests <= 3 + 4


def test_a_429_fails_over_but_does_not_open_the_breaker(pair: tuple[FakeOpenAIServer, FakeOpenAIServer]) -> None:
    primary, _ = pair
    primary.set_faults(Fault("429", match="busy", attempts=None))
    provider = chain(pair, threshold=2)
    out = prompt(pa.table({"q": ["busy 1", "busy 2", "busy 3", "calm 4", "calm 5"]}), "{q}", provider=provider,
                 options=RunOptions(concurrency=1))
    assert out.table.column("response_provider").to_pylist() == [FALLBACK] * 3 + [PRIMARY] * 2


@pytest.mark.parametrize("kind", ["400", "401"])
def test_a_request_the_primary_refuses_never_fails_over(pair: tuple[FakeOpenAIServer, FakeOpenAIServer],
                                                        kind: str) -> None:
    """A 4xx says the request is at fault (RFC 9110 section 15.5): the fallback would refuse it too, or answer
    what the user's own account was refused."""
    primary, fallback = pair
    primary.set_faults(Fault(kind, match="bad", attempts=None))  # type: ignore[arg-type]
    if kind == "401":
        with pytest.raises(Exception, match="401"):
            prompt(rows(3, "bad"), "{q}", provider=chain(pair), options=RunOptions(concurrency=1))
    else:
        out = prompt(rows(3, "bad"), "{q}", provider=chain(pair), options=RunOptions(on_error="null"))
        assert out.table.column("response").null_count == 3
        assert "400" in out.table.column("response_error")[0].as_py()
    assert fallback.stats().requests == 0


class Answer(BaseModel):
    value: str


def test_an_invalid_answer_is_reasked_of_the_provider_that_gave_it(
        pair: tuple[FakeOpenAIServer, FakeOpenAIServer]) -> None:
    primary, fallback = pair
    primary.set_faults(Fault("schema_violation", attempts=1))
    out = prompt(rows(2), "{q}", provider=chain(pair), return_format=Answer, options=RunOptions(concurrency=1))
    assert out.table.column("response_provider").to_pylist() == [PRIMARY] * 2
    assert primary.stats().requests == 4 and fallback.stats().requests == 0


def test_a_row_answered_by_the_fallback_is_not_sent_again_on_a_rerun(
        pair: tuple[FakeOpenAIServer, FakeOpenAIServer], tmp_path: Path) -> None:
    """The journal key is the chain's (every member's identity and request): the fallback's answer is kept under
    it with who gave it, and a re-run of the same chain pays nobody again."""
    primary, fallback = pair
    primary.set_faults(Fault("503", attempts=None))
    cache = open_cache(tmp_path / "journal.sqlite")
    first = prompt(rows(10), "{q}", provider=chain(pair), cache=cache, options=RunOptions(concurrency=2))
    primary.set_faults()
    primary.reset()
    fallback.reset()
    again = prompt(rows(10), "{q}", provider=chain(pair), cache=cache, options=RunOptions(concurrency=2))
    assert primary.stats().requests == 0 and fallback.stats().requests == 0
    assert again.table.equals(first.table)
    assert set(again.table.column("response_provider").to_pylist()) == {FALLBACK}


def test_when_the_primary_comes_back_the_breaker_closes(pair: tuple[FakeOpenAIServer, FakeOpenAIServer],
                                                        tmp_path: Path) -> None:
    primary, _ = pair
    store = f"file://{tmp_path}"
    primary.set_faults(Fault("503", attempts=None))
    prompt(rows(20), "{q}", provider=chain(pair, store, cooldown_s=1.0), options=RunOptions(concurrency=2))
    primary.set_faults()
    time.sleep(1.1)
    out = prompt(rows(6, "later"), "{q}", provider=chain(pair, store, cooldown_s=1.0),
                 options=RunOptions(concurrency=1))
    assert out.table.column("response_provider").to_pylist() == [PRIMARY] * 6  # the probe, then closed


def test_a_failover_needs_a_fallback_and_prompters(pair: tuple[FakeOpenAIServer, FakeOpenAIServer]) -> None:
    llm = OpenAICompatibleProvider("m", base_url=pair[0].base_url, api_key="k")
    with pytest.raises(ConfigError, match="fallback"):
        Failover(llm)
    with pytest.raises(TypeError, match="Failover member"):
        Failover(llm, object())  # type: ignore[arg-type]


# -- the must-show: 4 worker processes ------------------------------------------------------------------
WORKER = """
import sys, pyarrow as pa
from ai_assets import OpenAICompatibleProvider, RunOptions, prompt
from ai_assets.providers.failover import Failover
from ai_assets.runtime.ratelimit.breaker import BreakerSettings
primary, fallback, store, worker, n, cooldown = sys.argv[1:7]
llm = Failover(OpenAICompatibleProvider("primary-model", base_url=primary, api_key="sk-primary-key1"),
               OpenAICompatibleProvider("fallback-model", base_url=fallback, api_key="sk-fallback-key2"),
               breaker=BreakerSettings(threshold=5, cooldown_s=float(cooldown), store=store))
out = prompt(pa.table({"q": [f"worker {worker} row {i}" for i in range(int(n))]}), "{q}", provider=llm,
             options=RunOptions(concurrency=4, on_error="null"))
assert out.table.column("response").null_count == 0, out.table.column("response_error").to_pylist()[:3]
print(sorted(set(out.table.column("response_provider").to_pylist())))
"""


def four_workers_lose_their_primary(pair: tuple[FakeOpenAIServer, FakeOpenAIServer], store: str) -> None:
    primary, fallback = pair
    primary.set_latency(0.02)
    fallback.set_latency(0.02)
    threshold, concurrency, workers, cooldown = 5, 4, 4, 2.0
    processes = [subprocess.Popen([sys.executable, "-c", WORKER, primary.base_url, fallback.base_url, store, str(w),
                                   "250", str(cooldown)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
                 for w in range(workers)]
    try:
        while primary.stats().requests < 150:  # mid-partition: a good part answered by the primary
            assert all(p.poll() is None for p in processes), "the workers ended before the primary went down"
            time.sleep(0.02)
        primary.set_faults(Fault("503", attempts=None))
        down_at = time.monotonic()
        outputs = [p.communicate(timeout=120)[0] for p in processes]
        down_s = time.monotonic() - down_at
        assert all(p.returncode == 0 for p in processes)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    wasted = primary.stats().faults_injected
    probes = int(down_s / cooldown) + 1  # one half-open probe per cool-down while it is down
    print(f"\n4 processes, primary down after {primary.stats().requests - wasted} answers: {wasted} requests "
          f"wasted on it over {down_s:.1f} s (bound: threshold {threshold} + in flight {workers * concurrency} + "
          f"probes {probes})")
    assert wasted <= threshold + workers * concurrency + probes
    assert all("fallback-model" in out for out in outputs)
    # It comes back: after a cool-down the probe succeeds, the breaker closes, later calls go to the primary.
    primary.set_faults()
    primary.reset()
    time.sleep(cooldown)
    out = prompt(rows(8, "after"), "{q}", provider=chain(pair, store, threshold, cooldown),
                 options=RunOptions(concurrency=1))
    assert out.table.column("response_provider").to_pylist() == [PRIMARY] * 8
    assert primary.stats().requests == 8


@pytest.mark.slow
def test_four_processes_pay_the_dead_primary_at_most_threshold_plus_in_flight_through_a_file_store(
        pair: tuple[FakeOpenAIServer, FakeOpenAIServer], tmp_path: Path) -> None:
    four_workers_lose_their_primary(pair, f"file://{tmp_path}/limits")


@pytest.mark.slow
def test_four_processes_pay_the_dead_primary_at_most_threshold_plus_in_flight_through_redis(
        pair: tuple[FakeOpenAIServer, FakeOpenAIServer], redis: Service) -> None:
    four_workers_lose_their_primary(pair, redis.url)


# -- embeddings -------------------------------------------------------------------------------------------------
def test_embeddings_fail_over_to_the_same_model_on_another_endpoint(
        pair: tuple[FakeOpenAIServer, FakeOpenAIServer]) -> None:
    """One embedding model served by two endpoints (OpenAI and an Azure deployment of it, two vLLM replicas):
    the primary's 503s move each batch to the fallback, and the vectors are the same model's."""
    from ai_assets import embed_text
    from ai_assets.providers.failover import EmbeddingFailover

    primary, fallback = pair
    primary.set_faults(Fault("503", attempts=None))
    embedder = EmbeddingFailover(
        OpenAICompatibleProvider("m", base_url=primary.base_url, api_key="k1", embedding_model="e"),
        OpenAICompatibleProvider("m", base_url=fallback.base_url, api_key="k2", embedding_model="e"),
        breaker=BreakerSettings(threshold=2, store=f"file://{tempfile.mkdtemp(prefix='breakers-')}"))
    out = embed_text(rows(40), "q", provider=embedder, options=RunOptions(concurrency=2, batch_size=4))
    assert out.table.column("embedding").null_count == 0
    assert fallback.stats().embedding_inputs == 40
    assert primary.stats().requests <= 2 + 2


def test_an_embedding_chain_of_different_models_is_refused() -> None:
    """Vectors of different models do not share a space: a column mixing them would be silently wrong."""
    from ai_assets.providers.failover import EmbeddingFailover

    with pytest.raises(ConfigError, match="same model"):
        EmbeddingFailover(OpenAICompatibleProvider("m", base_url="http://a/v1", embedding_model="small"),
                          OpenAICompatibleProvider("m", base_url="http://b/v1", embedding_model="large"))
