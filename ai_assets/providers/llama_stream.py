"""Chat answers from the embedded llama.cpp server, streamed, so that an abandoned request stops in the engine.

llama.cpp cannot cancel a request that is not streamed when its client goes away: its HTTP thread blocks until the
whole answer is ready (llama.cpp issue #9273, "Cannot properly cancel a non-stream completion request"), so a
request cut by a timeout keeps decoding in its slot while its retry queues behind it. Streamed, the server writes
each token as it is made and cancels the task at the first write to a closed connection (same issue: "Retry with
stream: true, now you will be able to interrupt"). So this connection:

* sends each request with ``stream: true``, pinned (``id_slot``) to a slot taken from a pool that mirrors the
  server's slots: a request waits for a free slot before its clock starts;
* gives it a deadline from the engine's measured speed (``ai_assets.runtime.pace``); at the deadline it closes the
  connection and waits (at most ``RELEASE_WAIT_S``) until ``/slots`` shows the slot idle, and only then fails the
  attempt, so the engine never retries a row whose first request still runs. A slot left by a request cancelled
  any other way (a run stopping) is checked the same way before it is used again;
* assembles the streamed chunks into one Chat Completions body and parses it as any other answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ai_assets.providers.openai_wire import ChatConnection, error_message, http_error
from ai_assets.providers.wire_shapes import loads
from ai_assets.runtime.engine import Reply
from ai_assets.runtime.errors import MalformedAnswerError, TransientError, bounded
from ai_assets.runtime.http import read_capped
from ai_assets.runtime.pace import EXTENSION_AT_MOST, Pace
from ai_assets.runtime.tokens import message_tokens

if TYPE_CHECKING:
    import aiohttp

RELEASE_WAIT_S = 10.0
"""The longest a cut request waits for llama.cpp to free its slot (it notices the closed connection at its next
token; a prompt being read is finished first)."""
POLL_S = 0.05
SLOTS_TIMEOUT_S = 5.0
logger = logging.getLogger(__name__)


class SlotPool:
    """The server's slots as this process sees them: which are free, and which must be seen idle before reuse."""

    def __init__(self, size: int, slots_url: str, session: aiohttp.ClientSession) -> None:
        self.size = size
        self.waiting = 0
        self._free: asyncio.Queue[int] = asyncio.Queue()
        self._unsure: set[int] = set(range(size))  # a new pool does not know what an earlier run left behind
        self._url = slots_url
        self._session = session
        for slot in range(size):
            self._free.put_nowait(slot)

    @property
    def busy(self) -> int:
        return self.size - self._free.qsize()

    async def take(self) -> int:
        self.waiting += 1
        try:
            slot = await self._free.get()
        finally:
            self.waiting -= 1
        if slot in self._unsure:
            try:
                if not await self.settle(slot):
                    logger.warning("llama.cpp slot %d still busy after %gs; using it anyway (the request queues "
                                   "behind what runs there)", slot, RELEASE_WAIT_S)
            except BaseException:
                self._free.put_nowait(slot)
                raise
        return slot

    def give(self, slot: int, *, sure: bool) -> None:
        """Back to the pool; ``sure``: the server is known to be done with it (else checked before reuse)."""
        if sure:
            self._unsure.discard(slot)
        else:
            self._unsure.add(slot)
        self._free.put_nowait(slot)

    async def settle(self, slot: int) -> bool:
        """Wait (at most ``RELEASE_WAIT_S``) until the server shows ``slot`` idle; whether it did."""
        stop = time.monotonic() + RELEASE_WAIT_S
        while True:
            if not await self._processing(slot):
                self._unsure.discard(slot)
                return True
            if time.monotonic() >= stop:
                return False
            await asyncio.sleep(POLL_S)

    async def _processing(self, slot: int) -> bool:
        import aiohttp

        try:
            async with self._session.get(self._url, timeout=aiohttp.ClientTimeout(total=SLOTS_TIMEOUT_S)) as response:
                states = loads(await read_capped(response, 1024 * 1024, f"answer from {self._url}", "1 MiB",
                                                 MalformedAnswerError), self._url)
        except (aiohttp.ClientError, TimeoutError, MalformedAnswerError):
            return True  # unknown: treat as busy until the bound
        return any(isinstance(s, dict) and s.get("id") == slot and s.get("is_processing") for s in states)


@dataclass
class Progress:
    """What a streamed answer has delivered so far."""

    tokens: int = 0
    parts: list[str] = field(default_factory=list)
    last: dict[str, Any] = field(default_factory=dict)
    finish_reason: str | None = None
    usage: Any = None
    timings: Any = None


class LlamaChatConnection(ChatConnection):
    """Chat completions streamed from the embedded llama.cpp server (see the module docstring)."""

    def __init__(self, base: ChatConnection, pool: SlotPool, pace: Pace, context: int) -> None:
        super().__init__(base.endpoint, base.session, base.response_model)
        self.pool = pool
        self.pace = pace
        self.context = context

    def _sizes(self, request: dict[str, Any]) -> tuple[int, int]:
        """The prompt's tokens and the most the answer may have."""
        prompt = message_tokens(request.get("messages") or [])
        limit = request.get("max_tokens") or request.get("max_completion_tokens")
        return prompt, limit if isinstance(limit, int) and limit > 0 else max(self.context - prompt, 1)

    def deadline_s(self, request: dict[str, Any]) -> float:
        """Seconds ``request`` may take once it has a slot (once more if it is still making progress then)."""
        return self.pace.deadline_s(*self._sizes(request))

    def timeout_for(self, request: dict[str, Any]) -> float:
        """The engine's bound on one attempt: its own deadline after those queued ahead of it had theirs."""
        own = (1 + EXTENSION_AT_MOST) * self.deadline_s(request) + RELEASE_WAIT_S
        rounds = 1 + (self.pool.busy + self.pool.waiting) // self.pool.size
        return rounds * own + RELEASE_WAIT_S

    async def send(self, request: dict[str, Any]) -> Reply:
        slot = await self.pool.take()
        sure = False
        progress = Progress()
        deadline = self.deadline_s(request)
        started = time.perf_counter()
        stream = asyncio.ensure_future(self._stream(request, slot, progress))
        try:
            try:
                done, _ = await asyncio.wait({stream}, timeout=deadline)
                if not done:  # still running at its deadline: once more, as long as its own pace says it needs
                    extra = self.pace.extension_s(progress.tokens, time.perf_counter() - started,
                                                  self._sizes(request)[1], deadline)
                    done, _ = await asyncio.wait({stream}, timeout=extra)
                    deadline += extra
                if not done:
                    stream.cancel()  # closes the connection: llama.cpp stops the slot at its next token
                    await asyncio.gather(stream, return_exceptions=True)
                    raise TimeoutError
                stream.result()
                sure = True
            except TimeoutError:
                self.pace.observe_cut(progress.tokens, time.perf_counter() - started)
                sure = await self.pool.settle(slot)  # the connection is closed: wait for llama.cpp to stop
                freed = f"llama.cpp cancelled it and freed slot {slot}" if sure else \
                    f"llama.cpp had not freed slot {slot} {RELEASE_WAIT_S:g}s later"
                raise TransientError(f"no answer within {deadline:.1f}s, {progress.tokens} tokens in (deadline from "
                                     f"the measured speed: {self.pace.describe()}); {freed}") from None
            except _HttpStatus as status:  # an error status: the server ran nothing for it
                sure = True
                raise status.error from None
        finally:
            if not stream.done():  # the attempt itself was cancelled (the run stops)
                stream.cancel()
                await asyncio.gather(stream, return_exceptions=True)
            self.pool.give(slot, sure=sure)
        timings = progress.timings if isinstance(progress.timings, dict) else {}
        self.pace.observe(_number(timings.get("prompt_per_second")), _number(timings.get("predicted_per_second")))
        return self.parse(request, self._body(progress))

    async def _stream(self, request: dict[str, Any], slot: int, progress: Progress) -> None:
        assert self.session is not None, "a parsing-only connection cannot send"
        body = {**request, "stream": True, "stream_options": {"include_usage": True}, "id_slot": slot}
        cap = self.endpoint.max_response_bytes
        import aiohttp

        try:  # no total timeout: the engine's deadline follows the stream's pace (Pace)
            async with self.session.post(self.url, data=json.dumps(body),
                                         timeout=aiohttp.ClientTimeout(total=None)) as response:
                if response.status != 200:
                    payload = await read_capped(response, cap, f"answer from {self.url}", "max_response_bytes",
                                                MalformedAnswerError)
                    text = payload.decode("utf-8", "replace")
                    raise _HttpStatus(http_error(response.status, f"HTTP {response.status} from {self.url}: "
                                                 f"{error_message(text)}", response.headers, self.secrets))
                await self._read_events(response, cap, progress)
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise TransientError(f"{type(exc).__name__} talking to {self.url}: {exc}") from exc

    async def _read_events(self, response: aiohttp.ClientResponse, cap: int, progress: Progress) -> None:
        size = 0
        pending = b""
        async for chunk in response.content.iter_any():
            size += len(chunk)
            if size > cap:
                raise MalformedAnswerError(f"answer from {self.url} passed max_response_bytes={cap}; aborted")
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if self._event(line.strip(), progress):
                    return
        raise TransientError(f"the stream from {self.url} ended before [DONE] ({progress.tokens} tokens in)")

    def _event(self, line: bytes, progress: Progress) -> bool:
        """One server-sent event line; whether the stream is complete."""
        if not line.startswith(b"data:"):
            return False
        data = line[5:].strip()
        if data == b"[DONE]":
            return True
        event = loads(data, self.url)
        if not isinstance(event, dict):
            raise MalformedAnswerError(bounded(f"malformed event from {self.url}: {data[:200]!r}"))
        if "error" in event:
            error = event["error"] if isinstance(event["error"], dict) else {"message": event["error"]}
            code = error.get("code")
            raise http_error(code if isinstance(code, int) else 500,
                             f"error from {self.url}: {error.get('message', error)}", {}, self.secrets)
        progress.last = event
        progress.usage = event.get("usage") or progress.usage
        progress.timings = event.get("timings") or progress.timings
        for choice in event.get("choices") or []:
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta") or {}
            content = delta.get("content") if isinstance(delta, dict) else None
            if isinstance(content, str) and content:
                progress.parts.append(content)
                progress.tokens += 1
            progress.finish_reason = choice.get("finish_reason") or progress.finish_reason
        return False

    def _body(self, progress: Progress) -> dict[str, Any]:
        last = progress.last
        return {"id": str(last.get("id", "stream")), "object": "chat.completion",
                "created": last.get("created") if isinstance(last.get("created"), int) else 0,
                "model": str(last.get("model", "")), "usage": progress.usage,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(progress.parts)},
                             "finish_reason": progress.finish_reason or "stop"}]}


class _HttpStatus(Exception):  # carries an HTTP error out of the response context
    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
