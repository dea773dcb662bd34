"""A hostile OpenAI-compatible server for tests: answers each request with whatever bytes a test scripts for it
(malformed and empty bodies, bodies that never end, any status and headers), else a valid answer.

It runs in a thread of the test process on 127.0.0.1, so a hypothesis test can change the script between examples
without an admin round trip. A request's text is its last message's content (chat), its input (Responses) or its
inputs joined (embeddings); the first scripted substring found in it picks the answer.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Answer:
    body: bytes = b""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    endless: bool = False
    """Stream ``body`` over and over and never end (chunked transfer encoding)."""


def chat_body(content: Any, **choice: Any) -> bytes:
    return json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                       "choices": [{"index": 0, "finish_reason": "stop",
                                    "message": {"role": "assistant", "content": content}, **choice}],
                       "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}).encode()


class HostileServer:
    def __init__(self) -> None:
        self.script: dict[str, Answer] = {}
        self.seen: Counter[str] = Counter()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> HostileServer:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(asyncio.start_server(self._handle, "127.0.0.1", 0),
                                                        self._loop).result()
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        """Close the listener and every open connection on the server's own loop, then end the loop."""

        async def shutdown() -> None:
            self._server.close()
            handlers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in handlers:
                task.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def reset(self, **script: Answer) -> None:
        self.script = dict(script)
        self.seen = Counter()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
                request = json.loads(await reader.readexactly(int(headers.get("content-length", "0"))) or b"{}")
                text = request_text(request)
                self.seen[text] += 1
                answer = next((a for key, a in self.script.items() if key in text), None) or valid(path, request)
                if answer.endless:
                    await self._endless(writer, answer)
                    return
                headers = {"content-type": "application/json", **answer.headers}  # a scripted type replaces it
                extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
                writer.write(f"HTTP/1.1 {answer.status} X\r\n"
                             f"content-length: {len(answer.body)}\r\n{extra}\r\n".encode() + answer.body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    @staticmethod
    async def _endless(writer: asyncio.StreamWriter, answer: Answer) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n")
        chunk = answer.body or b" " * 65536
        framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
        try:
            for _ in range(1_000_000):  # bounded: ~64 GB at most, the client gives up long before
                writer.write(framed)
                await writer.drain()
        except ConnectionError:
            pass


def request_text(request: dict[str, Any]) -> str:
    if "messages" in request:
        content = request["messages"][-1].get("content")
        return content if isinstance(content, str) else json.dumps(content)
    value = request.get("input")
    if isinstance(value, list):
        return "\n".join(v if isinstance(v, str) else json.dumps(v) for v in value)
    return str(value)


def valid(path: str, request: dict[str, Any]) -> Answer:
    """A correct answer: the request's text back (chat, Responses) or a 4-d vector per input (embeddings)."""
    if path.endswith("/embeddings"):
        data = [{"object": "embedding", "index": i,
                 "embedding": base64.b64encode(np.full(4, i + 1, np.float32).tobytes()).decode()}
                for i, _ in enumerate(request["input"])]
        return Answer(json.dumps({"object": "list", "data": data, "model": "m",
                                  "usage": {"prompt_tokens": 1, "total_tokens": 1}}).encode())
    if path.endswith("/responses"):
        return Answer(json.dumps({"id": "r", "object": "response", "status": "completed", "output": [
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": _answer(request)}]}],
            "usage": {"input_tokens": 3, "output_tokens": 2}}).encode())
    return Answer(chat_body(_answer(request)))


def _answer(request: dict[str, Any]) -> str:
    """JSON matching the asked schema where one was asked (all string fields "ok"), else plain text."""
    fmt = (request.get("response_format") or {}).get("json_schema") or (request.get("text") or {}).get("format")
    if fmt:
        properties = fmt.get("schema", {}).get("properties", {})
        return json.dumps({name: "ok" for name in properties})
    return "answer: " + request_text(request)[:40]


@contextmanager
def hostile_server() -> Iterator[HostileServer]:
    server = HostileServer().start()
    try:
        yield server
    finally:
        server.stop()
