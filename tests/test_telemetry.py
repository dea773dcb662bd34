"""OpenTelemetry traces and metrics (issue 29): a real OTLP/HTTP receiver on 127.0.0.1 decodes what the SDK's
exporters send (the OTLP specification: ``POST /v1/traces`` and ``/v1/metrics`` with an ``application/x-protobuf``
``ExportTraceServiceRequest`` / ``ExportMetricsServiceRequest`` body, decoded here with opentelemetry-proto), while a
real Dagster materialization runs against the fake OpenAI-compatible server."""

import gzip
import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from ai_assets import OpenAICompatibleProvider, RetryPolicy, RunOptions, prompt
from ai_assets.dagster import OpenAICompatibleResource, ParquetIOManager, ResultCacheResource, prompt_asset
from ai_assets.runtime.telemetry import CONTENT_ENV, MAX_CONTENT_CHARS, capture_content, shutdown, wanted
from ai_assets.testing import FakeOpenAIServer, Fault

SECRET = "sk-proj-A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6"  # long enough to be remembered and masked everywhere
MAX_BODY = 64 << 20


class Receiver:
    """A minimal OTLP/HTTP collector: keeps every decoded export request (bodies bounded, gzip accepted)."""

    def __init__(self) -> None:
        self.spans: list[Any] = []
        self.metrics: list[Any] = []
        self.raw: list[bytes] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                size = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(min(size, MAX_BODY))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                receiver.raw.append(body)
                if self.path == "/v1/traces":
                    request: Any = ExportTraceServiceRequest.FromString(body)
                    receiver.spans += [s for r in request.resource_spans for ss in r.scope_spans for s in ss.spans]
                elif self.path == "/v1/metrics":
                    request = ExportMetricsServiceRequest.FromString(body)
                    receiver.metrics += [m for r in request.resource_metrics for sm in r.scope_metrics
                                         for m in sm.metrics]
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def named(self, prefix: str) -> list[Any]:
        return [s for s in self.spans if s.name.startswith(prefix)]


def value(any_value: AnyValue) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [value(v) for v in any_value.array_value.values]
    return getattr(any_value, kind) if kind else None


def attrs(span_or_event: Any) -> dict[str, Any]:
    return {kv.key: value(kv.value) for kv in span_or_event.attributes}


@pytest.fixture
def collector(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    receiver = Receiver()
    for name in ("OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER", CONTENT_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "telemetry-test")
    yield receiver
    shutdown()  # the process's exporters go while their collector still listens
    receiver.http.shutdown()


def reviews_asset(n: int = 40) -> dg.AssetsDefinition:
    @dg.asset(partitions_def=dg.StaticPartitionsDefinition(["2026-12-01", "2026-12-02"]), name="reviews")
    def reviews(context: dg.AssetExecutionContext) -> pa.Table:
        return pa.table({"text": [f"{context.partition_key} confidential-roadmap review number {i}" for i in range(n)]})

    return reviews


def materialize(server: FakeOpenAIServer, tmp_path: Path, options: RunOptions | None = None,
                instance: dg.DagsterInstance | None = None) -> dg.ExecuteInProcessResult:
    reviews = reviews_asset()
    verdicts = prompt_asset("verdicts", reviews, template="Judge this review: {text}", provider_key="llm",
                            partitions_def=reviews.partitions_def,
                            options=options or RunOptions(window_rows=8, concurrency=4))
    resources = {"llm": OpenAICompatibleResource(model="fake-model", base_url=server.base_url, api_key=SECRET),
                 "io_manager": ParquetIOManager(root=str(tmp_path / "warehouse")),
                 "ai_cache": ResultCacheResource(path=str(tmp_path / "journal.sqlite"))}
    result = dg.materialize([reviews, verdicts], partition_key="2026-12-01", resources=resources, instance=instance)
    assert result.success
    return result


def metadata_of(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    [event] = [e for e in result.get_asset_materialization_events()
               if e.asset_key == dg.AssetKey("verdicts")]
    return {k: getattr(v, "value", v) for k, v in event.materialization.metadata.items()}


def everything_exported(receiver: Receiver) -> str:
    """Every string the collector got, spans, events and metrics, as one text to search."""
    texts = [s.name for s in receiver.spans]
    for span in receiver.spans:
        texts += [str(v) for v in attrs(span).values()]
        for event in span.events:
            texts += [event.name, *(str(v) for v in attrs(event).values())]
        texts.append(span.status.message)
    texts += [str(m) for m in receiver.metrics]
    return "\n".join(texts)


def test_window_spans_sum_to_the_materialization_metadata_and_carry_no_prompt_text(
        server: FakeOpenAIServer, collector: Receiver, tmp_path: Path) -> None:
    """Issue 29's Must-show. GenAI semantic conventions: ``gen_ai.usage.input_tokens`` / ``output_tokens`` /
    ``cache_read.input_tokens`` are the billed counts; prompt and answer text (``gen_ai.input.messages``) are
    opt-in only ("Instrumentations SHOULD NOT capture them by default")."""
    server.set_prefix_cache(8)  # some prompt tokens come back as cached, as OpenAI's prompt caching reports them
    metadata = metadata_of(materialize(server, tmp_path))
    windows = [s for s in collector.spans if "gen_ai.usage.input_tokens" in attrs(s)]
    assert len(windows) == 5  # 40 rows, 8 a window
    assert metadata["ai/tokens_in"] > 0 and metadata["ai/tokens_out"] > 0
    for key, attribute in (("ai/tokens_in", "gen_ai.usage.input_tokens"),
                           ("ai/tokens_out", "gen_ai.usage.output_tokens"),
                           ("ai/tokens_cached", "gen_ai.usage.cache_read.input_tokens"),
                           ("ai/requests", "ai_assets.requests")):
        assert sum(attrs(s)[attribute] for s in windows) == metadata[key], key
    [root] = collector.named("materialize verdicts")
    tags = attrs(root)
    assert tags["dagster.asset_key"] == "verdicts" and tags["dagster.partition_key"] == "2026-12-01"
    assert tags["dagster.partition_keys"] == ["2026-12-01"] and len(tags["dagster.run_id"]) == 36
    assert tags["ai_assets.tokens_in"] == metadata["ai/tokens_in"]
    [call] = collector.named("ai_assets.call")
    assert call.parent_span_id == root.span_id and {s.parent_span_id for s in windows} == {call.span_id}
    assert {s.trace_id for s in windows} == {root.trace_id}
    assert {attrs(s)["gen_ai.operation.name"] for s in windows} == {"chat"}
    assert {attrs(s)["gen_ai.request.model"] for s in windows} == {"fake-model"}
    assert all(attrs(s)["dagster.run_id"] == tags["dagster.run_id"] for s in windows)
    exported = everything_exported(collector)
    assert "confidential-roadmap" not in exported and "Judge this review" not in exported
    assert not any(b"confidential-roadmap" in body or SECRET.encode() in body for body in collector.raw)
    names = {m.name for m in collector.metrics}
    assert {"gen_ai.client.operation.duration", "gen_ai.client.token.usage", "ai_assets.client.requests"} <= names
    [duration] = [m for m in collector.metrics if m.name == "gen_ai.client.operation.duration"]
    assert sum(p.count for p in duration.histogram.data_points) == metadata["ai/requests"]
    assert {"ai/tokens_in", "ai/tokens_out", "ai/requests", "ai/rows_in"} <= set(metadata)  # Insights' keys stay


def test_prompt_and_answer_text_are_exported_with_the_opt_in_cut_and_scrubbed(
        server: FakeOpenAIServer, collector: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenTelemetry's GenAI instrumentations export message content only with
    ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``, as ``gen_ai.input.messages`` /
    ``gen_ai.output.messages``; we cut each to ``MAX_CONTENT_CHARS`` and mask the API key even in the text."""
    monkeypatch.setenv(CONTENT_ENV, "true")
    llm = OpenAICompatibleProvider("fake-model", base_url=server.base_url, api_key=SECRET)
    huge = "x" * (MAX_CONTENT_CHARS * 3)
    table = pa.table({"q": ["what is the confidential-roadmap?", f"my key is {SECRET}", huge]})
    prompt(table, "Q: {q}", provider=llm)
    events = [attrs(e) for s in collector.spans for e in s.events
              if e.name == "gen_ai.client.inference.operation.details"]
    assert len(events) == 3
    inputs = [e["gen_ai.input.messages"] for e in events]
    assert any("confidential-roadmap" in text for text in inputs)
    assert all("Answer to:" in e["gen_ai.output.messages"] for e in events)
    assert max(len(text) for text in inputs) == MAX_CONTENT_CHARS and any(t.endswith("…") for t in inputs)
    assert not any(SECRET.encode() in body or SECRET[5:25].encode() in body for body in collector.raw)


def test_429s_retries_and_failures_are_counted_with_error_type(
        server: FakeOpenAIServer, collector: Receiver) -> None:
    """GenAI conventions: a failed operation carries ``error.type`` (the status code or the exception's name) on
    ``gen_ai.client.operation.duration``; a 429 is OpenAI's rate-limit answer (retried after its Retry-After)."""
    server.set_faults(Fault("429", match="[slow]", attempts=1, retry_after=0.01),
                      Fault("400", match="[refuse]"))
    llm = OpenAICompatibleProvider("fake-model", base_url=server.base_url, api_key=SECRET)
    options = RunOptions(on_error="null", retry=RetryPolicy(max_attempts=3, base_wait=0.01, max_wait=0.05))
    out = prompt(pa.table({"q": ["a [slow]", "b [refuse]", "c"]}), "Q: {q}", provider=llm, options=options)
    [window] = [s for s in collector.spans if "ai_assets.rate_limited" in attrs(s)]
    tags = attrs(window)
    assert tags["ai_assets.rate_limited"] == 1 and tags["ai_assets.retries"] == out.usage.retries == 1
    assert tags["ai_assets.failed_requests"] == 2 and tags["ai_assets.requests"] == out.usage.requests == 4
    [duration] = [m for m in collector.metrics if m.name == "gen_ai.client.operation.duration"]
    kinds = {value(kv.value) for p in duration.histogram.data_points for kv in p.attributes if kv.key == "error.type"}
    assert kinds == {"429", "PermanentError"}


def test_a_collector_that_is_down_costs_the_run_a_warning_only(
        server: FakeOpenAIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """OTLP exporter spec: export is bounded by ``OTEL_EXPORTER_OTLP_TIMEOUT``; a refused connection (nothing
    listens) must not fail or stall the instrumented work. The materialization succeeds, its metadata is whole,
    and the run log names the endpoint that failed."""
    with socket.socket() as probe:  # a port nothing listens on: connection refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://user:pw@127.0.0.1:{port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    started = time.monotonic()
    instance = dg.DagsterInstance.ephemeral()
    try:
        result = materialize(server, tmp_path, instance=instance)
    finally:
        shutdown()  # this exporter's retries end here, not at the process's exit
    elapsed = time.monotonic() - started
    assert metadata_of(result)["ai/rows_in"] == 40
    warnings = [e.user_message for e in instance.all_logs(result.run_id)
                if e.level == logging.WARNING and "OpenTelemetry export" in e.user_message]
    assert warnings and f"127.0.0.1:{port}" in warnings[0] and "pw" not in warnings[0]
    assert elapsed < 30


def test_telemetry_is_off_by_default_and_never_imports_opentelemetry(server: FakeOpenAIServer) -> None:
    """OTel SDK environment spec: nothing is exported unless an exporter is configured; a library must not pay
    for (or import) the SDK when its user did not ask for it."""
    code = ("import sys, pyarrow as pa\n"
            "from ai_assets import OpenAICompatibleProvider, prompt\n"
            f"llm = OpenAICompatibleProvider('fake-model', base_url={server.base_url!r}, api_key='k')\n"
            "prompt(pa.table({'q': ['a', 'b']}), 'Q: {q}', provider=llm)\n"
            "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n")
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("OTEL_")}
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


ENV_NAMES = ["OTEL_SDK_DISABLED", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
             "OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER"]


@given(st.dictionaries(st.sampled_from(ENV_NAMES),
                       st.sampled_from(["", "true", "false", "TRUE", "none", "otlp", "console", "http://x:4318"])))
def test_the_standard_env_decides(env: dict[str, str]) -> None:
    """OTel SDK configuration spec: ``OTEL_SDK_DISABLED=true`` (case-insensitive) disables the SDK whatever else is
    set; ``OTEL_{TRACES,METRICS}_EXPORTER=none`` turns a signal off; an OTLP endpoint asks for an export."""
    def exporter(name: str, default: str) -> str:
        return env.get(name, "").lower() or default

    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        expected = False
    elif env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        expected = "none" not in (exporter("OTEL_TRACES_EXPORTER", "otlp"), exporter("OTEL_METRICS_EXPORTER", "otlp")) \
            or exporter("OTEL_TRACES_EXPORTER", "otlp") != exporter("OTEL_METRICS_EXPORTER", "otlp")
    else:  # no endpoint: on only where an exporter is named (this process installs no SDK of its own)
        named = (exporter("OTEL_TRACES_EXPORTER", "none"), exporter("OTEL_METRICS_EXPORTER", "none"))
        expected = named != ("none", "none")
    assert wanted(env) is expected
    assert capture_content({}) is False and capture_content({CONTENT_ENV: "TRUE"}) is True
