"""A real OpenAI-compatible HTTP server on 127.0.0.1 with fault injection, for tests and benchmarks.

It speaks ``/v1/chat/completions`` (plain text, ``json_object``, ``json_schema``, ``tools``, image and file parts),
``/v1/responses`` (text, ``text.format`` json_schema, reasoning), ``/v1/embeddings`` (JSON floats or base64), and the
Batch API (``/v1/files``, ``/v1/batches``). It answers deterministically from the request content, counts requests
per prompt, can enforce a per-minute rate limit like a provider account (429 above it), and injects faults on
demand. Control goes through admin endpoints, so the server can live in another process (the default: it then gets
a core of its own instead of sharing the client's GIL).

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
from dataclasses import asdict
from typing import Any, Self

from ai_assets.testing.batches import BatchApi, multipart_fields
from ai_assets.testing.faults import BatchBehaviour, Fault, Rule, ServerStats
from ai_assets.testing.handlers import RESET, App, Reply, ServerLimit, WindowLimit
from ai_assets.testing.noise import Noise
from ai_assets.testing.prefix_cache import PrefixCache, Write
from ai_assets.testing.rate_headers import HeaderStyle, report, window_state

TRACKED_HEADERS = ("authorization", "api-key")
SAMPLING_KEYS = ("temperature", "top_p", "max_tokens", "max_completion_tokens", "max_output_tokens")
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 429: "Too Many Requests", 500: "Internal Server Error",
            502: "Bad Gateway", 503: "Service Unavailable", 529: "Overloaded"}


class _Server:
    """HTTP/1.1 keep-alive over asyncio streams, routing to the handlers, the Batch API and the admin endpoints."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.batches = BatchApi(app)
        self.header_style: HeaderStyle | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *lines = head.decode("latin-1").split("\r\n")
                method, target, _ = request_line.split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines if ln)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                response = await self.route(method, target.split("?")[0], body, headers)
                if response is RESET or not isinstance(response, Reply):
                    writer.transport.abort()
                    return
                payload = response.raw if response.raw is not None else json.dumps(response.body).encode()
                kind = "application/octet-stream" if response.raw is not None else "application/json"
                extra = "".join(f"{k}: {v}\r\n" for k, v in response.headers.items())
                writer.write(
                    f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Status')}\r\n"
                    f"content-type: {kind}\r\ncontent-length: {len(payload)}\r\n{extra}\r\n".encode() + payload)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()

    async def route(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> Reply | object:
        app = self.app
        multipart = headers.get("content-type", "").startswith("multipart/")
        data = json.loads(body) if body and not multipart else {}
        if path.startswith("/_admin/"):
            return self.admin(path.removeprefix("/_admin/"), data)
        stats = app.stats
        stats.paths[path] = stats.paths.get(path, 0) + 1
        stats.headers.update({k: v for k, v in headers.items() if k in TRACKED_HEADERS or k.startswith("openai-")})
        if isinstance(data, dict) and "model" in data:
            stats.models[str(data["model"])] = stats.models.get(str(data["model"]), 0) + 1
        if isinstance(data, dict) and any(k in data for k in SAMPLING_KEYS):
            sampling = json.dumps({k: data[k] for k in SAMPLING_KEYS if k in data}, sort_keys=True)
            stats.sampling[sampling] = stats.sampling.get(sampling, 0) + 1
        if path.endswith("/models"):
            return Reply(200, {"object": "list", "data": [{"id": "fake-model", "object": "model"}]})
        if method == "POST" and path.endswith("/chat/completions"):
            return self.reported(await app.chat(data))
        if method == "POST" and path.endswith("/responses"):
            return self.reported(await app.responses(data))
        if method == "POST" and path.endswith("/embeddings"):
            return self.reported(await app.embeddings(data))
        if method == "POST" and path.endswith("/audio/transcriptions"):
            return await app.transcribe(multipart_fields(body, headers) if multipart else {})
        routed = await self.batches.route(method, path, data, body, headers)
        if routed is not None:
            return routed
        return Reply(404, {"error": {"message": f"no route {method} {path}", "type": "not_found"}})

    def reported(self, reply: Reply | object) -> Reply | object:
        """``reply`` with the account's rate-limit headers, in the vendor style asked for (``set_rate_limit``)."""
        limit = self.app.limit
        if isinstance(reply, Reply) and reply.status == 429 and limit is not None:
            self.app.stats.refusals.append(time.monotonic())
        if self.header_style is None or not isinstance(reply, Reply) or not isinstance(limit, WindowLimit):
            return reply
        state = window_state([(at, tokens) for at, tokens in limit._arrivals], limit.window_s, limit.rpm, limit.tpm)
        reply.headers.update(report(self.header_style, state))
        return reply

    def admin(self, name: str, data: dict[str, Any]) -> Reply:
        app = self.app
        if name == "stats":
            return Reply(200, asdict(app.stats))
        if name == "faults":
            app.rules = [Rule(Fault(**f)) for f in data["faults"]]
            return Reply(200, {"faults": len(app.rules)})
        if name == "config":
            app.latency = float(data.get("latency", app.latency))
            if "prefix_cache" in data or "prefix_cache_write" in data:
                app.prefix_cache = PrefixCache(int(data.get("prefix_cache", app.prefix_cache.capacity)),
                                               data.get("prefix_cache_write", app.prefix_cache.write))
            return Reply(200, {"latency": app.latency, "prefix_cache": app.prefix_cache.capacity,
                               "prefix_cache_write": app.prefix_cache.write})
        if name == "rate_limit":
            rpm, tpm, window = data.get("rpm"), data.get("tpm"), data.get("window_s")
            self.header_style = data.get("headers")
            if not (rpm or tpm):
                app.limit = None
            elif window:
                app.limit = WindowLimit(rpm, tpm, float(window))
            else:
                app.limit = ServerLimit(rpm, tpm, float(data.get("tolerance_s", 0.0)))
            return Reply(200, {})
        if name == "noise":
            app.noise = [Noise(**n) for n in data["noise"]]
            return Reply(200, {"noise": len(app.noise)})
        if name == "batches":
            self.batches.configure(BatchBehaviour(**data))
            return Reply(200, {})
        if name == "reset":
            app.stats = ServerStats()
            app.prefix_cache = PrefixCache(app.prefix_cache.capacity, app.prefix_cache.write)
            return Reply(200, {})
        return Reply(404, {"error": {"message": f"no admin endpoint {name}"}})


async def _serve(server: _Server, port: int, on_bound: Callable[[int], None]) -> None:
    listener = await asyncio.start_server(server.handle, "127.0.0.1", port, backlog=1024)
    on_bound(listener.sockets[0].getsockname()[1])
    async with listener:
        await listener.serve_forever()


class FakeOpenAIServer:
    """Start the fake server (in a child process by default) and control it.

    ``in_process=True`` runs it on a thread of this process instead: no start-up cost, but it shares the GIL.
    ``track=False`` keeps no per-prompt arrival records (for benchmarks of millions of requests).
    """

    def __init__(self, *, latency: float = 0.0, embedding_dim: int = 32, in_process: bool = False,
                 track: bool = True) -> None:
        self.latency = latency
        self.embedding_dim = embedding_dim
        self.in_process = in_process
        self.track = track
        self.port = 0
        self._process: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> Self:
        if self.in_process:
            return self._start_thread()
        command = [sys.executable, "-m", self.module, "--port", "0", "--latency", str(self.latency),
                   "--embedding-dim", str(self.embedding_dim)]
        self._process = subprocess.Popen(command + ([] if self.track else ["--no-track"]), stdout=subprocess.PIPE,
                                         text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line.startswith("listening on "):
            self.stop()
            raise RuntimeError(f"fake OpenAI server did not start: {line!r}")
        self.port = int(line.split()[-1])
        return self

    def _start_thread(self) -> Self:
        ready = threading.Event()
        self._loop = loop = asyncio.new_event_loop()
        server = self._make_server()

        def bound(port: int) -> None:
            self.port = port
            ready.set()

        def run() -> None:
            self._task = loop.create_task(_serve(server, 0, bound))
            try:
                loop.run_until_complete(self._task)
            except asyncio.CancelledError:
                pass
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, daemon=True, name="fake-openai")
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake OpenAI server thread did not start")
        return self

    module = "ai_assets.testing"
    """The module whose ``main`` runs this server in a child process (a vendor's fake names its own)."""

    def _make_server(self) -> _Server:
        """The server run on a thread of this process (``in_process=True``)."""
        return _Server(App(self.latency, self.embedding_dim, track=self.track))

    def stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None
        if self._loop is not None and self._task is not None:
            self._loop.call_soon_threadsafe(self._task.cancel)
            if self._thread is not None:
                self._thread.join(10)
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

    def set_prefix_cache(self, blocks: int, write: Write = "completion") -> None:
        """Keep the last ``blocks`` prompt-prefix blocks (0: report no cached tokens), written when a request has
        run (``"completion"``, as real servers do) or, only for comparison, when it arrives; see ``prefix_cache``."""
        self._admin("config", {"prefix_cache": blocks, "prefix_cache_write": write})

    def set_rate_limit(self, *, rpm: float | None = None, tpm: float | None = None, window_s: float | None = 60.0,
                       tolerance_s: float = 0.0, headers: HeaderStyle | None = None) -> None:
        """Answer 429 (with ``retry-after-ms``) above ``rpm`` / ``tpm``: a strict sliding window of ``window_s``
        seconds (the limits scaled to it), as provider accounts count; ``window_s=None`` runs a GCRA instead,
        allowing ``tolerance_s`` of early arrival. No rates removes the limit. ``headers``: report the limit in
        every answer (429s included) as ``"openai"`` (``x-ratelimit-*``) or ``"anthropic"``
        (``anthropic-ratelimit-*``) does (sliding window only; see ``rate_headers``); the client is told nothing
        else of it."""
        self._admin("rate_limit", {"rpm": rpm, "tpm": tpm, "window_s": window_s, "tolerance_s": tolerance_s,
                                   "headers": headers})

    def set_noise(self, *noise: Noise) -> None:
        """Make a model answer wrong on some prompts, seeded, with a confidence that says how likely (see
        ``ai_assets.testing.noise``); no rules: every model answers the truth again."""
        self._admin("noise", {"noise": [asdict(n) for n in noise]})

    def set_batches(self, behaviour: BatchBehaviour) -> None:
        """How the Batch API behaves from now on (completion delay, expiry, validation failure)."""
        self._admin("batches", asdict(behaviour))

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
    parser.add_argument("--no-track", action="store_true", help="keep no per-prompt arrival records")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    server = _Server(App(args.latency, args.embedding_dim, track=not args.no_track))
    asyncio.run(_serve(server, args.port, lambda port: print(f"listening on {port}", flush=True)))


if __name__ == "__main__":
    main()
