"""Anthropic's Messages API, natively: Claude models with prompt caching, as a ``Prompter``.

A row's messages arrive as neutral ``Message`` values (``ai_assets.providers.messages``; OpenAI-shaped dicts are
parsed into them); ``anthropic_messages`` turns them into a Messages request: the system text at the top level,
images as base64 ``image`` blocks, PDFs (and plain text files) as ``document`` blocks, audio refused per row,
``max_tokens`` always set (Anthropic requires it), and structured output through a forced tool whose
``input_schema`` is the Pydantic model's schema (instructor's Anthropic tools shaping). Transport is aiohttp, as
for OpenAI-compatible endpoints; the wire format lives in ``anthropic_wire``.

Prompt caching is explicit at Anthropic ("Prompt caching"): a ``cache_control: {"type": "ephemeral"}`` marker ends
a cacheable prefix (tools, then system, then messages, in that order). This provider marks the system message and,
when ``RunOptions.order_by_prefix`` groups rows by the template's head, the end of that head (``mark_prefix``).
The markers are part of the request body, and so of the journal key (``cache_key(identity, request)``): the key
names exactly what was sent and billed, and a marker changes the bill (a cache write costs 1.25x the input
price, a read 0.1x) though not the answer; a run that sends the same body finds its answer, one that sends a
different body is a different request.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Self

from pydantic import BaseModel

from ai_assets.providers.anthropic_batch import AnthropicBatchClient
from ai_assets.providers.anthropic_messages import EPHEMERAL, anthropic_messages, forced_tool, mark_head
from ai_assets.providers.anthropic_wire import ANTHROPIC_VERSION, AnthropicEndpoint, MessagesConnection
from ai_assets.providers.messages import MessagesIn, neutral
from ai_assets.providers.openai_wire import credentials_in, endpoint_url
from ai_assets.providers.protocols import ModelRole
from ai_assets.providers.wire_shapes import MAX_RESPONSE_BYTES
from ai_assets.runtime.errors import ConfigError, bounded
from ai_assets.runtime.http import client_session
from ai_assets.runtime.ratelimit import RateLimit, account_limit

if TYPE_CHECKING:
    import aiohttp

ANTHROPIC_BASE_URL = "https://api.anthropic.com"
DEFAULT_MAX_TOKENS = 1024


class AnthropicProvider:
    """Claude models over Anthropic's Messages API (``POST {base_url}/v1/messages``).

    The API key comes from ``api_key`` or the environment variable ``api_key_env`` (``ANTHROPIC_API_KEY``, as the
    SDK reads it; the base URL from ``ANTHROPIC_BASE_URL`` likewise); it is sent only in the ``x-api-key`` header
    and masked in every error text. ``max_tokens``: the answer's cap when ``PromptParams.max_output_tokens`` gives
    none. ``cache_prefix``: mark the shared prefix with ``cache_control`` (default on). ``rate_limit`` paces every
    process of the account; ``max_response_bytes`` caps one answer's body (a longer one fails its row).
    """

    def __init__(
        self,
        model: str = "claude-sonnet-4-5",
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        api_key_env: str = "ANTHROPIC_API_KEY",
        max_tokens: int = DEFAULT_MAX_TOKENS,
        headers: Mapping[str, str] | None = None,
        cache_prefix: bool = True,
        rate_limit: RateLimit | None = None,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        self.model = model
        self.base_url = (base_url or os.environ.get("ANTHROPIC_BASE_URL") or ANTHROPIC_BASE_URL).rstrip("/")
        self._api_key = api_key if api_key is not None else os.environ.get(api_key_env)
        self._api_key_env = api_key_env
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise ConfigError(f"max_tokens must be a positive integer (Anthropic requires it), got {max_tokens!r}")
        self.max_tokens = max_tokens
        self._headers = dict(headers or {})
        self.cache_prefix = cache_prefix
        self.rate_limit = rate_limit
        if max_response_bytes < 1024:
            raise ConfigError(f"max_response_bytes must be >= 1024, got {max_response_bytes}")
        self.max_response_bytes = max_response_bytes

    def __repr__(self) -> str:
        shown = bounded(self.base_url, self.secrets, len(self.base_url) + 1)
        return f"{type(self).__name__}(model={self.model!r}, base_url={shown!r})"

    def with_model(self, model: str, role: ModelRole = "chat") -> Self:
        """The same endpoint, key and settings, answering with another Claude model."""
        if role != "chat":
            raise ConfigError(f"no {role!r} model at Anthropic (the Messages API serves chat only)")
        other = copy.copy(self)
        other.model = model
        return other

    def identity(self) -> Mapping[str, Any]:
        return {"provider": "anthropic", "base_url": self.base_url, "model": self.model}

    def account_limit(self) -> tuple[RateLimit, str] | None:
        """The shared rate limit and the account it holds for (named after the endpoint and key by default)."""
        return account_limit(self.rate_limit, self.base_url, self._api_key)

    # -- requests -------------------------------------------------------------------------------------------
    def chat_request(
        self, messages: MessagesIn, response_model: type[BaseModel] | None, params: Mapping[str, Any]
    ) -> dict[str, Any]:
        """One row's Messages request; the system message carries a cache breakpoint (``cache_prefix``)."""
        system, turns = anthropic_messages(neutral(messages))
        request: dict[str, Any] = {"model": self.model,
                                   "max_tokens": params.get("max_output_tokens") or self.max_tokens}
        thinking = _thinking(params.get("reasoning"))
        if params.get("api") not in (None, "chat"):
            raise ConfigError(f"api={params['api']!r} is an OpenAI setting: Anthropic has one Messages API")
        if response_model is not None:
            if params.get("tools"):
                raise ConfigError("params.tools cannot be combined with return_format on Anthropic (the answer is "
                                  "forced into the schema's tool, so yours would never be called)")
            tools, choice, extra_system = forced_tool(response_model, thinking is not None)
            request.update(tools=tools, tool_choice=choice)
            system += extra_system
        if system:
            if self.cache_prefix:
                system[-1] = {**system[-1], "cache_control": EPHEMERAL}
            request["system"] = system
        request["messages"] = turns
        if thinking is not None:
            request["thinking"] = thinking
        for name, value in params.items():
            if name not in ("max_output_tokens", "reasoning", "api", "extra_body") and value is not None:
                request[name] = value
        request.update(params.get("extra_body") or {})
        return request

    def mark_prefix(self, request: dict[str, Any], head: str) -> dict[str, Any]:
        """``request`` with a cache breakpoint after ``head``, the text every row of its prefix group starts with
        (unchanged when caching is off or the first user turn does not start with it)."""
        if not self.cache_prefix or not head:
            return request
        return mark_head(request, head)

    # -- connections ----------------------------------------------------------------------------------------
    @asynccontextmanager
    async def _session(self, concurrency: int, timeout_s: float) -> AsyncIterator[aiohttp.ClientSession]:
        headers = {"content-type": "application/json", "anthropic-version": ANTHROPIC_VERSION, **self._headers}
        if self._api_key:
            headers["x-api-key"] = self._api_key
        elif self.base_url == ANTHROPIC_BASE_URL:
            raise ConfigError(f"no API key for {self.base_url}: set the environment variable {self._api_key_env}")
        async with client_session(headers, concurrency, timeout_s) as session:
            yield session

    @asynccontextmanager
    async def connect(self, response_model: type[BaseModel] | None, concurrency: int,
                      timeout_s: float) -> AsyncIterator[MessagesConnection]:
        async with self._session(concurrency, timeout_s) as session:
            yield self.chat_connection(response_model, session)

    def chat_connection(self, response_model: type[BaseModel] | None, session: aiohttp.ClientSession | None = None,
                        api: Any = None) -> MessagesConnection:
        """A connection for Messages answers; without a session it only parses (Message Batches results).
        ``api`` is an OpenAI setting: ``chat_request`` refuses any but ``"chat"``."""
        return MessagesConnection(self.endpoint(), session, response_model)

    @asynccontextmanager
    async def connect_batches(self, timeout_s: float = 300.0) -> AsyncIterator[AnthropicBatchClient]:
        """Message Batches (``ai_assets.providers.anthropic_batch``): batch mode at half price."""
        async with self._session(4, timeout_s) as session:
            yield AnthropicBatchClient(self.base_url, session, self.secrets, timeout_s, self.max_response_bytes)

    def endpoint(self) -> AnthropicEndpoint:
        return AnthropicEndpoint(endpoint_url(self.base_url, "/v1/messages"), self.secrets, self.max_response_bytes)

    @property
    def secrets(self) -> tuple[str, ...]:
        """The API key and any credential in the base URL's query or the extra headers."""
        found = credentials_in(self.base_url, self._headers)
        return ((self._api_key,) if self._api_key else ()) + found


def _thinking(reasoning: Any) -> dict[str, Any] | None:
    """``PromptParams.reasoning`` as Anthropic's extended thinking (``{"budget_tokens": N}``)."""
    if not reasoning:
        return None
    unknown = sorted(set(reasoning) - {"budget_tokens"})
    if unknown or not isinstance(reasoning.get("budget_tokens"), int):
        raise ConfigError(f"reasoning on Anthropic takes {{'budget_tokens': N}} (extended thinking), got "
                          f"{json.dumps(dict(reasoning), default=str)[:200]}")
    return {"type": "enabled", "budget_tokens": reasoning["budget_tokens"]}
