"""A server that closes an idle keep-alive connection must never cost a row an attempt.

uvicorn (vLLM's and most Python servers' HTTP layer) closes a connection idle for 5 s (``timeout_keep_alive=5``),
llama.cpp's cpp-httplib after 5 s (``CPPHTTPLIB_KEEPALIVE_TIMEOUT_SECOND``), Node after 5 s; RFC 9112 section 9.3
lets either side close an idle persistent connection at any time. aiohttp keeps idle connections for 15 s by
default, so a request sent 5-15 s after the last one went out on a connection the server had closed: "Can not
write request body", a transient failure retried at the cost of an attempt (and with ``max_attempts=1``, the row).
This server closes idle connections after 5 s, as those servers do. (A regression guard: aiohttp already drops a
connection whose close it has seen; the race this guards against is a request written in the instant the server
closes, which no test reproduces reliably, and which ``KEEPALIVE_S`` under 5 s rules out.)"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator

import pyarrow as pa
import pytest

from ai_assets import OpenAICompatibleProvider, RetryPolicy, RunOptions, prompt
from ai_assets.runtime.http import KEEPALIVE_S

IDLE_CLOSE_S = 5.0


class ShortKeepAliveServer:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.requests = 0
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IDLE_CLOSE_S)
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                await reader.readexactly(length)
                self.requests += 1
                body = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                                   "choices": [{"index": 0, "finish_reason": "stop",
                                                "message": {"role": "assistant", "content": "ok"}}],
                                   "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                             + f"content-length: {len(body)}\r\n\r\n".encode() + body)
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def start(self) -> str:
        self.thread.start()
        server = asyncio.run_coroutine_threadsafe(asyncio.start_server(self.handle, "127.0.0.1", 0),
                                                  self.loop).result()
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"


@pytest.fixture
def short_keep_alive() -> Iterator[tuple[ShortKeepAliveServer, str]]:
    server = ShortKeepAliveServer()
    url = server.start()
    yield server, url
    server.loop.call_soon_threadsafe(server.loop.stop)


def test_a_request_after_the_server_closed_its_idle_connection_costs_no_attempt(
        short_keep_alive: tuple[ShortKeepAliveServer, str]) -> None:
    server, url = short_keep_alive
    assert KEEPALIVE_S < IDLE_CLOSE_S  # the client drops an idle connection before such a server does
    llm = OpenAICompatibleProvider("m", base_url=url, api_key="k")
    # 10 requests a minute: the second goes ~6 s after the first, when the server has closed its connection.
    out = prompt(pa.table({"t": ["a", "b"]}), "{t}", provider=llm,
                 options=RunOptions(rpm=10, concurrency=1, retry=RetryPolicy(max_attempts=1), on_error="null"))
    assert out.table.column("response_error").to_pylist() == [None, None]
    assert out.usage.requests == 2 and server.requests == 2
