"""A real Anthropic Messages API server on 127.0.0.1 with the fake OpenAI server's fault knobs, for tests and
benchmarks: ``POST /v1/messages`` only.

What it models, and from where (docs.anthropic.com):

* Messages API: ``x-api-key`` and ``anthropic-version`` headers required (401 / 400 without), ``max_tokens``
  required (400), system at the top level, ``image`` blocks of JPEG, PNG, GIF or WebP and ``document`` blocks of
  PDF (base64) or plain text (400 for another type, or a block type it does not know: audio); a forced tool
  (``tool_choice: {"type": "tool"}``) answers with one ``tool_use`` block whose ``input`` validates against the
  tool's ``input_schema``.
* "Prompt caching": see ``anthropic_cache`` (breakpoints, minimum length, written when a request completes,
  usage fields); more than 4 breakpoints is a 400.
* "Errors": ``{"type": "error", "error": {"type", "message"}}`` with a ``request-id`` header; ``Fault("529")``
  answers ``overloaded_error``.
* "Message Batches": see ``anthropic_batches`` (create, retrieve, list, cancel, results; ``set_message_batches``).
* "Rate limits": with ``set_rate_limit`` (a strict window, as the fake OpenAI server runs it) every answer carries
  ``anthropic-ratelimit-requests-{limit,remaining,reset}`` and ``-tokens-`` (reset as RFC 3339), and a 429 a
  ``retry-after`` in whole seconds.

    with FakeAnthropicServer(in_process=True) as server:
        provider = AnthropicProvider("claude-sonnet-4-5", base_url=server.base_url, api_key="test")
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import time
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from ai_assets.testing.anthropic_batches import MessageBatchBehaviour, MessageBatches
from ai_assets.testing.anthropic_cache import MAX_BREAKPOINTS, AnthropicCache, count_breakpoints
from ai_assets.testing.faults import Fault
from ai_assets.testing.handlers import App, Reply, WindowLimit
from ai_assets.testing.schema_instance import instance_for, seed_of
from ai_assets.testing.server import FakeOpenAIServer, _serve, _Server

IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
BLOCK_TYPES = ("text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking")
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 529: "overloaded_error"}


def error(status: int, message: str, headers: dict[str, str] | None = None) -> Reply:
    kind = ERROR_TYPES.get(status, "api_error")
    return Reply(status, {"type": "error", "error": {"type": kind, "message": message}}, headers or {})


class AnthropicApp(App):
    def __init__(self, latency: float, *, track: bool = True) -> None:
        super().__init__(latency, 8, track=track)
        self.cache = AnthropicCache()

    async def messages(self, data: dict[str, Any], headers: dict[str, str]) -> Reply | object:
        if not headers.get("x-api-key"):
            return error(401, "x-api-key header is required")
        if not headers.get("anthropic-version"):
            return error(400, "anthropic-version: header is required")
        problem = _invalid(data)
        if problem:
            return error(400, problem)
        model = str(data["model"])
        key = _prompt_key(data["messages"])
        self.stats.chat_requests += 1
        fault = self.fault_for(key, self.count(key), model)
        if fault is not None and fault.kind not in ("invalid_json", "schema_violation"):
            return await self._fail(fault)
        refused = self._refuse_media(data["messages"])
        if refused:
            return error(400, refused)
        billing = self.cache.arrive(model, data)
        total = billing.input_tokens + billing.cache_read + billing.cache_write
        limited = self._limited(total, data)
        if limited is not None:
            wait = int(limited.headers.get("retry-after-ms", "1000")) / 1000
            return error(429, "Number of request tokens has exceeded your per-minute rate limit",
                         {"retry-after": str(max(1, math.ceil(wait))), **self._rate_headers()})
        if self.latency:
            await asyncio.sleep(self.latency)
        content, stop = self._answer(key, data, fault)
        output_tokens = 1 + len(json.dumps(content)) // 4
        self.cache.complete(billing)  # in the cache once the answer has begun (see anthropic_cache)
        stats = self.stats
        stats.prompt_tokens += total
        stats.completion_tokens += output_tokens
        stats.cached_tokens += billing.cache_read
        stats.cache_write_tokens += billing.cache_write
        self._charge_answer(data, output_tokens)
        return Reply(200, {
            "id": self.next_id("msg"), "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": stop, "stop_sequence": None,
            "usage": {"input_tokens": billing.input_tokens, "output_tokens": output_tokens,
                      "cache_creation_input_tokens": billing.cache_write,
                      "cache_read_input_tokens": billing.cache_read}},
            {"request-id": self.next_id("req"), **self._rate_headers()})

    def _answer(self, key: str, data: dict[str, Any], fault: Fault | None) -> tuple[list[dict[str, Any]], str]:
        tools = [t for t in data.get("tools") or [] if isinstance(t, dict) and "input_schema" in t]
        choice = data.get("tool_choice") or {}
        tool = next((t for t in tools if t.get("name") == choice.get("name")), tools[0] if tools else None)
        if tool is None or choice.get("type") == "none":
            return [{"type": "text", "text": f"Answer to: {key[:200]}"}], "end_turn"
        seed = seed_of(key)
        if fault is not None and fault.kind == "invalid_json":  # a tool's input is always an object: text instead
            return [{"type": "text", "text": '{"truncated": '}], "end_turn"
        value = {"unexpected_field": seed % 100} if fault is not None and fault.kind == "schema_violation" \
            else instance_for(tool["input_schema"], seed)
        return [{"type": "tool_use", "id": f"toolu_{seed % 10**12}", "name": tool["name"], "input": value}], \
            "tool_use"

    async def _fail(self, fault: Fault) -> Reply | object:
        if fault.kind in ("reset", "timeout"):
            return await self.fail(fault)
        headers = {"retry-after": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
        status = int(fault.kind)
        return error(status, "Overloaded" if status == 529 else f"injected {status}", headers)

    def _refuse_media(self, turns: list[dict[str, Any]]) -> str | None:
        """Record each document; the message naming an image or document type Anthropic does not read."""
        for turn in turns:
            content = turn.get("content")
            for block in content if isinstance(content, list) else []:
                source = block.get("source") or {} if isinstance(block, dict) else {}
                kind, media = block.get("type"), source.get("media_type")
                if kind not in BLOCK_TYPES:
                    return f"content.type: Input tag {kind!r} does not match any of the expected tags"
                if kind == "image" and source.get("type") == "base64" and media not in IMAGE_TYPES:
                    return f"image.source.media_type: Input should be one of {', '.join(IMAGE_TYPES)}"
                if kind == "document":
                    self.stats.file_parts.append({"type": "document", "filename": str(block.get("title")),
                                                  "mime": str(media)})
                    if (source.get("type"), media) not in (("base64", "application/pdf"), ("text", "text/plain")):
                        return f"document.source: unsupported media_type {media!r} for source {source.get('type')!r}"
        return None

    def _rate_headers(self) -> dict[str, str]:
        """``anthropic-ratelimit-*`` of the account's window (none when no limit is set)."""
        limit = self.limit
        if not isinstance(limit, WindowLimit):
            return {}
        now = time.monotonic()
        arrivals = [a for a in limit._arrivals if a[0] > now - limit.window_s]  # the fake's own
        oldest = arrivals[0][0] if arrivals else now
        reset = datetime.fromtimestamp(time.time() + oldest + limit.window_s - now, UTC)
        out: dict[str, str] = {}
        for name, per_minute, used in (("requests", limit.rpm, len(arrivals)),
                                       ("tokens", limit.tpm, sum(a[1] for a in arrivals))):
            if per_minute:
                cap = per_minute * limit.window_s / 60.0
                out.update({f"anthropic-ratelimit-{name}-limit": str(int(per_minute)),
                            f"anthropic-ratelimit-{name}-remaining": str(max(0, int(cap - used))),
                            f"anthropic-ratelimit-{name}-reset": reset.strftime("%Y-%m-%dT%H:%M:%SZ")})
        return out


def _invalid(data: Any) -> str | None:
    """Why a Messages request body is refused (400), or None."""
    if not isinstance(data, dict):
        return "body: Input should be an object"
    if not isinstance(data.get("model"), str):
        return "model: Field required"
    max_tokens = data.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        return "max_tokens: Field required (a positive integer)"
    turns = data.get("messages")
    if not isinstance(turns, list) or not turns or not all(isinstance(t, dict) for t in turns):
        return "messages: at least one message is required"
    if any(t.get("role") == "system" for t in turns):
        return "messages: Unexpected role \"system\". Use the top-level system parameter"
    if count_breakpoints(data) > MAX_BREAKPOINTS:
        return f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided"
    return None


def _prompt_key(turns: list[dict[str, Any]]) -> str:
    """The text of the first user turn (images and documents by a short digest): what a test counts."""
    turn = next((t for t in turns if t.get("role") == "user"), turns[0])
    content = turn.get("content")
    if isinstance(content, str):
        return content
    parts = []
    for block in content or []:
        if block.get("type") == "text":
            parts.append(str(block.get("text", "")))
        elif block.get("type") in ("image", "document"):
            parts.append(f"<{block['type']} {seed_of(json.dumps(block.get('source'), sort_keys=True)) % 10**8}>")
    return " ".join(parts)


class _AnthropicServer(_Server):
    app: AnthropicApp

    def __init__(self, app: AnthropicApp) -> None:
        super().__init__(app)
        self.message_batches = MessageBatches(app, _prompt_key)

    async def route(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> Reply | object:
        if path.startswith("/_admin/"):
            data = json.loads(body) if body else {}
            if path == "/_admin/anthropic_cache":
                cache = self.app.cache
                cache.min_tokens = int(data.get("min_tokens", cache.min_tokens))
                cache.ttl_s = float(data.get("ttl_s", cache.ttl_s))
                return Reply(200, {"min_tokens": cache.min_tokens, "ttl_s": cache.ttl_s})
            if path == "/_admin/message_batches":
                return self.message_batches.configure(data)
            if path == "/_admin/reset":
                self.app.cache = AnthropicCache(self.app.cache.min_tokens, self.app.cache.ttl_s)
            return self.admin(path.removeprefix("/_admin/"), data)
        stats = self.app.stats
        stats.paths[path] = stats.paths.get(path, 0) + 1
        stats.headers.update({k: v for k, v in headers.items() if k in ("x-api-key", "anthropic-version")})
        if path.startswith("/v1/messages/batches"):
            if not headers.get("x-api-key"):
                return error(401, "x-api-key header is required")
            return await self.message_batches.route(method, path, body, headers)
        if method != "POST" or path != "/v1/messages":
            return error(404, f"no route {method} {path}")
        try:
            data = json.loads(body)
        except ValueError:
            return error(400, "body: invalid JSON")
        if isinstance(data, dict) and isinstance(data.get("model"), str):
            stats.models[data["model"]] = stats.models.get(data["model"], 0) + 1
        return await self.app.messages(data, headers)


class FakeAnthropicServer(FakeOpenAIServer):
    """Start the fake Anthropic server (a child process by default, ``in_process=True`` for a thread) and control
    it with the fake OpenAI server's knobs (faults, latency, rate limit, stats, reset)."""

    module = "ai_assets.testing.anthropic_server"

    @property
    def base_url(self) -> str:
        """The API's root, as Anthropic's SDK takes it (requests go to ``{base_url}/v1/messages``)."""
        return f"http://127.0.0.1:{self.port}"

    def _make_server(self) -> _Server:
        return _AnthropicServer(AnthropicApp(self.latency, track=self.track))

    def set_cache(self, *, min_tokens: int | None = None, ttl_s: float | None = None) -> None:
        """The prompt cache's minimum cacheable prefix (default 1,024 tokens) and entry lifetime (300 s)."""
        given = {"min_tokens": min_tokens, "ttl_s": ttl_s}
        self._admin("anthropic_cache", {k: v for k, v in given.items() if v is not None})

    def set_message_batches(self, behaviour: MessageBatchBehaviour) -> None:
        """How Message Batches behave from now on (see ``anthropic_batches``)."""
        self._admin("message_batches", asdict(behaviour))


def main() -> None:
    parser = argparse.ArgumentParser(description="Fake Anthropic Messages API server with fault injection")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--embedding-dim", type=int, default=8)  # accepted for FakeOpenAIServer.start's command
    parser.add_argument("--no-track", action="store_true", help="keep no per-prompt arrival records")
    args = parser.parse_args()
    server = _AnthropicServer(AnthropicApp(args.latency, track=not args.no_track))
    asyncio.run(_serve(server, args.port, lambda port: print(f"listening on {port}", flush=True)))


if __name__ == "__main__":
    main()
