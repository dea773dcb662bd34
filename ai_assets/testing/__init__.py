"""Test helpers users can use too: real OpenAI-compatible and Anthropic servers with fault injection."""

from ai_assets.testing.anthropic_server import FakeAnthropicServer
from ai_assets.testing.faults import BatchBehaviour, Fault, ServerStats
from ai_assets.testing.noise import Noise
from ai_assets.testing.server import FakeOpenAIServer

__all__ = ["BatchBehaviour", "FakeAnthropicServer", "FakeOpenAIServer", "Fault", "Noise", "ServerStats"]
