from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from ai_assets import OpenAICompatibleProvider
from ai_assets.testing import BatchBehaviour, FakeOpenAIServer
from ai_assets.testing.prefix_cache import DEFAULT_CAPACITY
from ai_assets.testing.services import Service, create_database, postgres_server, redis_server

# The download guard's own tests run only inside their network namespace (tests/test_download_guard.py starts it).
collect_ignore = [] if os.environ.get("AI_ASSETS_NETNS") == "1" else ["netns"]


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
