"""The wire side of Anthropic's Messages API: POST a request, map HTTP failures onto the runtime's error types, and
parse an answer (text, or the forced tool's input for structured output) into a value and its usage.

What it follows, and from where (docs.anthropic.com):

* "Errors": the body is ``{"type": "error", "error": {"type": ..., "message": ...}}``; 400 ``invalid_request_error``
  and 413 ``request_too_large`` are about the request (the row fails), 401 ``authentication_error``, 403
  ``permission_error`` and 404 ``not_found_error`` hold for every row (the run stops), 429 ``rate_limit_error``,
  500 ``api_error`` and 529 ``overloaded_error`` are worth another attempt, after ``retry-after`` when sent (the
  engine owns the retries; the SDK's own are never stacked on them: we do not use the SDK).
* "Rate limits": every answer carries ``anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,
  remaining,reset}``; each ``Reply`` (and each retried failure) carries them, as the OpenAI path's do, for the
  engine to pace the account by (``ai_assets.runtime.ratelimit.headers``).
* Messages API, ``usage``: ``input_tokens`` excludes ``cache_read_input_tokens`` and
  ``cache_creation_input_tokens``; ``AttemptUsage.billed_apart`` adds them up into the runtime's one shape.
* Structured output is a forced tool (``tool_choice: {"type": "tool", ...}``); its ``input`` is validated with the
  Pydantic model, and a failure is re-asked with instructor's Anthropic re-ask (the ``tool_use`` turn echoed, then
  a ``tool_result`` with ``is_error: true`` naming the error), as the OpenAI path re-asks with instructor's.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field, ValidationError

from ai_assets.providers.openai_wire import http_error
from ai_assets.providers.wire_shapes import Shape, TokenCount, loads, validated
from ai_assets.runtime.engine import Reply
from ai_assets.runtime.errors import (
    AIAssetsWarning,
    AttemptUsage,
    EmptyAnswerError,
    InvalidOutputError,
    MalformedAnswerError,
    PermanentError,
    TransientError,
    bounded,
)
from ai_assets.runtime.http import read_capped
from ai_assets.runtime.ratelimit.headers import rate_headers
from ai_assets.runtime.scrub import remember_secrets

if TYPE_CHECKING:
    import aiohttp

ANTHROPIC_VERSION = "2023-06-01"
MAX_IMAGE_BYTES = 5 * 1024 * 1024
"""Anthropic's largest image on the API ("Vision": 5 MB an image; a larger one is a 400 for its request)."""


class ThinkingDetails(Shape):
    thinking_tokens: TokenCount | None = None


class AnthropicUsage(Shape):
    input_tokens: TokenCount | None = None
    output_tokens: TokenCount | None = None
    cache_creation_input_tokens: TokenCount | None = None
    cache_read_input_tokens: TokenCount | None = None
    output_tokens_details: ThinkingDetails | None = None

    def attempt(self) -> AttemptUsage:
        thinking = self.output_tokens_details.thinking_tokens if self.output_tokens_details else None
        return AttemptUsage.billed_apart(self.input_tokens or 0, self.output_tokens or 0,
                                         cache_read=self.cache_read_input_tokens or 0,
                                         cache_write=self.cache_creation_input_tokens or 0, reasoning=thinking or 0)


class ContentBlock(Shape):
    """One block of an answer's ``content``: ``text``, ``tool_use`` (``id``, ``name``, ``input``), ``thinking``..."""

    type: str
    text: str | None = None
    id: str | None = None
    name: str | None = None
    input: Any = None


class MessageBody(Shape):
    """A Messages API answer (what instructor's re-ask reads: ``content`` blocks with ``type`` and ``id``)."""

    content: list[ContentBlock] = Field(default_factory=list)
    stop_reason: str | None = None
    usage: AnthropicUsage | None = None

    def attempt_usage(self) -> AttemptUsage:
        return self.usage.attempt() if self.usage is not None else AttemptUsage()


def error_message(text: str, headers: Mapping[str, str]) -> str:
    """``error.type: error.message`` of Anthropic's error JSON (the body as it is when it is not), and the
    ``request-id`` Anthropic asks for when reporting a problem."""
    try:
        body = json.loads(text)
    except (ValueError, RecursionError):
        body = None
    error = body.get("error") if isinstance(body, Mapping) else None
    message = f"{error.get('type', 'error')}: {error.get('message', '')}" if isinstance(error, Mapping) else text
    request_id = headers.get("request-id")
    return f"{message} (request-id {request_id})" if request_id else message


@dataclass(frozen=True)
class AnthropicEndpoint:
    """What a connection needs of its provider: where requests go, the secrets kept out of error text and the
    largest answer read."""

    url: str
    secrets: tuple[str, ...]
    max_response_bytes: int

    def __post_init__(self) -> None:
        remember_secrets(self.secrets)


class MessagesConnection:
    """``POST /v1/messages`` for one row's request; answers parsed into text or the response model's dict."""

    def __init__(self, endpoint: AnthropicEndpoint, session: aiohttp.ClientSession | None,
                 response_model: type[BaseModel] | None) -> None:
        self.endpoint = endpoint
        self.session = session
        self.response_model = response_model
        self.secrets: Sequence[str] = endpoint.secrets
        self.url = endpoint.url
        self._said_no_usage = False

    async def send(self, request: dict[str, Any]) -> Reply:
        _check_images(request)
        body, headers = await self._post(request)
        reply = self.parse(request, body)
        reply.headers = headers or None
        return reply

    async def _post(self, request: dict[str, Any]) -> tuple[Any, dict[str, str]]:
        """The answer's JSON and its rate-limit headers; HTTP failures as the runtime's errors."""
        assert self.session is not None, "a parsing-only connection cannot send"
        import aiohttp

        try:
            async with self.session.post(self.url, data=json.dumps(request)) as response:
                payload = await read_capped(response, self.endpoint.max_response_bytes, f"answer from {self.url}",
                                            "max_response_bytes", MalformedAnswerError)
                if response.status == 200:
                    return loads(payload, self.url), rate_headers(response.headers)
                text = payload.decode("utf-8", "replace")
                raise http_error(response.status,
                                 f"HTTP {response.status} from {self.url}: {error_message(text, response.headers)}",
                                 response.headers, self.secrets)
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise TransientError(f"{type(exc).__name__} talking to {self.url}: {exc}") from exc

    def parse(self, request: dict[str, Any], body: Any) -> Reply:
        """``body`` (untrusted JSON) as a value and its usage; a ``BadAnswerError`` when it holds none, an
        ``InvalidOutputError`` (with the re-ask) when the tool's input does not validate."""
        shape = validated(MessageBody, body, self.url, AnthropicUsage)
        usage = shape.attempt_usage()
        if shape.usage is None and not self._said_no_usage:  # the Messages API always reports it: a proxy's doing
            self._said_no_usage = True
            warnings.warn(f"answers from {self.url} report no usage: their tokens count as 0, so the run's cost, "
                          "a spending cap and the TPM pacing under-count them", AIAssetsWarning, stacklevel=2)
        if shape.stop_reason == "refusal":
            raise EmptyAnswerError(f"empty answer: the model refused (stop_reason='refusal'){_texts(shape)}",
                                   usage=usage)
        if self.response_model is None:
            texts = [block.text for block in shape.content if block.type == "text" and block.text is not None]
            if not texts:
                raise EmptyAnswerError(f"empty answer: no text block (stop_reason={shape.stop_reason!r})",
                                       usage=usage)
            if shape.stop_reason == "max_tokens":  # kept (it was paid for), and said to be cut
                warnings.warn(f"an answer from {self.url} stopped at max_tokens={request.get('max_tokens')} "
                              "(stop_reason='max_tokens'): its text is cut; raise PromptParams.max_output_tokens",
                              AIAssetsWarning, stacklevel=2)
            return Reply("".join(texts), usage)
        tool = _tool_name(request)
        uses = [block for block in shape.content if block.type == "tool_use"]
        calls = [block for block in uses if block.name == tool]
        if len(uses) > 1:
            raw = json.dumps([use.input for use in uses])
        else:
            raw = json.dumps(calls[0].input) if calls else "".join(b.text or "" for b in shape.content)
        try:
            if not calls:
                raise ValueError(f"no call of the tool {tool!r} (stop_reason={shape.stop_reason!r})")
            if any(use.name != tool or use.input != calls[0].input for use in uses):
                # instructor's Anthropic TOOLS parsing takes exactly one tool_use block; parallel tool use (on by
                # default) can give several: which one is the answer is unknown, so the model is asked again
                raise ValueError(f"expected exactly one call of the tool {tool!r}, got {len(uses)} tool_use blocks")
            parsed = self.response_model.model_validate(calls[0].input)
        except (ValidationError, ValueError) as exc:
            raise InvalidOutputError(bounded(f"{type(exc).__name__}: {exc}", self.secrets),
                                     reask_request=reask(request, shape, exc), usage=usage, raw=raw) from exc
        return Reply(parsed.model_dump(mode="json"), usage)


def reask(request: dict[str, Any], answer: MessageBody, error: Exception) -> dict[str, Any]:
    """The request again, with the answer and a ``tool_result`` naming ``error`` appended (instructor's re-ask)."""
    from instructor.v2.providers.anthropic.handlers import AnthropicToolsHandler

    copy = {**request, "messages": list(request["messages"])}  # the handler appends to the list it is given
    text = bounded(str(error), (), 500)
    asked: dict[str, Any] = AnthropicToolsHandler().handle_reask(copy, answer, ValueError(text))
    return asked


def _check_images(request: Mapping[str, Any]) -> None:
    """Refuse, before sending, a request with a base64 image over ``MAX_IMAGE_BYTES`` (the API would refuse it
    after the upload): that row fails, naming the size and the limit."""
    for turn in request.get("messages") or []:
        content = turn.get("content") if isinstance(turn, Mapping) else None
        for block in content if isinstance(content, list) else []:
            source = block.get("source") if isinstance(block, Mapping) and block.get("type") == "image" else None
            data = source.get("data") if isinstance(source, Mapping) else None
            size = len(data) * 3 // 4 - data[-2:].count("=") if isinstance(data, str) else 0
            if size > MAX_IMAGE_BYTES:
                raise PermanentError(f"an image of {size:,} bytes is over Anthropic's {MAX_IMAGE_BYTES:,}-byte limit "
                                     "per image (\"Vision\"): resize it first (decode_images, ImageSpec(size=...))")


def _tool_name(request: Mapping[str, Any]) -> str | None:
    choice = request.get("tool_choice")
    if isinstance(choice, Mapping) and choice.get("name"):
        return str(choice["name"])
    tools = request.get("tools") or []
    return str(tools[0].get("name")) if tools else None


def _texts(shape: MessageBody) -> str:
    text = "".join(block.text or "" for block in shape.content if block.type == "text")
    return f"; {bounded(text, (), 200)!r}" if text else ""
