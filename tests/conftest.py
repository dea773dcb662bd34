from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from ai_assets import OpenAICompatibleProvider
from ai_assets.testing import BatchBehaviour, FakeOpenAIServer
from ai_assets.testing.prefix_cache import DEFAULT_CAPACITY
from tests.semantic_rows_judge import Judge
from tests.services import Service, create_database, postgres_server, redis_server

# The download guard's own tests run only inside their network namespace (tests/test_download_guard.py starts it).
collect_ignore = [] if os.environ.get("AI_ASSETS_NETNS") == "1" else ["netns"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """For pytest-xdist (scripts/test runs ``-n 4 --dist loadfile --no-loadscope-reorder``): a test file is one unit
    of work, so a fixture its module shares (a cluster, a webserver, a loaded model) starts once; the files holding a
    test marked ``long`` go first, so no minute-long test starts last. Each worker has its own session fixtures
    (fake server, PostgreSQL, Redis: ports from the OS, temp folders). (``--dist loadgroup`` would be finer, but
    pytest-xdist 3.8 cannot rename pytest 9's node ids, so its groups are ignored.)"""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    first = {item.nodeid.split("::")[0] for item in items if item.get_closest_marker("long")}
    items.sort(key=lambda item: item.nodeid.split("::")[0] not in first)  # stable: collection order otherwise


@pytest.fixture(scope="session")
def fake_server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture
def server(fake_server: FakeOpenAIServer) -> FakeOpenAIServer:
    """The shared fake server with no faults, no latency, a default Batch API and zeroed counts."""
    fake_server.set_faults()
    fake_server.set_latency(0.0)
    fake_server.set_prefix_cache(DEFAULT_CAPACITY)
    fake_server.set_batches(BatchBehaviour())
    fake_server.reset()
    return fake_server


@pytest.fixture
def llm(server: FakeOpenAIServer) -> OpenAICompatibleProvider:
    return OpenAICompatibleProvider("fake-model", base_url=server.base_url, api_key="sk-test-secret-key")


@pytest.fixture(scope="session")
def postgres() -> Iterator[Service]:
    """A real PostgreSQL on 127.0.0.1 for the session (Debian's package, run as its own user)."""
    with postgres_server() as service:
        yield service


@pytest.fixture
def pg_url(postgres: Service) -> str:
    """A fresh database of the session's PostgreSQL."""
    return create_database(postgres, f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="session")
def redis() -> Iterator[Service]:
    with redis_server() as service:
        yield service


@pytest.fixture
def judge() -> Iterator[Judge]:
    """The semantic operators' judge (tests/semantic_rows_judge.py): comparisons, verdicts and folds answered from
    what the texts plant."""
    server = Judge().start()
    yield server
    server.stop()
