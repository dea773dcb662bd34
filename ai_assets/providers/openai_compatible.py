"""Any OpenAI-compatible endpoint: OpenAI, Azure OpenAI, vLLM, LM Studio, Ollama, llama.cpp.

Transport is aiohttp, not the ``openai`` SDK: on a 2-core machine at 64 requests in flight the SDK spends enough
CPU per request to reach only 0.77-0.86 of the latency-bound limit, where a bare aiohttp client reaches 0.95
(``bench/bench_prompt.py``). Structured output still goes through instructor: it shapes the request for the mode
(``JSON_SCHEMA``, ``TOOLS``, ``JSON``, ``MD_JSON``), parses and validates the answer into the Pydantic model, and
writes the re-ask messages. Instructor's own retry loop is not used: ``ai_assets.runtime.engine`` owns retries.

Like the openai SDK, the provider reads ``OPENAI_API_KEY`` and ``OPENAI_BASE_URL`` when no key or base URL is
given. Embeddings are asked for as base64 (4 bytes a float instead of ~20 characters of JSON) and split to the
endpoint's limits: at most ``max_inputs`` texts and ``max_request_tokens`` tokens a request.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Any, Literal, Self

import aiohttp
import instructor
from instructor.processing.response import handle_reask_kwargs, handle_response_model, process_response
from openai.types.chat import ChatCompletion
from pydantic import BaseModel

from ai_assets.runtime.engine import Reply
from ai_assets.runtime.errors import (
    AttemptUsage,
    ConfigError,
    FatalProviderError,
    InvalidOutputError,
    PermanentError,
    TransientError,
    bounded,
)
from ai_assets.runtime.ratelimit import RateLimit
from ai_assets.runtime.retry import retry_after_seconds
from ai_assets.runtime.vectors import decode_vector

OPENAI_BASE_URL = "https://api.openai.com/v1"
_TRANSIENT_STATUS = {408, 409, 429}
_FATAL_STATUS = {401, 403, 404}
Auth = Literal["bearer", "api-key"]
TokenParam = Literal["max_tokens", "max_completion_tokens"]


def default_mode(base_url: str) -> instructor.Mode:
    """TOOLS for OpenAI itself, JSON_SCHEMA (grammar-constrained decoding) for local servers."""
    return instructor.Mode.TOOLS if base_url.rstrip("/") == OPENAI_BASE_URL else instructor.Mode.JSON_SCHEMA


class OpenAICompatibleProvider:
    """Chat completions (plain or structured) and embeddings against an OpenAI-compatible HTTP API.

    The API key comes from ``api_key`` or the environment variable ``api_key_env``; it is sent only in the
    ``Authorization`` header (or Azure's ``api-key`` header with ``auth="api-key"``) and scrubbed from every error
    text. ``organization`` / ``project`` become OpenAI's headers; ``headers`` adds any others. ``rate_limit``
    paces every process that shares this account (see ``ai_assets.runtime.ratelimit``).
    """

    def __init__(
        self,
        model: str = "gpt-4o-mini",
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        embedding_model: str | None = None,
        embedding_dimensions: int | None = None,
        mode: instructor.Mode | str | None = None,
        headers: Mapping[str, str] | None = None,
        organization: str | None = None,
        project: str | None = None,
        auth: Auth = "bearer",
        token_param: TokenParam | None = None,
        rate_limit: RateLimit | None = None,
        max_inputs: int = 2048,
        max_request_tokens: int = 300_000,
    ) -> None:
        self.model = model
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_BASE_URL).rstrip("/")
        self.embedding_model = embedding_model or "text-embedding-3-small"
        self.embedding_dimensions = embedding_dimensions
        self.mode = instructor.Mode(mode) if mode is not None else default_mode(self.base_url)
        self._api_key = api_key if api_key is not None else os.environ.get(api_key_env)
        self._api_key_env = api_key_env
        self._headers = dict(headers or {})
        if organization:
            self._headers["OpenAI-Organization"] = organization
        if project:
            self._headers["OpenAI-Project"] = project
        self.auth = auth
        self.token_param = token_param
        self.rate_limit = rate_limit
        self.max_inputs = max_inputs
        self.max_request_tokens = max_request_tokens

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r}, base_url={self.base_url!r}, mode={self.mode.value!r})"

    def with_model(self, model: str) -> Self:
        """The same endpoint, key and settings, answering with another chat model."""
        other = copy.copy(self)
        other.model = model
        return other

    def identity(self) -> Mapping[str, Any]:
        return {"provider": "openai-compatible", "base_url": self.base_url, "model": self.model,
                "mode": self.mode.value}

    def embedding_identity(self) -> Mapping[str, Any]:
        return {"provider": "openai-compatible", "base_url": self.base_url, "model": self.embedding_model,
                "dimensions": self.embedding_dimensions}

    @property
    def dimension(self) -> int | None:
        """The embedding size, where the settings fix it before any request."""
        return self.embedding_dimensions

    def account_limit(self) -> tuple[RateLimit, str] | None:
        """The shared rate limit and the account it holds for (named after the endpoint and key by default)."""
        if self.rate_limit is None:
            return None
        name = self.rate_limit.account or hashlib.sha256(
            f"{self.base_url}\n{self._api_key or ''}".encode()).hexdigest()[:16]
        return self.rate_limit, name

    # -- requests -------------------------------------------------------------------------------------------
    def chat_request(
        self, messages: list[dict[str, Any]], response_model: type[BaseModel] | None, params: Mapping[str, Any]
    ) -> dict[str, Any]:
        request: dict[str, Any] = {"model": self.model, **self._chat_params(params)}
        if response_model is None:
            request["messages"] = messages
            return request
        if params.get("tools") and self.mode in (instructor.Mode.TOOLS, instructor.Mode.TOOLS_STRICT,
                                                 instructor.Mode.PARALLEL_TOOLS):
            raise ConfigError("params.tools cannot be combined with return_format in TOOLS mode (the answer is "
                              "forced into the schema's tool, so yours would never be called): use "
                              "mode='json_schema_mode', or drop return_format")
        system = [m for m in messages if m.get("role") == "system"]
        rest = [m for m in messages if m.get("role") != "system"]
        prepared = _prepared(response_model, self.mode, json.dumps(system))
        request.update(prepared)
        request["messages"] = [*prepared["messages"], *rest]
        return request

    def _chat_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Our portable names onto Chat Completions fields; ``extra_body`` merges into the body as the SDK does."""
        out = {k: v for k, v in params.items() if v is not None and k not in ("max_output_tokens", "extra_body",
                                                                             "reasoning")}
        reasoning = params.get("reasoning")
        if reasoning:
            unknown = sorted(set(reasoning) - {"effort"})
            if unknown:
                raise ConfigError(f"reasoning {unknown} cannot be sent over Chat Completions (only effort): use "
                                  "extra_body for a server that takes them")
            out["reasoning_effort"] = reasoning["effort"]
        if params.get("max_output_tokens") is not None:
            out[self._token_param(bool(reasoning))] = params["max_output_tokens"]
        out.update(params.get("extra_body") or {})
        return out

    def _token_param(self, reasoning: bool) -> TokenParam:
        """OpenAI wants ``max_completion_tokens`` (reasoning models refuse ``max_tokens``); most other servers
        take ``max_tokens``."""
        if self.token_param is not None:
            return self.token_param
        return "max_completion_tokens" if reasoning or self.base_url == OPENAI_BASE_URL else "max_tokens"

    def embedding_request(self, texts: Sequence[str]) -> dict[str, Any]:
        request: dict[str, Any] = {"model": self.embedding_model, "input": list(texts), "encoding_format": "base64"}
        if self.embedding_dimensions is not None:
            request["dimensions"] = self.embedding_dimensions
        return request

    # -- connections ----------------------------------------------------------------------------------------
    @asynccontextmanager
    async def _session(self, concurrency: int, timeout_s: float) -> AsyncIterator[aiohttp.ClientSession]:
        headers = {"content-type": "application/json", **self._headers}
        if self._api_key:
            headers["api-key" if self.auth == "api-key" else "authorization"] = (
                self._api_key if self.auth == "api-key" else f"Bearer {self._api_key}")
        elif self.base_url == OPENAI_BASE_URL:
            raise ConfigError(f"no API key for {self.base_url}: set the environment variable {self._api_key_env}")
        connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers) as session:
            yield session

    @asynccontextmanager
    async def connect(
        self, response_model: type[BaseModel] | None, concurrency: int, timeout_s: float
    ) -> AsyncIterator[ChatConnection]:
        async with self._session(concurrency, timeout_s) as session:
            yield ChatConnection(self, session, response_model)

    @asynccontextmanager
    async def connect_embeddings(self, concurrency: int, timeout_s: float) -> AsyncIterator[EmbeddingConnection]:
        async with self._session(concurrency, timeout_s) as session:
            yield EmbeddingConnection(self, session)

    @property
    def secrets(self) -> tuple[str, ...]:
        return (self._api_key,) if self._api_key else ()


@lru_cache(maxsize=256)
def _prepared(response_model: type[BaseModel], mode: instructor.Mode, system_json: str) -> dict[str, Any]:
    """instructor's request shaping for a model and system message (0.7 ms a call, so once per distinct pair)."""
    _, kwargs = handle_response_model(response_model, mode=mode, messages=json.loads(system_json))
    return dict(kwargs)


class BaseConnection:
    path = ""

    def __init__(self, provider: OpenAICompatibleProvider, session: aiohttp.ClientSession) -> None:
        self.provider = provider
        self.session = session
        self.secrets: Sequence[str] = provider.secrets
        self.url = f"{provider.base_url}{self.path}"

    async def _post(self, request: dict[str, Any]) -> dict[str, Any]:
        try:
            async with self.session.post(self.url, data=json.dumps(request)) as response:
                text = await response.text()
                if response.status == 200:
                    body: dict[str, Any] = json.loads(text)
                    return body
                raise http_error(response.status, f"HTTP {response.status} from {self.url}: "
                                 f"{_error_message(text)}", response.headers, self.secrets)
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise TransientError(f"{type(exc).__name__} talking to {self.url}: {exc}") from exc
        except json.JSONDecodeError as exc:
            raise TransientError(f"unreadable response body from {self.url}") from exc


def http_error(status: int, message: str, headers: Mapping[str, str], secrets: Sequence[str]) -> Exception:
    """The runtime's error type for an HTTP status: retried, failing the row, or stopping the run."""
    message = bounded(message, secrets)
    if status in _TRANSIENT_STATUS or (status >= 500 and status != 501):
        return TransientError(message, retry_after=retry_after_seconds(headers))
    if status in _FATAL_STATUS:
        return FatalProviderError(message)
    return PermanentError(message)


class ChatConnection(BaseConnection):
    path = "/chat/completions"

    def __init__(self, provider: OpenAICompatibleProvider, session: aiohttp.ClientSession,
                 response_model: type[BaseModel] | None) -> None:
        super().__init__(provider, session)
        self.response_model = response_model

    async def send(self, request: dict[str, Any]) -> Reply:
        body = await self._post(request)
        usage = _usage(body)
        if self.response_model is None:
            message = (body.get("choices") or [{}])[0].get("message") or {}
            content = message.get("content")
            if content is None and message.get("tool_calls"):
                content = json.dumps(message["tool_calls"])
            return Reply(content, usage)
        completion = ChatCompletion.model_validate(body)
        try:
            parsed = process_response(completion, response_model=self.response_model, stream=False,
                                      mode=self.provider.mode)
        except Exception as exc:  # instructor raises ValidationError, JSONDecodeError or its own errors
            raw = _raw_output(completion)
            reask = handle_reask_kwargs(request, self.provider.mode, completion, exc)
            raise InvalidOutputError(bounded(f"{type(exc).__name__}: {exc}"), reask_request=reask, usage=usage,
                                     raw=raw) from exc
        return Reply(parsed.model_dump(mode="json"), usage)


class EmbeddingConnection(BaseConnection):
    path = "/embeddings"

    async def send(self, request: dict[str, Any]) -> Reply:
        body = await self._post(request)
        data = sorted(body.get("data", []), key=lambda d: d["index"])
        if len(data) != len(request["input"]):
            raise TransientError(f"asked for {len(request['input'])} embeddings, got {len(data)}")
        return Reply([decode_vector(d["embedding"]) for d in data], _usage(body))


def _usage(body: Mapping[str, Any]) -> AttemptUsage:
    usage = body.get("usage") or {}
    prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
    completion = usage.get("completion_tokens", usage.get("output_tokens"))
    return AttemptUsage(int(prompt or 0), int(completion or 0))


def _raw_output(completion: ChatCompletion) -> str:
    if not completion.choices:
        return ""
    message = completion.choices[0].message
    if message.tool_calls:
        return "".join(call.function.arguments for call in message.tool_calls if call.type == "function")
    return message.content or ""


def _error_message(text: str) -> str:
    try:
        error = json.loads(text).get("error")
    except (json.JSONDecodeError, AttributeError):
        return text[:200]
    if isinstance(error, Mapping):
        return str(error.get("message", error))
    return str(error)
