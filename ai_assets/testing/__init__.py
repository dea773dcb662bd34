"""Test helpers users can use too: a real OpenAI-compatible server with fault injection."""

from ai_assets.testing.server import Fault, FakeOpenAIServer, ServerStats

__all__ = ["FakeOpenAIServer", "Fault", "ServerStats"]
