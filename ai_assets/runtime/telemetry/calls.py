"""A call's spans (the call, its request windows) and its per-request metrics (see the package's docstring)."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ai_assets.runtime.errors import AttemptUsage, BadAnswerError, InvalidOutputError, TransientError
from ai_assets.runtime.telemetry.sdk import (
    MAX_CONTENT_CHARS,
    PROVIDERS,
    Scope,
    active_sdk,
    capture_content,
    clean_attributes,
    current_scope,
    mark_failed,
    usage_attributes,
)
from ai_assets.runtime.usage import Prices, Usage

logger = logging.getLogger(__name__)
MAX_CONTENT_EVENTS = 64
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TOKEN_BUCKETS = tuple(float(4 ** i) for i in range(14))  # 1, 4, 16, ... 67108864, as the conventions give them


class _Answer(Protocol):
    value: Any
    usage: AttemptUsage


@dataclass
class _Tally:
    """What a window's requests (or the call's, outside any window) used."""

    span: Any = None
    keys: Sequence[str] = ()
    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    failed: int = 0
    content_omitted: int = 0
    events: int = 0
    cost: float = 0.0
    tokens: AttemptUsage = field(default_factory=AttemptUsage)

    def attributes(self) -> dict[str, Any]:
        used = self.tokens
        return {"gen_ai.usage.input_tokens": used.prompt_tokens, "gen_ai.usage.output_tokens": used.completion_tokens,
                "gen_ai.usage.cache_read.input_tokens": used.cached_tokens,
                "gen_ai.usage.cache_creation.input_tokens": used.cache_write_tokens,
                "gen_ai.usage.reasoning.output_tokens": used.reasoning_tokens, "ai_assets.requests": self.requests,
                "ai_assets.retries": self.retries, "ai_assets.rate_limited": self.rate_limited,
                "ai_assets.failed_requests": self.failed, "ai_assets.cost_usd": round(self.cost, 6),
                "ai_assets.content.omitted": self.content_omitted}


class CallTrace:
    """One pipeline's spans and metrics. Built with the pipeline (it takes the materialization that is ``current``
    then as its parent), started by ``begin`` once the call runs live; every method is a no-op while off."""

    def __init__(self) -> None:
        scope = current_scope.get()
        self.scope = scope or Scope()
        self._sdk = active_sdk()
        self._span: Any = None
        self._windows: dict[int, _Tally] = {}
        self._by_key: dict[str, _Tally] = {}
        self._rest = _Tally()
        self._tags: dict[str, Any] = {}
        self._secrets: Sequence[str] = ()
        self._prices: Prices | None = None
        self._content = False
        self._metric_tags: dict[str, Any] = {}
        self._instruments: dict[str, Any] = {}

    def begin(self, task: Any, model: str | None, prices: Prices | None, secrets: Sequence[str]) -> None:
        """Open the call's span: what it runs (``gen_ai.*``) and the materialization's tags."""
        if self._sdk is None:
            return
        from opentelemetry import trace

        identity = getattr(task, "identity", None)
        identity = identity if isinstance(identity, Mapping) else {}
        provider = str(identity.get("provider") or "unknown")
        operation = getattr(task, "operation", None) or type(task).__name__.removesuffix("Task").lower()
        model = model or identity.get("model")
        self._secrets, self._prices, self._content = tuple(secrets), prices, capture_content()
        self._tags = {"gen_ai.operation.name": operation, "gen_ai.provider.name": PROVIDERS.get(provider, provider),
                      "gen_ai.request.model": None if model is None else str(model)}
        parent = trace.set_span_in_context(self.scope.span) if self.scope.span is not None else None
        tags = clean_attributes({**self.scope.tags, **self._tags}, self._secrets)
        self._span = self._sdk.tracer.start_span("ai_assets.call", context=parent, attributes=tags)
        asset = self.scope.tags.get("dagster.asset_key")
        self._metric_tags = clean_attributes({**self._tags, "dagster.asset_key": asset}, self._secrets)
        if not self._sdk.instruments:  # created once a process: the SDK keeps one instrument per name
            self._sdk.instruments.update(_instruments(self._sdk.meter))
        self._instruments = self._sdk.instruments

    def window(self, offset: int, rows: int, keys: Sequence[str]) -> None:
        """A window opens: the requests for ``keys`` are its own until ``window_done``."""
        if self._span is None:
            return
        from opentelemetry import trace

        name = f"{self._tags['gen_ai.operation.name']} {self._tags['gen_ai.request.model'] or ''}".strip()
        tags = clean_attributes({**self.scope.tags, **self._tags, "ai_assets.window.offset": offset,
                                 "ai_assets.window.rows": rows, "ai_assets.window.sent_rows": len(keys)}, self._secrets)
        span = self._sdk.tracer.start_span(  # type: ignore[union-attr]
            name, context=trace.set_span_in_context(self._span), kind=trace.SpanKind.CLIENT, attributes=tags)
        tally = _Tally(span, keys)
        self._windows[offset] = tally
        self._by_key.update(dict.fromkeys(keys, tally))

    def window_done(self, offset: int, error: BaseException | None = None) -> None:
        tally = self._windows.pop(offset, None)
        if tally is None:
            return
        for key in tally.keys:
            self._by_key.pop(key, None)
        tally.span.set_attributes(tally.attributes())
        mark_failed(tally.span, error, self._secrets)
        tally.span.end()

    def request(self, key: str, request: Mapping[str, Any], attempt: int, seconds: float | None,
                reply: _Answer | None, error: BaseException | None) -> None:
        """One request answered or failed (the engine calls it for every attempt)."""
        if self._span is None:
            return
        billed = reply.usage if reply is not None else \
            error.usage if isinstance(error, (InvalidOutputError, BadAnswerError)) else None
        status = error.status if isinstance(error, TransientError) else None
        kind = None if error is None else str(status) if status is not None else type(error).__name__
        tally = self._by_key.get(key, self._rest)
        tally.requests += 1
        tally.retries += attempt > 1
        tally.rate_limited += status == 429
        tally.failed += error is not None
        tags, meters = self._metric_tags, self._instruments
        failed = {**tags, "error.type": kind} if kind is not None else tags
        meters["duration"].record(seconds or 0.0, failed)
        meters["requests"].add(1, failed)
        if attempt > 1:
            meters["retries"].add(1, tags)
        if kind is not None:
            meters["errors"].add(1, failed)
        if billed is not None:
            tally.tokens.add(billed)
            for kind_, count in (("input", billed.prompt_tokens), ("output", billed.completion_tokens)):
                meters["token_usage"].record(count, {**tags, "gen_ai.token.type": kind_})
                meters["tokens"].add(count, {**tags, "gen_ai.token.type": kind_})
            if self._prices is not None:
                cost = self._prices.usage_cost(billed)
                tally.cost += cost
                meters["cost"].add(cost, tags)
        if self._content:
            self._event(tally, request, reply, error)

    def _event(self, tally: _Tally, request: Mapping[str, Any], reply: _Answer | None,
               error: BaseException | None) -> None:
        """The request's text, with the opt-in only: cut, scrubbed, at most ``MAX_CONTENT_EVENTS`` a window."""
        if tally.span is None or tally.events >= MAX_CONTENT_EVENTS:
            tally.content_omitted += 1
            return
        tally.events += 1
        sent = request.get("messages", request.get("input", request))
        answered = None if reply is None or self._tags["gen_ai.operation.name"] == "embeddings" else reply.value
        tally.span.add_event("gen_ai.client.inference.operation.details", clean_attributes({
            "gen_ai.input.messages": _text(sent),
            "gen_ai.output.messages": None if answered is None else _text(answered),
            "error.type": None if error is None else type(error).__name__}, self._secrets, MAX_CONTENT_CHARS))

    def end(self, usage: Usage) -> None:
        """End the call (from a ``finally``: an exception on its way out marks the spans failed). A failed call
        also ends its materialization, whose own end would never come."""
        if self._span is None:
            return
        error = sys.exc_info()[1]
        for offset in list(self._windows):
            self.window_done(offset, error or RuntimeError("the call ended before this window was emitted"))
        span, self._span = self._span, None
        rest = self._rest
        span.set_attributes({**usage_attributes(usage, self._prices), **(rest.attributes() if rest.requests else {})})
        mark_failed(span, error, self._secrets)
        span.end()
        if error is not None and not isinstance(error, GeneratorExit):
            warning = self.scope.end(usage, self._prices, error)
            if warning:
                logger.warning(warning)
        elif self.scope.span is None and self._sdk is not None:
            warning = self._sdk.flush()  # a plain-Python call: its own spans go out now
            if warning:
                logger.warning(warning)


def _text(value: Any) -> str:
    if hasattr(value, "model_dump"):
        value = value.model_dump()
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    return text[:MAX_CONTENT_CHARS * 2]  # scrubbed and cut to MAX_CONTENT_CHARS by clean_attributes's caller below


def _instruments(meter: Any) -> dict[str, Any]:
    return {
        "duration": meter.create_histogram("gen_ai.client.operation.duration", unit="s",
                                           description="GenAI operation duration.",
                                           explicit_bucket_boundaries_advisory=DURATION_BUCKETS),
        "token_usage": meter.create_histogram("gen_ai.client.token.usage", unit="{token}",
                                              description="Number of input and output tokens used.",
                                              explicit_bucket_boundaries_advisory=TOKEN_BUCKETS),
        "requests": meter.create_counter("ai_assets.client.requests", unit="{request}"),
        "retries": meter.create_counter("ai_assets.client.retries", unit="{request}"),
        "errors": meter.create_counter("ai_assets.client.errors", unit="{request}"),
        "tokens": meter.create_counter("ai_assets.client.tokens", unit="{token}"),
        "cost": meter.create_counter("ai_assets.client.cost", unit="USD"),
    }
