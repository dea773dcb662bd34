"""Turning telemetry on from the ``OTEL_*`` environment, the SDK it exports through, and a materialization's
span (see the package's docstring)."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import os
import re
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ai_assets.runtime.scrub import scrub_and_cut
from ai_assets.runtime.usage import Prices, Usage

logger = logging.getLogger(__name__)
CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
MAX_CONTENT_CHARS = 4096
EXPORT_TIMEOUT_S = 5.0
FLUSH_TIMEOUT_S = 5.0
RECHECK_S = 60.0
MAX_ATTRIBUTE_CHARS = 256
MAX_LOGGED_CHARS = 8000
PROVIDERS = {"openai-compatible": "openai"}  # as OpenTelemetry's OpenAI instrumentation names any base URL
SCOPE = "ai_assets"


def wanted(env: Mapping[str, str] | None = None) -> bool:
    """Whether the environment asks for telemetry (``OTEL_SDK_DISABLED`` wins over everything)."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if any(env.get(name, "").strip() for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                                                  "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")):
        return _exporter(env, "TRACES") != "none" or _exporter(env, "METRICS") != "none"
    return _exporter(env, "TRACES", "none") != "none" or _exporter(env, "METRICS", "none") != "none" \
        or _app_sdk() is not None


def capture_content(env: Mapping[str, str] | None = None) -> bool:
    """Whether prompt and answer text may be exported (``true``, or ``span_only`` / ``span_and_event``)."""
    value = (os.environ if env is None else env).get(CONTENT_ENV, "").strip().lower()
    return value in ("true", "1", "span_only", "span_and_event", "event_only")


def _exporter(env: Mapping[str, str], signal: str, default: str = "otlp") -> str:
    return (env.get(f"OTEL_{signal}_EXPORTER", "").strip().lower() or default).split(",")[0].strip()


def _app_sdk() -> Any | None:
    """The application's own tracer provider, when it installed an SDK one (never imports opentelemetry)."""
    api = sys.modules.get("opentelemetry.trace")
    if api is None:
        return None
    provider = api.get_tracer_provider()
    return None if type(provider).__name__ in ("ProxyTracerProvider", "NoOpTracerProvider") else provider


@dataclass
class _Sdk:
    tracer: Any
    meter: Any
    providers: list[Any]
    endpoint: str
    failures: list[str] = field(default_factory=list)
    own: bool = True
    """Built here (not the application's providers, which only the application shuts down)."""
    instruments: dict[str, Any] = field(default_factory=dict)
    quiet_until: float = 0.0

    def flush(self) -> str | None:
        """Export what is pending, within ``FLUSH_TIMEOUT_S``; a warning when it did not all go out. After a failure
        the next ``RECHECK_S`` of flushes do not wait (the exporters keep trying on their own threads): a collector
        that is down costs a process one wait, not one per call."""
        now = time.monotonic()
        if now < self.quiet_until:
            return None
        deadline = now + FLUSH_TIMEOUT_S  # one bound for traces and metrics together
        done = True
        for provider in self.providers:
            left = max(0, int((deadline - time.monotonic()) * 1000))
            try:  # the SDK's MeterProvider raises when a reader times out, where its TracerProvider returns False
                done = getattr(provider, "force_flush", lambda timeout_millis: True)(timeout_millis=left) \
                    is not False and done
            except Exception as exc:
                self.failures.append(type(exc).__name__)
                done = False
        if done and not self.failures:
            return None
        why = self.failures[-1] if self.failures else f"no answer within {FLUSH_TIMEOUT_S:g}s"
        self.failures.clear()
        self.quiet_until = time.monotonic() + RECHECK_S
        return (f"OpenTelemetry export to {self.endpoint} failed ({why}): this run's spans and metrics were dropped; "
                "the run itself is unaffected")


class _Watched:
    """An exporter that remembers its last failure, so the end of a materialization can say the export failed."""

    def __init__(self, inner: Any, failures: list[str]) -> None:
        self._inner = inner
        self._failures = failures

    def export(self, *args: Any, **kwargs: Any) -> Any:
        try:
            result = self._inner.export(*args, **kwargs)
        except Exception as exc:
            self._failures.append(type(exc).__name__)
            raise
        if getattr(result, "name", "SUCCESS") != "SUCCESS":
            self._failures.append("the collector did not accept it, or could not be reached")
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


_lock = threading.Lock()
_state: dict[str, Any] = {}


def active_sdk() -> _Sdk | None:
    """The process's telemetry for the current environment (built once per distinct ``OTEL_*`` setting)."""
    key = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("OTEL_")))
    if _state.get("key") == key:
        return _state.get("sdk")
    with _lock:
        if _state.get("key") != key:
            old = _state.get("sdk")
            _state["sdk"], _state["key"] = (_build() if wanted() else None), key
            if old is not None and old.own:
                for provider in old.providers:
                    with contextlib.suppress(Exception):
                        provider.shutdown()
    return _state.get("sdk")


def shutdown() -> None:
    """Export what is pending and stop the exporters this module built (an application's own SDK is left to it);
    the next call builds them again from the environment. Bounded by ``EXPORT_TIMEOUT_S`` per exporter."""
    with _lock:
        old, _state["sdk"] = _state.pop("sdk", None), None
        _state.pop("key", None)
    if old is not None and old.own:
        for provider in old.providers:
            with contextlib.suppress(Exception):
                provider.shutdown()


def _build() -> _Sdk | None:
    try:
        from opentelemetry import metrics, trace
    except ImportError:
        logger.warning("OTEL_* asks for telemetry but OpenTelemetry is not installed: pip install 'ai_assets[otel]'")
        return None
    try:
        return _built(trace, metrics)
    except Exception as exc:  # the SDK spec: a bad configuration warns, it never fails the instrumented work
        logger.warning(f"OpenTelemetry is off for this process: the OTEL_* settings could not be used "
                       f"({type(exc).__name__}); the runs themselves are unaffected")
        return None


def _built(trace: Any, metrics: Any) -> _Sdk:
    app = _app_sdk()
    if app is not None:
        return _Sdk(trace.get_tracer(SCOPE), metrics.get_meter(SCOPE), [app, metrics.get_meter_provider()],
                    "the application's exporter", own=False)
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    env = os.environ
    if env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf").strip() not in ("", "http/protobuf"):
        logger.warning("ai_assets exports OTLP over http/protobuf only; OTEL_EXPORTER_OTLP_PROTOCOL is ignored")
    resource = Resource.create({} if env.get("OTEL_SERVICE_NAME") else {"service.name": SCOPE})
    failures: list[str] = []
    tracer_provider = TracerProvider(resource=resource)
    traces, signals = _exporter(env, "TRACES"), _exporter(env, "METRICS")
    if traces != "none":
        spans = ConsoleSpanExporter() if traces == "console" else OTLPSpanExporter(timeout=_timeout(env, "TRACES"))
        tracer_provider.add_span_processor(BatchSpanProcessor(_Watched(spans, failures)))  # type: ignore[arg-type]
    readers = [] if signals == "none" else [PeriodicExportingMetricReader(_Watched(  # type: ignore[arg-type]
        ConsoleMetricExporter() if signals == "console" else OTLPMetricExporter(timeout=_timeout(env, "METRICS")),
        failures))]
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT") \
        or "http://localhost:4318"
    _SCRUBBED.secrets = _endpoint_secrets(env)
    for name in [n for n in logging.root.manager.loggerDict if n.startswith("opentelemetry")]:
        logging.getLogger(name).addFilter(_SCRUBBED)  # the exporters log their URL, with what it carries
    return _Sdk(tracer_provider.get_tracer(SCOPE), meter_provider.get_meter(SCOPE), [tracer_provider, meter_provider],
                shown_endpoint(endpoint), failures)


def _timeout(env: Mapping[str, str], signal: str) -> float:
    """``OTEL_EXPORTER_OTLP_<signal>_TIMEOUT`` or ``OTEL_EXPORTER_OTLP_TIMEOUT`` in seconds (as the Python SDK reads
    them), else ``EXPORT_TIMEOUT_S``: a value that is not a positive number is ignored with a warning, as the SDK
    configuration spec asks."""
    raw = (env.get(f"OTEL_EXPORTER_OTLP_{signal}_TIMEOUT", "").strip()
           or env.get("OTEL_EXPORTER_OTLP_TIMEOUT", "").strip())
    if not raw:
        return EXPORT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if math.isfinite(value) and value > 0:
        return value
    logger.warning(f"the OTLP export timeout {raw[:40]!r} (OTEL_EXPORTER_OTLP_*TIMEOUT) is not a positive number "
                   f"of seconds: {EXPORT_TIMEOUT_S:g} s is used")
    return EXPORT_TIMEOUT_S


def shown_endpoint(endpoint: str) -> str:
    """``endpoint`` as a warning may show it: scheme, host and port, never its userinfo, path or query."""
    try:
        address = urlsplit(endpoint.strip())
        port = address.port
    except ValueError:
        return "the OTLP endpoint (not a valid URL: check OTEL_EXPORTER_OTLP_ENDPOINT)"
    return f"{address.scheme}://{address.hostname}" + (f":{port}" if port else "")


def _endpoint_secrets(env: Mapping[str, str]) -> list[str]:
    """What the ``OTEL_*`` exporter settings carry that is a credential: an endpoint's userinfo (RFC 3986) and
    query values, and every header value (``OTEL_EXPORTER_OTLP_HEADERS``: ``key=value`` pairs, W3C Baggage
    format)."""
    found: list[str] = []
    for signal in ("", "TRACES_", "METRICS_"):
        url = env.get(f"OTEL_EXPORTER_OTLP_{signal}ENDPOINT", "")
        if (userinfo := re.search(r"//([^/?#]*)@", url)) is not None:
            found += [userinfo.group(1), *userinfo.group(1).split(":", 1)]
        found += [value for value in re.findall(r"[?&][^=&#]*=([^&#]*)", url)]
        headers = env.get(f"OTEL_EXPORTER_OTLP_{signal}HEADERS", "")
        found += [pair.split("=", 1)[1].strip() for pair in headers.split(",") if "=" in pair]
    return [f for f in found if f]


class _Scrub(logging.Filter):
    """Masks ``secrets`` in a record's message and traceback (an exporter's connection error names its URL)."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        record.msg, record.args = scrub_and_cut(record.getMessage(), self.secrets, MAX_LOGGED_CHARS), ()
        if record.exc_info:
            record.exc_text = scrub_and_cut(logging.Formatter().formatException(record.exc_info), self.secrets,
                                            MAX_LOGGED_CHARS)
            record.exc_info = None
        return True


_SCRUBBED = _Scrub()


def clean_attributes(attributes: Mapping[str, Any], secrets: Sequence[str] = (),
                     limit: int = MAX_ATTRIBUTE_CHARS) -> dict[str, Any]:
    """Attributes OpenTelemetry accepts: no None; strings (and lists of them) scrubbed of secrets, then cut to
    ``limit`` characters (ending in ``…``)."""
    out: dict[str, Any] = {}
    for name, value in attributes.items():
        if value is None:
            continue
        if isinstance(value, str):
            out[name] = scrub_and_cut(value, secrets, limit)
        elif isinstance(value, (list, tuple)):
            out[name] = [scrub_and_cut(str(v), secrets, limit) for v in value]
        else:
            out[name] = value
    return out


@dataclass
class Scope:
    """A materialization's span: calls made while it is ``current`` become its children and carry its tags."""

    span: Any = None
    tags: dict[str, Any] = field(default_factory=dict)
    sdk: _Sdk | None = None

    @contextlib.contextmanager
    def current(self) -> Iterator[None]:
        token = current_scope.set(self)
        try:
            yield
        finally:
            current_scope.reset(token)

    def end(self, usage: Usage | None = None, prices: Prices | None = None,
            error: BaseException | None = None) -> str | None:
        """End the span (once) with the call's totals, and flush: a warning when the export failed."""
        span, self.span = self.span, None
        if span is None or self.sdk is None:
            return None
        if usage is not None:
            span.set_attributes(usage_attributes(usage, prices))
        mark_failed(span, error)
        span.end()
        return self.sdk.flush()


current_scope: contextvars.ContextVar[Scope | None] = contextvars.ContextVar("ai_assets_telemetry_scope", default=None)


def materialization(name: str, tags: Mapping[str, Any]) -> Scope:
    """Open the span of a materialization (or any unit of work) named ``name``; a no-op while telemetry is off."""
    sdk = active_sdk()
    if sdk is None:
        return Scope()
    clean = clean_attributes(tags)
    return Scope(sdk.tracer.start_span(name, attributes=clean), clean, sdk)


def usage_attributes(usage: Usage, prices: Prices | None) -> dict[str, Any]:
    """A call's totals, as the materialization's metadata gives them (``ai/tokens_in`` is ``ai_assets.tokens_in``)."""
    summary = usage.summary()
    names = {"rows": "rows_in", "sent_rows": "rows_sent", "cache_hits": "rows_from_cache", "errors": "rows_with_errors",
             "requests": "requests", "retries": "retries", "prompt_tokens": "tokens_in",
             "completion_tokens": "tokens_out", "cached_tokens": "tokens_cached"}
    out: dict[str, Any] = {f"ai_assets.{name}": summary[key] for key, name in names.items()}
    if prices is not None or usage.model_prices:
        out["ai_assets.cost_usd"] = round(usage.cost(prices), 6)
    return out


def mark_failed(span: Any, error: BaseException | None, secrets: Sequence[str] = ()) -> None:
    if error is None or isinstance(error, GeneratorExit):
        return
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute("error.type", type(error).__name__)
    span.set_status(Status(StatusCode.ERROR, scrub_and_cut(str(error), secrets, MAX_ATTRIBUTE_CHARS)))

