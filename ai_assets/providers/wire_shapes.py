"""The shapes an OpenAI-compatible answer must have before any of it is used: Chat Completions, Responses and
embeddings bodies as strict pydantic models.

A provider's answer is untrusted input. Every body is validated here first; whatever does not fit (``choices: "x"``,
a list or ``null`` body, integer ``content``, ``usage`` as a string, token counts out of range) becomes a
``MalformedAnswerError`` for that row, never an ``AttributeError`` out of the whole call. A body that fits but
holds no answer (``choices: []``, a choice without a message, ``content: null`` from a content filter) is an
``EmptyAnswerError`` that keeps ``finish_reason`` and any refusal text. Both are row errors that still carry the
tokens the answer was billed, so usage, budgets and TPM stay right.

Unknown fields are allowed (providers add their own); known fields are strict (no string-to-int coercion).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ai_assets.runtime.errors import AttemptUsage, EmptyAnswerError, MalformedAnswerError, bounded

# The largest answer read: 2,048 base64 embeddings of 3,072 floats are 33.6 MB; chat answers are far smaller.
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
# Token counts beyond this are not a real answer (and would overflow a journal's integer column).
TokenCount = Annotated[int, Field(ge=0, le=2**31 - 1, strict=True)]


class Shape(BaseModel):
    """A provider's answer read into a typed shape: fields we do not know are kept, nothing is changed."""

    model_config = ConfigDict(extra="allow", frozen=True)


class PromptDetails(Shape):
    cached_tokens: TokenCount | None = None


class OutputDetails(Shape):
    reasoning_tokens: TokenCount | None = None


class WireUsage(Shape):
    prompt_tokens: TokenCount | None = None
    completion_tokens: TokenCount | None = None
    input_tokens: TokenCount | None = None
    output_tokens: TokenCount | None = None
    prompt_tokens_details: PromptDetails | None = None
    input_tokens_details: PromptDetails | None = None
    """Chat Completions' and the Responses API's ``cached_tokens`` (a null or missing one counts as 0)."""
    completion_tokens_details: OutputDetails | None = None
    output_tokens_details: OutputDetails | None = None
    """Their ``reasoning_tokens``, inside the completion tokens."""

    def attempt(self) -> AttemptUsage:
        prompt = self.prompt_tokens if self.prompt_tokens is not None else self.input_tokens
        completion = self.completion_tokens if self.completion_tokens is not None else self.output_tokens
        details = self.prompt_tokens_details or self.input_tokens_details
        cached = details.cached_tokens if details is not None else None
        output = self.completion_tokens_details or self.output_tokens_details
        reasoning = output.reasoning_tokens if output is not None else None
        return AttemptUsage(prompt or 0, completion or 0, min(cached or 0, prompt or 0),
                            reasoning_tokens=min(reasoning or 0, completion or 0))


class _Body(Shape):
    usage: WireUsage | None = None

    def attempt_usage(self) -> AttemptUsage:
        return self.usage.attempt() if self.usage is not None else AttemptUsage()


class ToolFunction(Shape):
    name: str | None = None
    arguments: str | None = None


class ToolCall(Shape):
    type: str | None = None
    function: ToolFunction | None = None


class ChatMessage(Shape):
    role: str | None = None
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCall] | None = None


class ChatChoice(Shape):
    index: int | None = None
    message: ChatMessage | None = None
    finish_reason: str | None = None


class ChatBody(_Body):
    choices: list[ChatChoice]

    def answer(self) -> tuple[str, bool]:
        """The first choice's text (or its tool calls' JSON) and whether it came from tool calls; an
        ``EmptyAnswerError`` when there is none."""
        usage = self.attempt_usage()
        if not self.choices:
            raise EmptyAnswerError("empty answer: no choices", usage=usage)
        choice = self.choices[0]
        message = choice.message
        if message is None:
            raise EmptyAnswerError(f"empty answer: a choice without a message{_reason(choice.finish_reason)}",
                                   usage=usage)
        if message.content is None and message.tool_calls:
            return json.dumps([call.model_dump(mode="json", exclude_none=True) for call in message.tool_calls]), True
        if message.content is None or (message.content == "" and choice.finish_reason not in (None, "stop")):
            refusal = f"; refusal: {message.refusal!r}" if message.refusal else ""
            what = "null" if message.content is None else "empty"
            raise EmptyAnswerError(f"empty answer: content is {what}{_reason(choice.finish_reason)}{refusal}",
                                   usage=usage)
        return message.content, False


class OutputPart(Shape):
    type: str | None = None
    text: str | None = None
    refusal: str | None = None


class OutputItem(Shape):
    type: str | None = None
    content: list[OutputPart] | None = None


class IncompleteDetails(Shape):
    reason: str | None = None


class ResponsesBody(_Body):
    status: str | None = None
    output: list[OutputItem] = Field(default_factory=list)
    incomplete_details: IncompleteDetails | None = None

    def text(self) -> str:
        """Every ``output_text`` part of the message items, joined; an ``EmptyAnswerError`` when there is none."""
        parts = [part for item in self.output if item.type == "message" for part in item.content or []]
        texts = [part.text for part in parts if part.type == "output_text" and part.text is not None]
        if not texts:
            refusals = [part.refusal for part in parts if part.refusal]
            refusal = f"; refusal: {refusals[0]!r}" if refusals else ""
            raise EmptyAnswerError(f"empty answer: no output_text{refusal}", usage=self.attempt_usage())
        return "".join(texts)


class EmbeddingItem(Shape):
    index: int = Field(ge=0, strict=True)
    embedding: str | list[float]


class EmbeddingsBody(_Body):
    data: list[EmbeddingItem]


class TranscriptionBody(_Body):
    text: Annotated[str, Field(strict=True)]


S = TypeVar("S", bound=BaseModel)


def _reason(finish_reason: str | None) -> str:
    return f" (finish_reason={finish_reason!r})" if finish_reason else ""


class UsageShape(Protocol):
    def attempt(self) -> AttemptUsage:
        """The attempt's billed tokens in the one neutral shape."""
        ...


def validated(shape: type[S], body: object, source: str, usage: type[BaseModel] = WireUsage) -> S:
    """``body`` as ``shape``, or a ``MalformedAnswerError`` naming what did not fit (billed tokens kept where the
    ``usage`` part itself was readable as the vendor's ``usage`` shape, which has ``attempt()``)."""
    try:
        return shape.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        message = f"malformed answer from {source}: {where}: {first['msg']} ({exc.error_count()} problem(s))"
        raise MalformedAnswerError(bounded(message), usage=_usage_if_readable(body, usage)) from exc


def _usage_if_readable(body: object, usage: type[BaseModel]) -> AttemptUsage:
    """The billed tokens of the ``usage`` fields that read cleanly: one count out of range (a negative
    ``cache_creation_input_tokens``) drops that count, not the tokens the others report."""
    raw = body.get("usage") if isinstance(body, dict) else None
    if not isinstance(raw, dict):
        return AttemptUsage()
    while True:
        try:
            shape: UsageShape = usage.model_validate(raw)  # type: ignore[assignment]
            return shape.attempt()
        except ValidationError as exc:
            bad = {error["loc"][0] for error in exc.errors() if error["loc"]}
            if not bad & raw.keys():
                return AttemptUsage()
            raw = {name: value for name, value in raw.items() if name not in bad}


def loads(payload: bytes, source: str) -> Any:
    """JSON from an answer's bytes; a ``MalformedAnswerError`` for bytes that are not (invalid UTF-8 or JSON, a
    number over Python's digit limit, nesting too deep to parse)."""
    try:
        return json.loads(payload)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise MalformedAnswerError(bounded(f"unreadable answer from {source}: {type(exc).__name__}: {exc}"),
                                   usage=AttemptUsage()) from exc
