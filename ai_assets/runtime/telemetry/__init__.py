"""OpenTelemetry traces and metrics of a call, following the GenAI semantic conventions; off unless asked for.

**On or off.** Off by default, and then ``opentelemetry`` is never imported. On when the standard ``OTEL_*``
environment variables ask for an export (``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``
or ``..._METRICS_ENDPOINT``, or ``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER`` set to ``otlp`` or
``console``), or when the application has installed an SDK ``TracerProvider`` itself (then its providers are
used). ``OTEL_SDK_DISABLED=true`` turns it all off, as the SDK configuration spec says. The SDK reads the rest
itself: ``OTEL_SERVICE_NAME`` (default here ``ai_assets``), ``OTEL_RESOURCE_ATTRIBUTES``,
``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_TRACES_SAMPLER``, ``OTEL_BSP_*``, ``OTEL_METRIC_EXPORT_INTERVAL``. Export
is OTLP over HTTP/protobuf.

**Spans.** ``materialization`` (opened by the Dagster layer, tagged with run id, asset key and partition keys)
holds one span per call (``ai_assets.call``), which holds one span per request window (``{operation} {model}``,
kind CLIENT): the window's requests summed, with ``gen_ai.usage.input_tokens`` / ``output_tokens`` /
``cache_read.input_tokens`` / ``cache_creation.input_tokens`` / ``reasoning.output_tokens``, ``ai_assets.requests``,
``.retries``, ``.rate_limited`` (429s), ``.failed_requests``, ``.cost_usd``. A window span, not a request span: a
million-row partition would make a million request spans, far past the batch processor's queue (2048 by default,
``OTEL_BSP_MAX_QUEUE_SIZE``), which then drops spans silently; at the default 8192 rows a window it makes 123. Each
request is still measured, in the metrics. Token counts live on the window spans only (a request no window waits for
any more, such as a row resent after another run's claim lapsed, counts on the call span), so a backend that sums
``gen_ai.usage.*`` over spans counts every token once.

**Metrics.** ``gen_ai.client.operation.duration`` (s, with ``error.type`` on a failed request) and
``gen_ai.client.token.usage`` (``gen_ai.token.type`` input / output), with the conventions' bucket boundaries; and
counters ``ai_assets.client.requests``, ``.retries``, ``.errors``, ``.tokens`` and ``.cost`` (US dollars). Their
attributes are low-cardinality only: operation, provider, model, asset key (no run id, no partition).

**Never exported** unless asked: prompt and answer text. ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``
(the variable OpenTelemetry's own GenAI instrumentations read) adds, per request, an event
``gen_ai.client.inference.operation.details`` with ``gen_ai.input.messages`` and ``gen_ai.output.messages``, each
cut to ``MAX_CONTENT_CHARS`` (ending in ``…``), at most ``MAX_CONTENT_EVENTS`` per window
(``ai_assets.content.omitted`` counts the rest). Every exported string is scrubbed of the provider's secrets first.

**Bounded.** Export runs on the SDK's background threads; the end of a materialization flushes for at most
``FLUSH_TIMEOUT_S`` and each export gives up after ``EXPORT_TIMEOUT_S`` (``OTEL_EXPORTER_OTLP_TIMEOUT`` overrides).
A collector that is down or refuses costs the run that wait and a warning naming the endpoint, nothing else; for
``RECHECK_S`` after such a failure, flushes do not wait (one wait a process, not one a call).
"""

from ai_assets.runtime.telemetry.calls import MAX_CONTENT_EVENTS, CallTrace
from ai_assets.runtime.telemetry.sdk import (
    CONTENT_ENV,
    EXPORT_TIMEOUT_S,
    FLUSH_TIMEOUT_S,
    MAX_CONTENT_CHARS,
    Scope,
    capture_content,
    materialization,
    shutdown,
    usage_attributes,
    wanted,
)

__all__ = ["CONTENT_ENV", "EXPORT_TIMEOUT_S", "FLUSH_TIMEOUT_S", "MAX_CONTENT_CHARS", "MAX_CONTENT_EVENTS", "CallTrace",
           "Scope", "capture_content", "materialization", "shutdown", "usage_attributes",
           "wanted"]
