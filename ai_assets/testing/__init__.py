"""Test helpers users can use too: a real OpenAI-compatible server with fault injection."""

from ai_assets.testing.server import FakeOpenAIServer, Fault, ServerStats

__all__ = ["FakeOpenAIServer", "Fault", "ServerStats"]
