"""The wire side of OpenAI-compatible endpoints: POST a request, map HTTP failures onto the runtime's error types,
and parse answers (Chat Completions, Responses, embeddings) into values and usage.

Parsing is separate from sending, so the Batch API's output lines go through exactly the code live answers do.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import aiohttp
from instructor.processing.response import handle_reask_kwargs, process_response
from openai.types.chat import ChatCompletion
from pydantic import BaseModel, ValidationError

from ai_assets.runtime.engine import Reply
from ai_assets.runtime.errors import (
    AttemptUsage,
    FatalProviderError,
    InvalidOutputError,
    PermanentError,
    TransientError,
    bounded,
)
from ai_assets.runtime.retry import retry_after_seconds
from ai_assets.runtime.vectors import decode_vector

if TYPE_CHECKING:
    from ai_assets.providers.openai_compatible import OpenAICompatibleProvider

_TRANSIENT_STATUS = {408, 409, 429}
_FATAL_STATUS = {401, 403, 404}
REASK = ("Your previous answer did not validate against the required JSON schema: {error}. Answer again with JSON "
         "that matches the schema exactly.")


def http_error(status: int, message: str, headers: Mapping[str, str], secrets: Sequence[str]) -> Exception:
    """The runtime's error type for an HTTP status: retried, failing the row, or stopping the run."""
    message = bounded(message, secrets)
    if status in _TRANSIENT_STATUS or (status >= 500 and status != 501):
        return TransientError(message, retry_after=retry_after_seconds(headers))
    if status in _FATAL_STATUS:
        return FatalProviderError(message)
    return PermanentError(message)


def error_message(text: str) -> str:
    try:
        error = json.loads(text).get("error")
    except (json.JSONDecodeError, AttributeError):
        return text[:200]
    if isinstance(error, Mapping):
        return str(error.get("message", error))
    return str(error)


def usage_of(body: Mapping[str, Any]) -> AttemptUsage:
    """Chat (prompt / completion tokens) or Responses (input / output tokens) usage."""
    usage = body.get("usage") or {}
    prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
    completion = usage.get("completion_tokens", usage.get("output_tokens"))
    return AttemptUsage(int(prompt or 0), int(completion or 0))


class BaseConnection:
    path = ""

    def __init__(self, provider: OpenAICompatibleProvider, session: aiohttp.ClientSession | None) -> None:
        self.provider = provider
        self.session = session
        self.secrets: Sequence[str] = provider.secrets
        self.url = f"{provider.base_url}{self.path}"

    async def _post(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.session is not None, "a parsing-only connection cannot send"
        try:
            async with self.session.post(self.url, data=json.dumps(request)) as response:
                text = await response.text()
                if response.status == 200:
                    body: dict[str, Any] = json.loads(text)
                    return body
                raise http_error(response.status, f"HTTP {response.status} from {self.url}: {error_message(text)}",
                                 response.headers, self.secrets)
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise TransientError(f"{type(exc).__name__} talking to {self.url}: {exc}") from exc
        except json.JSONDecodeError as exc:
            raise TransientError(f"unreadable response body from {self.url}") from exc

    async def send(self, request: dict[str, Any]) -> Reply:
        return self.parse(request, await self._post(request))

    def parse(self, request: dict[str, Any], body: dict[str, Any]) -> Reply:
        raise NotImplementedError


class ChatConnection(BaseConnection):
    path = "/chat/completions"

    def __init__(self, provider: OpenAICompatibleProvider, session: aiohttp.ClientSession | None,
                 response_model: type[BaseModel] | None) -> None:
        super().__init__(provider, session)
        self.response_model = response_model

    def parse(self, request: dict[str, Any], body: dict[str, Any]) -> Reply:
        usage = usage_of(body)
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


class ResponsesConnection(ChatConnection):
    """The Responses API: ``text.format`` json_schema for structured output, re-asked with the error appended."""

    path = "/responses"

    def parse(self, request: dict[str, Any], body: dict[str, Any]) -> Reply:
        usage = usage_of(body)
        if body.get("status") not in (None, "completed"):
            reason = (body.get("incomplete_details") or {}).get("reason") or body.get("status")
            raise PermanentError(f"response {body.get('status')}: {reason}")
        text = output_text(body)
        if self.response_model is None:
            return Reply(text, usage)
        try:
            parsed = self.response_model.model_validate_json(text)
        except ValidationError as exc:
            reask = {**request, "input": [*request["input"], {"role": "assistant", "content": text},
                                          {"role": "user", "content": REASK.format(error=bounded(str(exc), (), 500))}]}
            raise InvalidOutputError(bounded(f"{type(exc).__name__}: {exc}"), reask_request=reask, usage=usage,
                                     raw=text) from exc
        return Reply(parsed.model_dump(mode="json"), usage)


def output_text(body: Mapping[str, Any]) -> str:
    """The text of a Responses answer: every ``output_text`` part of its message items, joined."""
    parts = [part.get("text", "") for item in body.get("output") or [] if item.get("type") == "message"
             for part in item.get("content") or [] if part.get("type") == "output_text"]
    return "".join(parts)


class EmbeddingConnection(BaseConnection):
    path = "/embeddings"

    def parse(self, request: dict[str, Any], body: dict[str, Any]) -> Reply:
        data = sorted(body.get("data", []), key=lambda d: d["index"])
        if len(data) != len(request["input"]):
            raise TransientError(f"asked for {len(request['input'])} embeddings, got {len(data)}")
        return Reply([decode_vector(d["embedding"]) for d in data], usage_of(body))


def _raw_output(completion: ChatCompletion) -> str:
    if not completion.choices:
        return ""
    message = completion.choices[0].message
    if message.tool_calls:
        return "".join(call.function.arguments for call in message.tool_calls if call.type == "function")
    return message.content or ""
