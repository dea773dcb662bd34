"""Any OpenAI-compatible endpoint: OpenAI, Azure OpenAI, vLLM, LM Studio, Ollama, llama.cpp.

Transport is aiohttp, not the ``openai`` SDK: on a 2-core machine at 64 requests in flight the SDK spends enough
CPU per request to reach only 0.77-0.86 of the latency-bound limit, where a bare aiohttp client reaches 0.95
(``bench/bench_prompt.py``). Structured output still goes through instructor: it shapes the request for the mode
(``JSON_SCHEMA``, ``TOOLS``, ``JSON``, ``MD_JSON``), parses and validates the answer into the Pydantic model, and
writes the re-ask messages. Instructor's own retry loop is not used: ``ai_assets.runtime.engine`` owns retries.

Like the openai SDK, the provider reads ``OPENAI_API_KEY`` and ``OPENAI_BASE_URL`` when no key or base URL is
given. Prompts go through Chat Completions or the Responses API (``api=``, per provider or per call through
``PromptParams(api=...)``); structured output over Responses is ``text.format`` json_schema in strict form.
Embeddings are asked for as base64 (4 bytes a float instead of ~20 characters of JSON) and split to the
endpoint's limits: at most ``max_inputs`` texts and ``max_request_tokens`` tokens a request. The wire format lives
in ``openai_wire``, the Batch API in ``openai_batch``.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal, Self

import instructor  # the package itself is cheap (its Mode enum); instructor.processing imports openai: on first use
from pydantic import BaseModel

from ai_assets.providers.messages import Message, MessagesIn, neutral
from ai_assets.providers.openai_batch import BatchClient
from ai_assets.providers.openai_messages import openai_messages, responses_input
from ai_assets.providers.openai_wire import (
    ChatConnection,
    EmbeddingConnection,
    Endpoint,
    ResponsesConnection,
    TranscriptionConnection,
    credentials_in,
)
from ai_assets.providers.protocols import ModelRole
from ai_assets.providers.wire_shapes import MAX_RESPONSE_BYTES
from ai_assets.runtime.errors import ConfigError, bounded
from ai_assets.runtime.http import client_session
from ai_assets.runtime.ratelimit import RateLimit, account_limit

if TYPE_CHECKING:
    import aiohttp

OPENAI_BASE_URL = "https://api.openai.com/v1"
Auth = Literal["bearer", "api-key"]
TokenParam = Literal["max_tokens", "max_completion_tokens"]
Api = Literal["chat", "responses"]


def default_mode(base_url: str) -> instructor.Mode:
    """TOOLS for OpenAI itself, JSON_SCHEMA (grammar-constrained decoding) for local servers."""
    return instructor.Mode.TOOLS if base_url.rstrip("/") == OPENAI_BASE_URL else instructor.Mode.JSON_SCHEMA


class OpenAICompatibleProvider:
    """Chat completions (plain or structured) and embeddings against an OpenAI-compatible HTTP API.

    The API key comes from ``api_key`` or the environment variable ``api_key_env``; it is sent only in the
    ``Authorization`` header (or Azure's ``api-key`` header with ``auth="api-key"``) and scrubbed from every error
    text. ``organization`` / ``project`` become OpenAI's headers; ``headers`` adds any others. ``rate_limit``
    paces every process that shares this account (see ``ai_assets.runtime.ratelimit``). ``max_response_bytes``
    caps one answer's body (a body that never ends fails its row once it passes the cap). ``prompt_cache_key``:
    send OpenAI's ``prompt_cache_key`` (one per prompt-prefix group, so rows that share a prefix reach the same
    cache); default: only to OpenAI itself (a strict server may refuse a field it does not know).
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
        transcription_model: str | None = None,
        mode: instructor.Mode | str | None = None,
        headers: Mapping[str, str] | None = None,
        organization: str | None = None,
        project: str | None = None,
        auth: Auth = "bearer",
        token_param: TokenParam | None = None,
        rate_limit: RateLimit | None = None,
        max_inputs: int = 2048,
        max_request_tokens: int = 300_000,
        api: Api = "chat",
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        prompt_cache_key: bool | None = None,
    ) -> None:
        self.model = model
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_BASE_URL).rstrip("/")
        self.embedding_model = embedding_model or "text-embedding-3-small"
        self.embedding_dimensions = embedding_dimensions
        self.transcription_model = transcription_model or "whisper-1"
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
        if api not in ("chat", "responses"):
            raise ConfigError(f"api must be 'chat' or 'responses', got {api!r}")
        self.api: Api = api
        if max_response_bytes < 1024:
            raise ConfigError(f"max_response_bytes must be >= 1024, got {max_response_bytes}")
        self.max_response_bytes = max_response_bytes
        self.takes_prompt_cache_key = self.base_url == OPENAI_BASE_URL if prompt_cache_key is None \
            else prompt_cache_key

    def __repr__(self) -> str:
        shown = bounded(self.base_url, self.secrets, len(self.base_url) + 1)
        return f"{type(self).__name__}(model={self.model!r}, base_url={shown!r}, mode={self.mode.value!r})"

    def with_model(self, model: str, role: ModelRole = "chat") -> Self:
        """The same endpoint, key and settings, answering with another chat, embedding or transcription model."""
        other = copy.copy(self)
        attribute = {"chat": "model", "embedding": "embedding_model", "transcription": "transcription_model"}
        if role not in attribute:
            raise ConfigError(f"no {role!r} model on an OpenAI-compatible endpoint (roles: {list(attribute)})")
        setattr(other, attribute[role], model)
        return other

    def identity(self) -> Mapping[str, Any]:
        return {"provider": "openai-compatible", "base_url": self.base_url, "model": self.model,
                "mode": self.mode.value}

    def api_for(self, params: Mapping[str, Any]) -> Api:
        """The API a call uses: ``PromptParams(api=...)``, else the provider's."""
        api = params.get("api") or self.api
        if api not in ("chat", "responses"):
            raise ConfigError(f"api must be 'chat' or 'responses', got {api!r}")
        return "responses" if api == "responses" else "chat"

    def embedding_identity(self) -> Mapping[str, Any]:
        return {"provider": "openai-compatible", "base_url": self.base_url, "model": self.embedding_model,
                "dimensions": self.embedding_dimensions}

    @property
    def dimension(self) -> int | None:
        """The embedding size, where the settings fix it before any request."""
        return self.embedding_dimensions

    def account_limit(self) -> tuple[RateLimit, str] | None:
        """The shared rate limit and the account it holds for (named after the endpoint and key by default)."""
        return account_limit(self.rate_limit, self.base_url, self._api_key)

    # -- requests -------------------------------------------------------------------------------------------
    def chat_request(
        self, messages: MessagesIn, response_model: type[BaseModel] | None, params: Mapping[str, Any]
    ) -> dict[str, Any]:
        """One row's body: ``messages`` (neutral, or OpenAI-shaped dicts) in Chat Completions or Responses form."""
        if self.api_for(params) == "responses":
            return responses_request(self.model, neutral(messages), response_model, params)
        return self.chat_body(openai_messages(neutral(messages)), response_model, params)

    def chat_body(self, messages: list[dict[str, Any]], response_model: type[BaseModel] | None,
                  params: Mapping[str, Any]) -> dict[str, Any]:
        """A Chat Completions body for ``messages`` already in OpenAI's shape."""
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
                                                                             "reasoning", "api")}
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
    async def _session(self, concurrency: int, timeout_s: float,
                       json_body: bool = True) -> AsyncIterator[aiohttp.ClientSession]:
        headers = {**({"content-type": "application/json"} if json_body else {}), **self._headers}
        if self._api_key:
            headers["api-key" if self.auth == "api-key" else "authorization"] = (
                self._api_key if self.auth == "api-key" else f"Bearer {self._api_key}")
        elif self.base_url == OPENAI_BASE_URL:
            raise ConfigError(f"no API key for {self.base_url}: set the environment variable {self._api_key_env}")
        async with client_session(headers, concurrency, timeout_s) as session:
            yield session

    @asynccontextmanager
    async def connect(
        self, response_model: type[BaseModel] | None, concurrency: int, timeout_s: float, *, api: Api | None = None
    ) -> AsyncIterator[ChatConnection]:
        async with self._session(concurrency, timeout_s) as session:
            yield self.chat_connection(response_model, session, api)

    def chat_connection(self, response_model: type[BaseModel] | None, session: aiohttp.ClientSession | None = None,
                        api: Api | None = None) -> ChatConnection:
        """A connection for chat (or Responses) answers; without a session it only parses (Batch API lines)."""
        kind = ResponsesConnection if (api or self.api) == "responses" else ChatConnection
        return kind(self.endpoint(), session, response_model)

    @asynccontextmanager
    async def connect_batches(self, timeout_s: float = 300.0) -> AsyncIterator[BatchClient]:
        """The Batch API (files and batches) of this endpoint."""
        async with self._session(4, timeout_s, json_body=False) as session:
            yield BatchClient(self.base_url, session, self.secrets)

    def transcription_identity(self) -> Mapping[str, Any]:
        return {"provider": "openai-compatible", "base_url": self.base_url, "model": self.transcription_model}

    def transcription_request(self, audio: bytes, filename: str, mime: str, language: str | None,
                              prompt: str | None) -> dict[str, Any]:
        return {"model": self.transcription_model, "file": audio, "filename": filename, "mime": mime,
                "language": language, "prompt": prompt, "response_format": "json"}

    @asynccontextmanager
    async def connect_transcriptions(self, concurrency: int,
                                     timeout_s: float) -> AsyncIterator[TranscriptionConnection]:
        async with self._session(concurrency, timeout_s, json_body=False) as session:  # multipart sets its type
            yield TranscriptionConnection(self.endpoint(), session)

    @asynccontextmanager
    async def connect_embeddings(self, concurrency: int, timeout_s: float) -> AsyncIterator[EmbeddingConnection]:
        async with self._session(concurrency, timeout_s) as session:
            yield self.embedding_connection(session)

    def embedding_connection(self, session: aiohttp.ClientSession | None = None) -> EmbeddingConnection:
        """A connection for embeddings; without a session it only parses (Batch API lines)."""
        return EmbeddingConnection(self.endpoint(), session)

    def endpoint(self) -> Endpoint:
        """This provider as the wire connections see it."""
        return Endpoint(self.base_url, self.secrets, self.max_response_bytes, self.mode)

    @property
    def secrets(self) -> tuple[str, ...]:
        """The API key and any credential in the base URL's query or the extra headers (``x-api-key``, ...)."""
        return ((self._api_key,) if self._api_key else ()) + credentials_in(self.base_url, self._headers)


@lru_cache(maxsize=256)
def _prepared(response_model: type[BaseModel], mode: instructor.Mode, system_json: str) -> dict[str, Any]:
    """instructor's request shaping for a model and system message (0.7 ms a call, so once per distinct pair)."""
    from instructor.processing.response import handle_response_model

    _, kwargs = handle_response_model(response_model, mode=mode, messages=json.loads(system_json))
    return dict(kwargs)


def responses_request(model: str, messages: Sequence[Message], response_model: type[BaseModel] | None,
                      params: Mapping[str, Any]) -> dict[str, Any]:
    """A Responses API body: system messages become ``instructions``, content parts become ``input_*`` parts,
    ``return_format`` becomes ``text.format`` json_schema (strict where the model allows), and ``reasoning`` and
    built-in ``tools`` pass through whole."""
    system, turns = responses_input(messages)
    request: dict[str, Any] = {"model": model, "input": turns}
    if system:
        request["instructions"] = system
    if response_model is not None:
        fmt = {"type": "json_schema", "name": response_model.__name__, **_schema(response_model)}
        request["text"] = {"format": fmt}
    for name in ("temperature", "max_output_tokens", "reasoning", "tools"):
        if params.get(name) is not None:
            request[name] = params[name]
    request.update({k: v for k, v in params.items() if k not in ("temperature", "max_output_tokens", "reasoning",
                                                                    "tools", "extra_body", "api")})
    request.update(params.get("extra_body") or {})
    return request


@lru_cache(maxsize=256)
def _schema(response_model: type[BaseModel]) -> dict[str, Any]:
    """The strict JSON schema OpenAI's structured outputs want, or the plain one where the model cannot be strict."""
    from openai.lib._pydantic import to_strict_json_schema

    try:
        return {"schema": to_strict_json_schema(response_model), "strict": True}
    except Exception:  # a model strict mode cannot express: send its plain schema
        return {"schema": response_model.model_json_schema(), "strict": False}
