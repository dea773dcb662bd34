"""A real OpenAI-compatible HTTP server on 127.0.0.1 with fault injection, for tests and benchmarks.

It speaks ``/v1/chat/completions`` (plain text, ``json_object``, ``json_schema`` and ``tools``) and
``/v1/embeddings``, answers deterministically from the request content, counts requests per prompt and
injects faults on demand. Control goes through admin endpoints, so the server can live in another process
(the default: it then gets a core of its own instead of sharing the client's GIL).

    with FakeOpenAIServer(latency=0.1) as server:
        server.set_faults(Fault("429", rate=0.3, retry_after=1))
        ...  # point any OpenAI client at server.base_url
        assert server.stats().requests == 130
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Self

from ai_assets.testing.schema_instance import instance_for, seed_of

FaultKind = Literal["400", "401", "404", "429", "500", "502", "503", "timeout", "reset", "invalid_json",
                    "schema_violation"]


@dataclass(frozen=True)
class Fault:
    """One fault rule. The first rule that matches a request decides its fate.

    kind: an HTTP status to answer with, ``timeout`` (answer only after ``delay`` seconds), ``reset`` (drop the
    connection), ``invalid_json`` or ``schema_violation`` (a 200 whose content breaks the requested format).
    match: only prompts containing this substring; None matches every prompt.
    rate: the share of distinct prompts affected: exactly ``round(rate * n)`` of the first n prompts seen.
    attempts: affect only the first ``attempts`` requests of a prompt; None affects every request.
    """

    kind: FaultKind
    match: str | None = None
    rate: float = 1.0
    attempts: int | None = 1
    retry_after: float | None = None
    retry_after_ms: int | None = None
    delay: float = 0.0

    def matches(self, key: str, attempt: int) -> bool:
        if self.match is not None and self.match not in key:
            return False
        return self.attempts is None or attempt <= self.attempts


class _Rule:
    """A fault and its choice of prompts: each new prompt is picked when that keeps the share at ``rate``."""

    def __init__(self, fault: Fault) -> None:
        self.fault = fault
        self.chosen: dict[str, bool] = {}
        self.picked = 0

    def applies(self, key: str, attempt: int) -> bool:
        if not self.fault.matches(key, attempt):
            return False
        if key not in self.chosen:
            pick = self.picked + 1 <= round(self.fault.rate * (len(self.chosen) + 1))
            self.picked += pick
            self.chosen[key] = pick
        return self.chosen[key]


@dataclass
class ServerStats:
    requests: int = 0
    chat_requests: int = 0
    embedding_requests: int = 0
    embedding_inputs: int = 0
    faults_injected: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    by_key: dict[str, int] = field(default_factory=dict)
    arrivals: dict[str, list[float]] = field(default_factory=dict)


_RESET = object()


@dataclass
class _Response:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 429: "Too Many Requests", 500: "Internal Server Error",
            502: "Bad Gateway", 503: "Service Unavailable"}


class _App:
    def __init__(self, latency: float, embedding_dim: int) -> None:
        self.latency = latency
        self.embedding_dim = embedding_dim
        self.rules: list[_Rule] = []
        self.stats = ServerStats()
        self._ids = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *lines = head.decode("latin-1").split("\r\n")
                method, target, _ = request_line.split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines if ln)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                response = await self.route(method, target.split("?")[0], body)
                if response is _RESET or not isinstance(response, _Response):
                    writer.transport.abort()
                    return
                payload = json.dumps(response.body).encode()
                extra = "".join(f"{k}: {v}\r\n" for k, v in response.headers.items())
                writer.write(
                    f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Status')}\r\n"
                    f"content-type: application/json\r\ncontent-length: {len(payload)}\r\n{extra}\r\n".encode()
                    + payload
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()

    async def route(self, method: str, path: str, body: bytes) -> _Response | object:
        data = json.loads(body) if body else {}
        if path == "/_admin/stats":
            return _Response(200, asdict(self.stats))
        if path == "/_admin/faults":
            self.rules = [_Rule(Fault(**f)) for f in data["faults"]]
            return _Response(200, {"faults": len(self.rules)})
        if path == "/_admin/config":
            self.latency = float(data.get("latency", self.latency))
            return _Response(200, {"latency": self.latency})
        if path == "/_admin/reset":
            self.stats = ServerStats()
            return _Response(200, {})
        if path.endswith("/models"):
            return _Response(200, {"object": "list", "data": [{"id": "fake-model", "object": "model"}]})
        if path.endswith("/chat/completions") and method == "POST":
            return await self.chat(data)
        if path.endswith("/embeddings") and method == "POST":
            return await self.embeddings(data)
        return _Response(404, {"error": {"message": f"no route {method} {path}", "type": "not_found"}})

    def _count(self, key: str) -> int:
        stats = self.stats
        stats.requests += 1
        attempt = stats.by_key.get(key, 0) + 1
        stats.by_key[key] = attempt
        stats.arrivals.setdefault(key, []).append(time.monotonic())
        return attempt

    def _fault_for(self, key: str, attempt: int) -> Fault | None:
        rule = next((r for r in self.rules if r.applies(key, attempt)), None)
        if rule is None:
            return None
        self.stats.faults_injected += 1
        return rule.fault

    async def chat(self, data: dict[str, Any]) -> _Response | object:
        key = prompt_key(data.get("messages", []))
        self.stats.chat_requests += 1
        fault = self._fault_for(key, self._count(key))
        if fault is not None and fault.kind not in ("invalid_json", "schema_violation"):
            return await self._fail(fault)
        if self.latency:
            await asyncio.sleep(self.latency)
        seed = seed_of(key)
        schema, tool_name = _requested_schema(data)
        content: str | None
        tool_calls = None
        if fault is not None and fault.kind == "invalid_json":
            content = '{"truncated": '
        elif fault is not None and fault.kind == "schema_violation":
            content = json.dumps({"unexpected_field": seed % 100})
        elif schema is not None:
            content = json.dumps(instance_for(schema, seed))
        else:
            content = f"Answer to: {key[:200]}"
        if tool_name is not None:
            tool_calls = [{"id": f"call_{seed % 10**8}", "type": "function",
                           "function": {"name": tool_name, "arguments": content}}]
            content = None
        self._ids += 1
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if tool_calls:
            message["tool_calls"] = tool_calls
        prompt_tokens = 1 + sum(len(json.dumps(m.get("content", ""))) for m in data.get("messages", [])) // 4
        completion_tokens = 1 + len(content or json.dumps(tool_calls)) // 4
        self.stats.prompt_tokens += prompt_tokens
        self.stats.completion_tokens += completion_tokens
        return _Response(200, {
            "id": f"chatcmpl-{self._ids}", "object": "chat.completion", "created": int(time.time()),
            "model": data.get("model", "fake-model"),
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": "tool_calls" if tool_calls else "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        })

    async def embeddings(self, data: dict[str, Any]) -> _Response | object:
        inputs = data.get("input", [])
        inputs = [inputs] if isinstance(inputs, str) else list(inputs)
        key = "\n".join(map(str, inputs))
        self.stats.embedding_requests += 1
        self.stats.embedding_inputs += len(inputs)
        fault = self._fault_for(key, self._count(key))
        if fault is not None:
            return await self._fail(fault)
        if self.latency:
            await asyncio.sleep(self.latency)
        dim = int(data.get("dimensions") or self.embedding_dim)
        vectors = [embedding_for(str(text), dim) for text in inputs]
        tokens = sum(1 + len(str(t)) // 4 for t in inputs)
        self.stats.prompt_tokens += tokens
        return _Response(200, {
            "object": "list", "model": data.get("model", "fake-embedding"),
            "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        })

    async def _fail(self, fault: Fault) -> _Response | object:
        if fault.kind == "reset":
            return _RESET
        if fault.kind == "timeout":
            await asyncio.sleep(fault.delay)
            return _Response(200, {"error": {"message": "late answer", "type": "timeout"}})
        headers: dict[str, str] = {}
        if fault.retry_after is not None:
            headers["retry-after"] = f"{fault.retry_after:g}"
        if fault.retry_after_ms is not None:
            headers["retry-after-ms"] = str(fault.retry_after_ms)
        status = int(fault.kind)
        return _Response(status, {"error": {"message": f"injected {status}", "type": "injected", "code": status}},
                         headers)


def prompt_key(messages: list[dict[str, Any]]) -> str:
    """The text of the first user message (text parts joined; images by a short digest): what a test counts.

    The first, not the last: a re-ask appends its correction as a later user message, the same for every row.
    """
    for message in messages:
        if message.get("role") == "user":
            return _content_text(message.get("content"))
    return _content_text(messages[-1].get("content")) if messages else ""


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for part in content or []:
        if part.get("type") == "text":
            parts.append(part.get("text", ""))
        elif part.get("type") == "image_url":
            url = part.get("image_url", {}).get("url", "")
            parts.append(f"<image {seed_of(url) % 10**8}>")
    return " ".join(parts)


def embedding_for(text: str, dim: int) -> list[float]:
    """A deterministic unit vector for ``text``."""
    raw = [((seed_of(f"{text}:{i}") % 2001) - 1000) / 1000 for i in range(dim)]
    norm = sum(v * v for v in raw) ** 0.5 or 1.0
    return [v / norm for v in raw]


def _requested_schema(data: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    tools = data.get("tools") or []
    if tools:
        function = tools[0]["function"]
        return function.get("parameters", {"type": "object"}), function["name"]
    fmt = data.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        return fmt["json_schema"]["schema"], None
    if fmt.get("type") == "json_object":
        return _schema_in_messages(data.get("messages", [])) or {"type": "object", "properties": {}}, None
    return None, None


def _schema_in_messages(messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    decoder = json.JSONDecoder()
    for message in messages:
        text = message.get("content")
        if not isinstance(text, str):
            continue
        start = text.find("{")
        while start != -1:
            try:
                value, _ = decoder.raw_decode(text, start)
            except ValueError:
                value = None
            if isinstance(value, dict) and "properties" in value:
                return value
            start = text.find("{", start + 1)
    return None


async def _serve(app: _App, port: int, on_bound: Callable[[int], None]) -> None:
    server = await asyncio.start_server(app.handle, "127.0.0.1", port, backlog=1024)
    on_bound(server.sockets[0].getsockname()[1])
    async with server:
        await server.serve_forever()


class FakeOpenAIServer:
    """Start the fake server (in a child process by default) and control it.

    ``in_process=True`` runs it on a thread of this process instead: no start-up cost, but it shares the GIL.
    """

    def __init__(self, *, latency: float = 0.0, embedding_dim: int = 32, in_process: bool = False) -> None:
        self.latency = latency
        self.embedding_dim = embedding_dim
        self.in_process = in_process
        self.port = 0
        self._process: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> Self:
        if self.in_process:
            ready = threading.Event()
            self._loop = loop = asyncio.new_event_loop()
            app = _App(self.latency, self.embedding_dim)

            def bound(port: int) -> None:
                self.port = port
                ready.set()

            self._thread = threading.Thread(
                target=lambda: loop.run_until_complete(_serve(app, 0, bound)), daemon=True, name="fake-openai")
            self._thread.start()
            if not ready.wait(10):
                raise RuntimeError("fake OpenAI server thread did not start")
            return self
        self._process = subprocess.Popen(
            [sys.executable, "-m", "ai_assets.testing", "--port", "0", "--latency", str(self.latency),
             "--embedding-dim", str(self.embedding_dim)],
            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line.startswith("listening on "):
            self.stop()
            raise RuntimeError(f"fake OpenAI server did not start: {line!r}")
        self.port = int(line.split()[-1])
        return self

    def stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _admin(self, name: str, payload: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/_admin/{name}", data=json.dumps(payload).encode(), method="POST",
            headers={"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            result: dict[str, Any] = json.loads(response.read())
            return result

    def set_faults(self, *faults: Fault) -> None:
        self._admin("faults", {"faults": [asdict(f) for f in faults]})

    def set_latency(self, seconds: float) -> None:
        self._admin("config", {"latency": seconds})

    def reset(self) -> None:
        """Forget the counts (fault rules stay, with the prompts they already picked)."""
        self._admin("reset", {})

    def stats(self) -> ServerStats:
        return ServerStats(**self._admin("stats", {}))


def main() -> None:
    parser = argparse.ArgumentParser(description="Fake OpenAI-compatible server with fault injection")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--embedding-dim", type=int, default=32)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_serve(_App(args.latency, args.embedding_dim), args.port,
                       lambda port: print(f"listening on {port}", flush=True)))


if __name__ == "__main__":
    main()
