"""The fake OpenAI-compatible server dressed as Gemini's OpenAI compatibility layer, for tests of its quirks.

What it models, and from where (ai.google.dev "OpenAI compatibility", and Google's "Gemini Batch API now supports
Embeddings and OpenAI Compatibility", September 2025):

* Everything lives under ``/v1beta/openai/`` (the base URL the docs give,
  ``https://generativelanguage.googleapis.com/v1beta/openai/``): chat completions, embeddings, and the Batch API
  (``files`` with ``purpose="batch"``, ``batches`` with ``endpoint="/v1/chat/completions"``); any other path is a
  404.
* The key goes in ``Authorization: Bearer`` (401 without); models are named ``gemini-...`` (or
  ``models/gemini-...``; ``gemini-embedding-001`` or ``text-embedding-004`` for embeddings), another name is a
  404.
* ``reasoning_effort`` takes ``none``, ``minimal``, ``low``, ``medium`` or ``high`` (a 400 otherwise).
* Errors come as Google's JSON *list*: ``[{"error": {"code", "message", "status"}}]``, not OpenAI's object.

The answering code, fault knobs and Batch API are the fake OpenAI server's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from ai_assets.testing.handlers import App, Reply
from ai_assets.testing.server import FakeOpenAIServer, _serve, _Server

PREFIX = "/v1beta/openai"
EFFORTS = ("none", "minimal", "low", "medium", "high")
STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
          429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}


def google_error(status: int, message: str) -> Reply:
    return Reply(status, [{"error": {"code": status, "message": message, "status": STATUS.get(status, "UNKNOWN")}}])


class _GeminiServer(_Server):
    async def route(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> Reply | object:
        if path.startswith("/_admin/"):
            return await super().route(method, path, body, headers)
        if not path.startswith(PREFIX + "/"):
            return google_error(404, f"The requested URL {path} was not found on this server.")
        token = headers.get("authorization", "")
        if not token.startswith("Bearer ") or not token[7:].strip():
            return google_error(401, "Method doesn't allow unregistered callers. Please use API Key.")
        problem = _refused(body, headers)
        if problem is not None:
            return problem
        reply = await super().route(method, "/v1" + path[len(PREFIX):], body, headers)
        if isinstance(reply, Reply) and reply.status >= 400 and reply.raw is None:
            error = reply.body.get("error") if isinstance(reply.body, dict) else None
            message = error.get("message") if isinstance(error, dict) else json.dumps(reply.body)[:200]
            return Reply(reply.status, google_error(reply.status, str(message)).body, reply.headers)
        return reply


def _refused(body: bytes, headers: dict[str, str]) -> Reply | None:
    if headers.get("content-type", "").startswith("multipart/") or not body:
        return None
    try:
        data: Any = json.loads(body)
    except ValueError:
        return google_error(400, "Invalid JSON payload received.")
    if not isinstance(data, dict):
        return None
    model = data.get("model")
    if isinstance(model, str) and not model.removeprefix("models/").startswith(
            ("gemini-", "text-embedding-004")):
        return google_error(404, f"models/{model} is not found for API version v1main, or is not supported")
    effort = data.get("reasoning_effort")
    if effort is not None and effort not in EFFORTS:
        return google_error(400, f"Invalid reasoning_effort {effort!r}: use one of {', '.join(EFFORTS)}")
    return None


class FakeGeminiServer(FakeOpenAIServer):
    """The fake server as Gemini's OpenAI compatibility layer (a child process by default, ``in_process=True``
    for a thread); the fake OpenAI server's knobs (faults, batches, stats) work as they do there."""

    module = "ai_assets.testing.gemini_server"

    @property
    def base_url(self) -> str:
        """As Google's docs give it: ``.../v1beta/openai/`` (with the trailing slash)."""
        return f"http://127.0.0.1:{self.port}{PREFIX}/"

    def _make_server(self) -> _Server:
        return _GeminiServer(App(self.latency, self.embedding_dim, track=self.track))


def main() -> None:
    parser = argparse.ArgumentParser(description="Fake Gemini OpenAI-compatible server with fault injection")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--embedding-dim", type=int, default=32)
    parser.add_argument("--no-track", action="store_true", help="keep no per-prompt arrival records")
    args = parser.parse_args()
    server = _GeminiServer(App(args.latency, args.embedding_dim, track=not args.no_track))
    asyncio.run(_serve(server, args.port, lambda port: print(f"listening on {port}", flush=True)))


if __name__ == "__main__":
    main()
