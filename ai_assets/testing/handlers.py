"""What the fake server answers: chat completions, responses and embeddings, deterministic from the request.

The same answering code serves live requests and Batch API lines; only live requests pay the latency and meet the
rate limit (a GCRA per minute limit on requests and tokens, like a provider account: tokens are charged at arrival
for the prompt plus ``max_tokens`` when given, else for the prompt and then the answer).
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ai_assets.testing.faults import Fault, Rule, ServerStats
from ai_assets.testing.noise import Noise, noisy
from ai_assets.testing.prefix_cache import PrefixCache
from ai_assets.testing.schema_instance import instance_for, seed_of

ACCEPTED_FILES = ("application/pdf", "text/plain")


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None
    """A body sent as is (file content) instead of JSON."""


RESET = object()


class ServerLimit:
    """Requests and tokens a minute, with ``tolerance_s`` of early arrival allowed (a GCRA, as some providers use)."""

    def __init__(self, rpm: float | None, tpm: float | None, tolerance_s: float) -> None:
        self.rpm, self.tpm, self.tolerance_s = rpm, tpm, tolerance_s
        self._tat = {"requests": 0.0, "tokens": 0.0}

    def admit(self, tokens: int, now: float) -> float | None:
        """None if the request may go (and is charged), else the seconds to wait."""
        costs = {"requests": (1, self.rpm), "tokens": (tokens, self.tpm)}
        waits = [self._tat[name] - self.tolerance_s - now for name, (_, rate) in costs.items() if rate]
        if waits and max(waits) > 0:
            return max(waits)
        for name, (amount, rate) in costs.items():
            if rate:
                self._tat[name] = max(self._tat[name], now) + amount * 60.0 / rate
        return None

    def charge(self, tokens: int) -> None:
        if self.tpm and tokens:
            self._tat["tokens"] += tokens * 60.0 / self.tpm


class WindowLimit:
    """A strict sliding-window limiter, as real provider accounts run: a request is refused when the requests (or
    tokens) that arrived in the last ``window_s`` seconds, itself included, would pass ``rpm`` (``tpm``) scaled to
    the window. No tolerance: one request a few milliseconds inside the window is refused."""

    def __init__(self, rpm: float | None, tpm: float | None, window_s: float) -> None:
        self.rpm, self.tpm, self.window_s = rpm, tpm, window_s
        self._arrivals: deque[list[float]] = deque()  # [arrival time, tokens]
        self._tokens = 0.0

    def admit(self, tokens: int, now: float) -> float | None:
        while self._arrivals and self._arrivals[0][0] <= now - self.window_s:
            self._tokens -= self._arrivals.popleft()[1]
        over_requests = self.rpm is not None and len(self._arrivals) + 1 > self.rpm * self.window_s / 60.0
        over_tokens = self.tpm is not None and self._tokens + tokens > self.tpm * self.window_s / 60.0
        if over_requests or over_tokens:
            oldest = self._arrivals[0][0] if self._arrivals else now
            return max(oldest + self.window_s - now, 0.001)
        self._arrivals.append([now, float(tokens)])
        self._tokens += tokens
        return None

    def charge(self, tokens: int) -> None:
        if self._arrivals and tokens:
            self._arrivals[-1][1] += tokens
            self._tokens += tokens


class App:
    def __init__(self, latency: float, embedding_dim: int, *, track: bool = True) -> None:
        self.latency = latency
        self.embedding_dim = embedding_dim
        self.track = track
        self.rules: list[Rule] = []
        self.stats = ServerStats()
        self.limit: ServerLimit | WindowLimit | None = None
        self.prefix_cache = PrefixCache()
        self._ids = 0
        self.noise: list[Noise] = []  # a cheap model's seeded mistakes (see noise)

    # -- bookkeeping ----------------------------------------------------------------------------------------
    def count(self, key: str) -> int:
        stats = self.stats
        stats.requests += 1
        attempt = stats.by_key.get(key, 0) + 1
        if self.track:
            stats.by_key[key] = attempt
            stats.arrivals.setdefault(key, []).append(time.monotonic())
        return attempt

    def fault_for(self, key: str, attempt: int, model: object = None) -> Fault | None:
        name = model if isinstance(model, str) else None
        rule = next((r for r in self.rules if r.applies(key, attempt, name)), None)
        if rule is None:
            return None
        self.stats.faults_injected += 1
        return rule.fault

    def next_id(self, prefix: str) -> str:
        self._ids += 1
        return f"{prefix}-{self._ids}"

    def _limited(self, prompt_tokens: int, data: dict[str, Any]) -> Reply | None:
        cap = data.get("max_tokens") or data.get("max_completion_tokens") or data.get("max_output_tokens")
        charged = prompt_tokens + (int(cap) if cap else 0)
        now = time.monotonic()
        if self.limit is not None:
            wait = self.limit.admit(charged, now)
            if wait is not None:
                self.stats.rate_limited += 1
                return Reply(429, {"error": {"message": "Rate limit reached", "type": "requests",
                                             "code": "rate_limit_exceeded"}},
                             {"retry-after-ms": str(max(1, int(wait * 1000)))})
        if self.track:
            self.stats.timeline.append((now, charged))
        return None

    def _charge_answer(self, data: dict[str, Any], completion_tokens: int) -> None:
        capped = data.get("max_tokens") or data.get("max_completion_tokens") or data.get("max_output_tokens")
        if self.limit is not None and not capped:
            self.limit.charge(completion_tokens)
        if self.track and not capped and self.stats.timeline:
            at, charged = self.stats.timeline[-1]
            self.stats.timeline[-1] = (at, charged + completion_tokens)

    async def fail(self, fault: Fault) -> Reply | object:
        if fault.kind == "reset":
            return RESET
        if fault.kind == "timeout":
            await asyncio.sleep(fault.delay)
            return Reply(200, {"error": {"message": "late answer", "type": "timeout"}})
        headers: dict[str, str] = {}
        if fault.retry_after is not None:
            headers["retry-after"] = f"{fault.retry_after:g}"
        if fault.retry_after_ms is not None:
            headers["retry-after-ms"] = str(fault.retry_after_ms)
        status = int(fault.kind)
        return Reply(status, {"error": {"message": f"injected {status}", "type": "injected", "code": status}},
                     headers)

    # -- chat completions -----------------------------------------------------------------------------------
    async def chat(self, data: dict[str, Any], *, live: bool = True) -> Reply | object:
        messages = data.get("messages", [])
        key = prompt_key(messages)
        self.stats.chat_requests += 1
        fault = self.fault_for(key, self.count(key), data.get("model"))
        if fault is not None and fault.kind not in ("invalid_json", "schema_violation"):
            return await self.fail(fault)
        refused = self._refuse_files(messages)
        if refused is not None:
            return refused
        text = "".join(json.dumps(m.get("content", "")) for m in messages)
        prompt_tokens = 1 + len(text) // 4
        cache = self.prefix_cache
        if live:
            limited = self._limited(prompt_tokens, data)
            if limited is not None:
                return limited
        cached = min(prompt_tokens, cache.arrive(text))
        if live and self.latency:
            await asyncio.sleep(self.latency)
        cache.complete(text)  # in the cache once the request has run (see prefix_cache)
        schema, tool_name = requested_schema(data)
        content: str | None = self._content(key, schema, fault, data.get("model"))
        tool_calls = None
        if tool_name is not None:
            tool_calls = [{"id": f"call_{seed_of(key) % 10**8}", "type": "function",
                           "function": {"name": tool_name, "arguments": content}}]
            content = None
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if tool_calls:
            message["tool_calls"] = tool_calls
        completion_tokens = 1 + len(content or json.dumps(tool_calls)) // 4
        self.stats.prompt_tokens += prompt_tokens
        self.stats.completion_tokens += completion_tokens
        self.stats.cached_tokens += cached
        if isinstance(data.get("prompt_cache_key"), str):
            keys = self.stats.prompt_cache_keys
            keys[data["prompt_cache_key"]] = keys.get(data["prompt_cache_key"], 0) + 1
        if live:
            self._charge_answer(data, completion_tokens)
        return Reply(200, {
            "id": self.next_id("chatcmpl"), "object": "chat.completion", "created": int(time.time()),
            "model": data.get("model", "fake-model"),
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": "tool_calls" if tool_calls else "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens,
                      "prompt_tokens_details": {"cached_tokens": cached}},
        })

    def _content(self, key: str, schema: dict[str, Any] | None, fault: Fault | None, model: object = None) -> str:
        seed = seed_of(key)
        if fault is not None and fault.kind == "invalid_json":
            return '{"truncated": '
        if fault is not None and fault.kind == "schema_violation":
            return json.dumps({"unexpected_field": seed % 100})
        if schema is not None:
            return json.dumps(noisy(self.noise, model, instance_for(schema, seed), key, schema))
        return f"Answer to: {key[:200]}"

    def _refuse_files(self, messages: list[dict[str, Any]]) -> Reply | None:
        """Record every file part; refuse a type the endpoint does not take, as OpenAI does (400)."""
        for message in messages:
            content = message.get("content")
            for part in content if isinstance(content, list) else []:
                if part.get("type") == "input_audio":
                    audio = part.get("input_audio") or {}
                    self.stats.audio_parts.append({"format": str(audio.get("format")),
                                                   "bytes": str(len(str(audio.get("data", ""))) * 3 // 4)})
                    continue
                file = part.get("file") if part.get("type") == "file" else part if part.get("type") == "input_file" \
                    else None
                if file is None:
                    continue
                data = str(file.get("file_data", ""))
                mime = data[5:].split(";", 1)[0] if data.startswith("data:") else "application/octet-stream"
                self.stats.file_parts.append({"type": str(part.get("type")), "filename": str(file.get("filename")),
                                              "mime": mime})
                if mime not in ACCEPTED_FILES:
                    return Reply(400, {"error": {"message": f"Invalid file type {mime}: expected one of "
                                                            f"{', '.join(ACCEPTED_FILES)}",
                                                 "type": "invalid_request_error", "param": "file"}})
        return None

    # -- responses ------------------------------------------------------------------------------------------
    async def responses(self, data: dict[str, Any], *, live: bool = True) -> Reply | object:
        messages = responses_messages(data)
        key = prompt_key(messages)
        self.stats.responses_requests += 1
        fault = self.fault_for(key, self.count(key), data.get("model"))
        if fault is not None and fault.kind not in ("invalid_json", "schema_violation"):
            return await self.fail(fault)
        refused = self._refuse_files(messages)
        if refused is not None:
            return refused
        input_tokens = 1 + sum(len(json.dumps(m.get("content", ""))) for m in messages) // 4
        if live:
            limited = self._limited(input_tokens, data)
            if limited is not None:
                return limited
            if self.latency:
                await asyncio.sleep(self.latency)
        fmt = (data.get("text") or {}).get("format") or {}
        schema = fmt.get("schema") if fmt.get("type") == "json_schema" else None
        text = self._content(key, schema, fault, data.get("model"))
        output_tokens = 1 + len(text) // 4
        reasoning = 8 if data.get("reasoning") else 0
        self.stats.prompt_tokens += input_tokens
        self.stats.completion_tokens += output_tokens + reasoning
        if live:
            self._charge_answer(data, output_tokens + reasoning)
        return Reply(200, {
            "id": self.next_id("resp"), "object": "response", "created_at": int(time.time()), "status": "completed",
            "model": data.get("model", "fake-model"), "error": None, "incomplete_details": None,
            "output": [{"type": "message", "id": self.next_id("msg"), "status": "completed", "role": "assistant",
                        "content": [{"type": "output_text", "text": text, "annotations": []}]}],
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens + reasoning,
                      "total_tokens": input_tokens + output_tokens + reasoning,
                      "output_tokens_details": {"reasoning_tokens": reasoning}},
        })

    # -- embeddings -----------------------------------------------------------------------------------------
    async def embeddings(self, data: dict[str, Any], *, live: bool = True) -> Reply | object:
        inputs = data.get("input", [])
        inputs = [inputs] if isinstance(inputs, str) else list(inputs)
        key = "\n".join(map(str, inputs))
        self.stats.embedding_requests += 1
        self.stats.embedding_inputs += len(inputs)
        self.stats.embedding_batches.append(len(inputs))
        fault = self.fault_for(key, self.count(key), data.get("model"))
        if fault is not None:
            return await self.fail(fault)
        tokens = sum(1 + len(str(t)) // 4 for t in inputs)
        if live:
            limited = self._limited(tokens, data)
            if limited is not None:
                return limited
            if self.latency:
                await asyncio.sleep(self.latency)
        dim = int(data.get("dimensions") or self.embedding_dim)
        vectors = [embedding_for(str(text), dim) for text in inputs]
        encode = data.get("encoding_format") == "base64"
        self.stats.prompt_tokens += tokens
        return Reply(200, {
            "object": "list", "model": data.get("model", "fake-embedding"),
            "data": [{"object": "embedding", "index": i,
                      "embedding": base64.b64encode(struct.pack(f"<{dim}f", *v)).decode() if encode else v}
                     for i, v in enumerate(vectors)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        })

    async def transcribe(self, fields: dict[str, tuple[str | None, bytes]]) -> Reply | object:
        """``/audio/transcriptions``: a deterministic transcript of the file; faults match ``audio <filename>``."""
        if "file" not in fields or "model" not in fields:
            return Reply(400, {"error": {"message": "file and model are required", "type": "invalid_request_error"}})
        filename, audio = fields["file"]
        key = f"audio {filename} {seed_of(audio.hex()) % 10**8}"
        self.stats.transcriptions += 1
        model = fields["model"][1].decode()
        self.stats.models[model] = self.stats.models.get(model, 0) + 1
        fault = self.fault_for(key, self.count(key), model)
        if fault is not None:
            return await self.fail(fault)
        if self.latency:
            await asyncio.sleep(self.latency)
        language = fields.get("language", (None, b""))[1].decode() or "en"
        seconds = max(1, len(audio) // 16_000)
        return Reply(200, {"text": f"Transcript ({language}) of {filename}: {seed_of(audio.hex()) % 10**6}",
                           "usage": {"type": "duration", "seconds": seconds}})


def prompt_key(messages: list[dict[str, Any]]) -> str:
    """The text of the first user message (text parts joined; images and files by a short digest): what a test
    counts. The first, not the last: a re-ask appends its correction as a later user message."""
    for message in messages:
        if message.get("role") == "user":
            return _content_text(message.get("content"))
    return _content_text(messages[-1].get("content")) if messages else ""


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for part in content or []:
        kind = part.get("type")
        if kind in ("text", "input_text"):
            parts.append(part.get("text", ""))
        elif kind in ("image_url", "input_image"):
            url = part.get("image_url", {}).get("url", "") if kind == "image_url" else part.get("image_url", "")
            parts.append(f"<image {seed_of(str(url)) % 10**8}>")
        elif kind == "input_audio":
            parts.append(f"<audio {seed_of(str(part.get('input_audio', {}).get('data', ''))) % 10**8}>")
        elif kind in ("file", "input_file"):
            file = part.get("file", {}) if kind == "file" else part
            parts.append(f"<file {file.get('filename')} {seed_of(str(file.get('file_data', ''))) % 10**8}>")
    return " ".join(parts)


def responses_messages(data: dict[str, Any]) -> list[dict[str, Any]]:
    """A Responses ``input`` (a string or a list of messages) and ``instructions`` as chat-like messages."""
    raw = data.get("input", "")
    messages = [{"role": "user", "content": raw}] if isinstance(raw, str) else [dict(m) for m in raw]
    if data.get("instructions"):
        messages.insert(0, {"role": "system", "content": data["instructions"]})
    return messages


def embedding_for(text: str, dim: int) -> list[float]:
    """A deterministic unit vector for ``text``."""
    raw = [((seed_of(f"{text}:{i}") % 2001) - 1000) / 1000 for i in range(dim)]
    norm = sum(v * v for v in raw) ** 0.5 or 1.0
    return [v / norm for v in raw]


def requested_schema(data: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    tools = [t for t in data.get("tools") or [] if t.get("type", "function") == "function"]
    choice = data.get("tool_choice")
    if tools and (choice is None or isinstance(choice, dict)):
        function = tools[0]["function"]
        if isinstance(choice, dict):
            named = choice.get("function", {}).get("name")
            function = next((t["function"] for t in tools if t["function"]["name"] == named), function)
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
