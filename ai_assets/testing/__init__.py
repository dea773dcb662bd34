"""Test helpers users can use too: a real OpenAI-compatible server with fault injection."""

from ai_assets.testing.faults import BatchBehaviour, Fault, ServerStats
from ai_assets.testing.server import FakeOpenAIServer

__all__ = ["BatchBehaviour", "FakeOpenAIServer", "Fault", "ServerStats"]
