"""The wire side of OpenAI-compatible endpoints: POST a request, map HTTP failures onto the runtime's error types,
and parse answers (Chat Completions, Responses, embeddings) into values and usage.

Parsing is separate from sending, so the Batch API's output lines go through exactly the code live answers do.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import instructor  # the package itself is cheap (its Mode enum); instructor.processing imports openai: on first use
from pydantic import BaseModel, ValidationError

from ai_assets.providers.wire_shapes import (
    ChatBody,
    EmbeddingsBody,
    ResponsesBody,
    TranscriptionBody,
    loads,
    validated,
)
from ai_assets.runtime.engine import Reply
from ai_assets.runtime.errors import (
    EmptyAnswerError,
    FatalProviderError,
    InvalidOutputError,
    MalformedAnswerError,
    PermanentError,
    TransientError,
    bounded,
)
from ai_assets.runtime.http import read_capped
from ai_assets.runtime.ratelimit.headers import rate_headers
from ai_assets.runtime.retry import retry_after_seconds
from ai_assets.runtime.scrub import remember_secrets
from ai_assets.runtime.vectors import decode_vector

if TYPE_CHECKING:
    import aiohttp
    from openai.types.chat import ChatCompletion

_TRANSIENT_STATUS = {408, 409, 429}
_FATAL_STATUS = {401, 403, 404}
REASK = ("Your previous answer did not validate against the required JSON schema: {error}. Answer again with JSON "
         "that matches the schema exactly.")


CREDENTIAL_WORDS = ("key", "token", "secret", "sig", "auth", "password", "cookie")
"""A query parameter or header whose name holds one of these carries a credential (Azure's ``api-key``, a SAS
``sig``, ``Authorization``, ``x-api-key``): its value is masked like the API key."""


def endpoint_url(base_url: str, path: str) -> str:
    """``path`` appended to the path of ``base_url``, keeping its query (Azure OpenAI's ``?api-version=``)."""
    parts = urlsplit(base_url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/") + path, parts.query, ""))


def credentials_in(base_url: str, headers: Mapping[str, str]) -> tuple[str, ...]:
    """The values of ``base_url``'s query parameters and of ``headers`` whose names say they carry a credential."""
    def secret(name: str) -> bool:
        return any(word in name.lower() for word in CREDENTIAL_WORDS)

    values = [v for k, v in parse_qsl(urlsplit(base_url).query, keep_blank_values=True) if secret(k)]
    values += [v.split(" ", 1)[1] if v.lower().startswith(("bearer ", "basic ")) else v
               for k, v in headers.items() if secret(k)]
    return tuple(v for v in values if v)


def http_error(status: int, message: str, headers: Mapping[str, str], secrets: Sequence[str]) -> Exception:
    """The runtime's error type for an HTTP status: retried, failing the row, or stopping the run."""
    message = bounded(message, secrets)
    if status in _TRANSIENT_STATUS or (status >= 500 and status != 501):
        return TransientError(message, retry_after=retry_after_seconds(headers), status=status,
                              headers=rate_headers(headers))
    if status in _FATAL_STATUS:
        return FatalProviderError(message)
    return PermanentError(message)


def error_message(text: str) -> str:
    """The provider's message from an error body: ``error.message`` of OpenAI's error JSON, else the body as it
    is. Never cut here: ``http_error`` masks secrets before it cuts, so a cut cannot leave part of a key."""
    try:
        body = json.loads(text)
    except (ValueError, RecursionError):  # not JSON, or JSON nested too deep to read
        return text
    if isinstance(body, list) and body and isinstance(body[0], Mapping):  # Gemini's: [{"error": {...}}]
        body = body[0]
    error = body.get("error") if isinstance(body, Mapping) else None
    if isinstance(error, Mapping):
        return str(error.get("message", error))
    return text if error is None else str(error)


JSON_CONTENT_MODES = frozenset({instructor.Mode.JSON_SCHEMA, instructor.Mode.JSON})
"""Modes whose answer content is the JSON itself (not tool calls, not fenced Markdown)."""
TOOL_MODES = frozenset({instructor.Mode.TOOLS, instructor.Mode.TOOLS_STRICT})


@dataclass(frozen=True)
class Endpoint:
    """What a connection needs of its provider, as a value the provider builds: where requests go, the secrets
    kept out of error text, the largest answer read, and how structured answers are parsed."""

    base_url: str
    secrets: tuple[str, ...]
    max_response_bytes: int
    mode: instructor.Mode

    def __post_init__(self) -> None:
        remember_secrets(self.secrets)  # also masked in text built where the key is not at hand


class BaseConnection:
    path = ""

    def __init__(self, endpoint: Endpoint, session: aiohttp.ClientSession | None) -> None:
        self.endpoint = endpoint
        self.session = session
        self.secrets: Sequence[str] = endpoint.secrets
        self.url = endpoint_url(endpoint.base_url, self.path)

    def body(self, request: dict[str, Any]) -> Any:
        """What goes on the wire for ``request``: its JSON."""
        return json.dumps(request)

    async def _post(self, request: dict[str, Any]) -> tuple[Any, dict[str, str]]:
        """The answer's JSON and its rate-limit headers, read within ``endpoint.max_response_bytes``; HTTP failures
        as the runtime's errors."""
        assert self.session is not None, "a parsing-only connection cannot send"
        import aiohttp

        try:
            async with self.session.post(self.url, data=self.body(request)) as response:
                payload = await read_capped(response, self.endpoint.max_response_bytes, f"answer from {self.url}",
                                            "max_response_bytes", MalformedAnswerError)
                if response.status == 200:
                    return loads(payload, self.url), rate_headers(response.headers)
                text = payload.decode("utf-8", "replace")
                raise http_error(response.status, f"HTTP {response.status} from {self.url}: {error_message(text)}",
                                 response.headers, self.secrets)
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise TransientError(f"{type(exc).__name__} talking to {self.url}: {exc}") from exc

    async def send(self, request: dict[str, Any]) -> Reply:
        body, headers = await self._post(request)
        reply = self.parse(request, body)
        reply.headers = headers or None
        return reply

    def parse(self, request: dict[str, Any], body: Any) -> Reply:
        """``body`` (untrusted JSON) as a value and its usage; a ``BadAnswerError`` when it holds none."""
        raise NotImplementedError


class ChatConnection(BaseConnection):
    path = "/chat/completions"

    def __init__(self, endpoint: Endpoint, session: aiohttp.ClientSession | None,
                 response_model: type[BaseModel] | None) -> None:
        super().__init__(endpoint, session)
        self.response_model = response_model

    def parse(self, request: dict[str, Any], body: Any) -> Reply:
        shape = validated(ChatBody, body, self.url)
        usage = shape.attempt_usage()
        content, from_tools = shape.answer()
        if self.response_model is None:
            return Reply(content, usage)
        direct = _direct_json(shape, content, from_tools, self.endpoint.mode, self.response_model)
        if direct is not None:
            try:  # the answer is the JSON: validated once, without building the SDK's completion object
                return Reply(self.response_model.model_validate_json(direct).model_dump(mode="json"), usage)
            except ValidationError:
                pass  # instructor's path below: it may still read it (e.g. fenced JSON), else builds the re-ask
        from instructor.processing.response import handle_reask_kwargs, process_response
        from openai.types.chat import ChatCompletion

        try:
            completion = ChatCompletion.model_validate(body)
        except ValidationError as exc:
            raise MalformedAnswerError(bounded(f"malformed answer from {self.url}: {exc.errors()[0]['msg']}",
                                               self.secrets), usage=usage) from exc
        try:
            parsed = process_response(completion, response_model=self.response_model, stream=False,
                                      mode=self.endpoint.mode)
        except Exception as exc:  # instructor raises ValidationError, JSONDecodeError or its own errors
            reask = handle_reask_kwargs(request, self.endpoint.mode, completion, exc)
            raise InvalidOutputError(bounded(f"{type(exc).__name__}: {exc}", self.secrets), reask_request=reask,
                                     usage=usage, raw=_raw_output(completion) if from_tools else content) from exc
        return Reply(parsed.model_dump(mode="json"), usage)


class ResponsesConnection(ChatConnection):
    """The Responses API: ``text.format`` json_schema for structured output, re-asked with the error appended."""

    path = "/responses"

    def parse(self, request: dict[str, Any], body: Any) -> Reply:
        shape = validated(ResponsesBody, body, self.url)
        usage = shape.attempt_usage()
        if shape.status not in (None, "completed"):
            reason = (shape.incomplete_details.reason if shape.incomplete_details else None) or shape.status
            raise EmptyAnswerError(f"response {shape.status}: {reason}", usage=usage)
        text = shape.text()
        if self.response_model is None:
            return Reply(text, usage)
        try:
            parsed = self.response_model.model_validate_json(text)
        except ValidationError as exc:
            reask = {**request, "input": [*request["input"], {"role": "assistant", "content": text},
                                          {"role": "user", "content": REASK.format(error=bounded(str(exc), (), 500))}]}
            raise InvalidOutputError(bounded(f"{type(exc).__name__}: {exc}", self.secrets), reask_request=reask,
                                     usage=usage, raw=text) from exc
        return Reply(parsed.model_dump(mode="json"), usage)


class EmbeddingConnection(BaseConnection):
    path = "/embeddings"

    def parse(self, request: dict[str, Any], body: Any) -> Reply:
        shape = validated(EmbeddingsBody, body, self.url)
        data = sorted(shape.data, key=lambda d: d.index)
        if len(data) != len(request["input"]) or [d.index for d in data] != list(range(len(data))):
            raise TransientError(f"asked for {len(request['input'])} embeddings, got {len(data)} "
                                 f"(indexes {[d.index for d in data][:8]})")
        try:
            vectors = [decode_vector(d.embedding) for d in data]
        except (ValueError, TypeError) as exc:  # base64 that does not decode to float32s
            raise MalformedAnswerError(bounded(f"malformed embedding from {self.url}: {exc}", self.secrets),
                                       usage=shape.attempt_usage()) from exc
        return Reply(vectors, shape.attempt_usage())


class TranscriptionConnection(BaseConnection):
    """``/audio/transcriptions``: the audio as a multipart upload, the transcript's text back."""

    path = "/audio/transcriptions"

    def body(self, request: dict[str, Any]) -> Any:
        import aiohttp

        form = aiohttp.FormData()
        form.add_field("file", request["file"], filename=request["filename"], content_type=request["mime"])
        for name in ("model", "language", "prompt", "response_format"):
            if request.get(name) is not None:
                form.add_field(name, str(request[name]))
        return form

    def parse(self, request: dict[str, Any], body: Any) -> Reply:
        shape = validated(TranscriptionBody, body, self.url)
        return Reply(shape.text, shape.attempt_usage())


def _direct_json(shape: ChatBody, content: str, from_tools: bool, mode: instructor.Mode,
                 model: type[BaseModel]) -> str | None:
    """The JSON an answer holds when reading it needs nothing of instructor: the content in a JSON mode, or the
    arguments of the one tool call named after the model in a TOOLS mode; None otherwise."""
    if not from_tools:
        return content if mode in JSON_CONTENT_MODES else None
    message = shape.choices[0].message if mode in TOOL_MODES and shape.choices else None
    calls = (message.tool_calls or []) if message is not None else []
    function = calls[0].function if len(calls) == 1 else None
    if function is None or function.name != _tool_name(model):
        return None
    return function.arguments


@functools.lru_cache(maxsize=256)
def _tool_name(model: type[BaseModel]) -> str:
    return str(model.model_json_schema().get("title", model.__name__))


def _raw_output(completion: ChatCompletion) -> str:
    if not completion.choices:
        return ""
    message = completion.choices[0].message
    if message.tool_calls:
        return "".join(call.function.arguments for call in message.tool_calls if call.type == "function")
    return message.content or ""
