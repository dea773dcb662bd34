"""Anthropic's Message Batches API as a batch client (``runtime.batch_protocol.BatchClient``): batch mode at half
price with the same journal as live mode.

What it follows, and from where (docs.anthropic.com, "Message Batches" and the API reference; the shapes as
anthropic-sdk-python's ``types/messages/message_batch*.py`` model them):

* ``POST /v1/messages/batches`` with ``{"requests": [{"custom_id", "params"}]}`` (``params``: a Messages request);
  a ``custom_id`` matches ``^[a-zA-Z0-9_-]{1,64}$``; at most 100,000 requests or 256 MB per batch.
* ``GET /v1/messages/batches/{id}``: ``processing_status`` ``in_progress`` / ``canceling`` / ``ended``,
  ``request_counts`` (``processing``, ``succeeded``, ``errored``, ``canceled``, ``expired``), ``created_at``
  (RFC 3339), ``results_url`` once ended. A batch not ended within 24 hours expires its unfinished requests.
* ``GET /v1/messages/batches?limit=&after_id=``: newest first, ``has_more`` and ``last_id`` for the next page.
* Results: JSONL, one line per request in any order, ``{"custom_id", "result": {"type": "succeeded", "message"}
  | {"type": "errored", "error": {"type": "error", "error": {"type", "message"}}} | {"type": "expired"} |
  {"type": "canceled"}}``. They are read from ``{base_url}/v1/messages/batches/{id}/results`` (the documented
  path), never from a ``results_url`` of another host, which would receive the API key.

**Never creating a second batch.** The create call has no idempotency key and no metadata. So before it is made
the runtime records an *intent* in the journal: when (``at``), how many requests (``count``) and a digest of the
sorted custom ids (``ids``). A run that finds an intent without a batch id (its predecessor was killed, or the
create's answer was lost) lists the batches, newest first, and takes those created between ``at`` minus a clock
skew and ``at`` plus the longest the create call could have taken (``_window``), with ``count`` requests. An ended
candidate is confirmed by its results' custom ids (the digest); one still running cannot be (the API shows no
request of a running batch), so every running candidate is polled, and a line that is not ours is ignored when
read. Bounded: at most ``MAX_LIST_PAGES`` pages of 100 are listed, and the listing stops at the first batch older
than the window. What it cannot cover: a batch archived or deleted meanwhile, or one beyond those pages (its rows
are then sent again: paid twice, never lost), and another process's batch of the same size created in the same
window while ours was never created (its results are read, none is ours, and our rows are sent again by the next
run, after it ended).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ai_assets.providers.anthropic_wire import error_message
from ai_assets.providers.openai_batch import CONTROL_RETRY, control_call
from ai_assets.providers.openai_wire import endpoint_url, http_error
from ai_assets.runtime.batch_protocol import BatchState, Record, parsed_line
from ai_assets.runtime.errors import MalformedAnswerError, TransientError, bounded
from ai_assets.runtime.http import read_capped

if TYPE_CHECKING:
    import aiohttp

CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")
MAX_LIST_PAGES = 20
"""Pages of 100 batches listed when recovering a submission (2,000 batches, newest first)."""
CLOCK_SKEW_S = 300.0
"""How far the API's ``created_at`` may be from this machine's clock."""
STATUS_OF = {"invalid_request_error": 400, "authentication_error": 401, "permission_error": 403,
             "not_found_error": 404, "request_too_large": 413, "rate_limit_error": 429, "api_error": 500,
             "overloaded_error": 529}
"""An errored line's ``error.type`` as the HTTP status the live API answers it with ("Errors"): 429 and 5xx are
retried by the run, the others are row errors (sent again by the next run)."""
logger = logging.getLogger(__name__)


def ids_digest(custom_ids: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(sorted(custom_ids)).encode()).hexdigest()[:32]


class AnthropicBatchClient:
    max_requests = 100_000
    max_bytes = 256 * 1000 * 1000

    def __init__(self, base_url: str, session: aiohttp.ClientSession, secrets: Sequence[str], timeout_s: float,
                 max_line_bytes: int) -> None:
        self.base_url = base_url
        self.session = session
        self.secrets = secrets
        self.timeout_s = timeout_s
        self.max_line_bytes = max_line_bytes

    def custom_id(self, key: str) -> str:
        """The journal key where it fits Anthropic's alphabet (a SHA-256 hex key does), else its SHA-256; the
        runtime's ledger keeps which rows each id answers."""
        return key if CUSTOM_ID.fullmatch(key) else hashlib.sha256(key.encode()).hexdigest()

    def line(self, custom_id: str, endpoint: str, request: Mapping[str, Any]) -> str:
        return json.dumps({"custom_id": custom_id, "params": request}, separators=(",", ":"))

    async def submit(self, lines: Sequence[str], custom_ids: Sequence[str], endpoint: str, record: Record) -> str:
        intent = {"at": round(time.time(), 3), "count": len(lines), "ids": ids_digest(custom_ids)}
        await record({"intent": intent})  # durable before the create call: see the module
        body = b'{"requests":[' + ",".join(lines).encode() + b"]}"

        async def create() -> str:
            return str((await self._call("POST", "/v1/messages/batches", body=body, attempts=1))["id"])

        async def found() -> str | None:  # the answer may be lost, not the batch: look before creating again
            ids = await self.find(intent)
            return ids[0] if ids else None

        return await control_call("/v1/messages/batches", create, found=found)

    async def recover(self, record: Mapping[str, Any], endpoint: str) -> list[str]:
        intent = record.get("intent")
        return await self.find(intent) if isinstance(intent, Mapping) else []

    async def find(self, intent: Mapping[str, Any]) -> list[str]:
        """The batches an intent may stand for (see the module): one confirmed by its custom ids, else every
        running candidate; [] when there is none."""
        low, high = float(intent["at"]) - CLOCK_SKEW_S, float(intent["at"]) + self._window()
        running: list[str] = []
        after: str | None = None
        for _ in range(MAX_LIST_PAGES):
            page = await self._call("GET", "/v1/messages/batches?limit=100" + (f"&after_id={after}" if after else ""))
            data = [b for b in page.get("data") or [] if isinstance(b, Mapping)]
            for batch in data:
                created = _epoch(batch.get("created_at"))
                if created is None or created > high:
                    continue
                if created < low:
                    return running
                if sum((batch.get("request_counts") or {}).values()) != intent["count"]:
                    continue
                state = self._state(batch)
                if not state.done:
                    running.append(state.id)
                elif await self._ids_of(state) == intent["ids"]:
                    return [state.id]
            if not page.get("has_more") or not data:
                return running
            after = str(page.get("last_id") or data[-1]["id"])
        logger.warning("stopped looking for the batch of a submission at %s after %d pages of batches",
                       intent["at"], MAX_LIST_PAGES)
        return running

    def _window(self) -> float:
        """The longest a create call can take, retries included: a batch of ours is created within it."""
        attempts = CONTROL_RETRY.max_attempts
        return CLOCK_SKEW_S + attempts * (self.timeout_s + CONTROL_RETRY.max_wait)

    async def _ids_of(self, state: BatchState) -> str:
        return ids_digest([str(line["custom_id"]) async for line in self._lines(state.id)])

    async def status(self, batch_id: str) -> BatchState:
        return self._state(await self._call("GET", f"/v1/messages/batches/{batch_id}"))

    @staticmethod
    def _state(batch: Mapping[str, Any]) -> BatchState:
        done = batch.get("processing_status") == "ended"
        return BatchState(str(batch["id"]), done, None, done and not batch.get("results_url"), batch)

    async def results(self, state: BatchState) -> AsyncIterator[Mapping[str, Any]]:
        async for line in self._lines(state.id):
            yield _neutral(line)

    async def custom_ids(self, state: BatchState) -> list[str]:
        return []  # a Message Batch is refused at creation (a 400), never failed as a whole later

    async def _lines(self, batch_id: str) -> AsyncIterator[Mapping[str, Any]]:
        """The results JSONL streamed, each line at most ``max_line_bytes`` (a longer one is skipped with a
        warning naming the batch and line: its row has no answer and is sent again by the next run)."""
        import aiohttp

        url = endpoint_url(self.base_url, f"/v1/messages/batches/{batch_id}/results")
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.timeout_s, sock_read=self.timeout_s)
        try:
            async with self.session.get(url, timeout=timeout) as response:
                if response.status != 200:
                    text = (await read_capped(response, self.max_line_bytes, f"answer of GET {url}",
                                              "max_response_bytes", MalformedAnswerError)).decode("utf-8", "replace")
                    raise http_error(response.status, f"HTTP {response.status} from GET {url}: "
                                     f"{error_message(text, response.headers)}", response.headers, self.secrets)
                buffer, number, skipping = b"", 0, False
                async for chunk in response.content.iter_chunked(1 << 16):
                    buffer += chunk
                    *complete, buffer = buffer.split(b"\n")
                    for raw in complete:
                        number += 1
                        if not skipping and (line := parsed_line(raw)) is not None:
                            yield line
                        skipping = False
                    if len(buffer) > self.max_line_bytes:
                        logger.warning("batch %s: result line %d is over %d bytes: skipped (its row is sent again "
                                       "by the next run)", batch_id, number + 1, self.max_line_bytes)
                        buffer, skipping = b"", True
                if buffer and not skipping and (line := parsed_line(buffer)) is not None:
                    yield line
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise TransientError(f"{type(exc).__name__} reading the results of batch {batch_id}: {exc}") from exc

    async def _call(self, method: str, path: str, *, body: bytes | None = None,
                    attempts: int = CONTROL_RETRY.max_attempts) -> Any:
        url = endpoint_url(self.base_url, path)

        async def request() -> Any:
            async with self.session.request(method, url, data=body) as response:
                payload = await read_capped(response, self.max_line_bytes, f"answer of {method} {url}",
                                            "max_response_bytes", MalformedAnswerError)
                if response.status == 200:
                    return json.loads(payload)
                raise http_error(response.status, f"HTTP {response.status} from {method} {url}: "
                                 f"{error_message(payload.decode(errors='replace'), response.headers)}",
                                 response.headers, self.secrets)

        return await control_call(url, request, attempts=attempts)


def _neutral(line: Mapping[str, Any]) -> Mapping[str, Any]:
    """A Message Batches result line in the runtime's neutral (OpenAI output-line) shape."""
    result = _mapping(line.get("result"))
    kind = result.get("type")
    custom_id = line["custom_id"]
    if kind == "succeeded":
        return {"custom_id": custom_id, "response": {"status_code": 200, "body": result.get("message")}}
    if kind == "errored":
        outer = _mapping(result.get("error"))
        inner = _mapping(outer.get("error")) or outer
        error_type = str(inner.get("type", "api_error"))
        message = bounded(f"{error_type}: {inner.get('message', '')}", (), 500)
        return {"custom_id": custom_id, "response": {"status_code": STATUS_OF.get(error_type, 500),
                                                     "body": {"error": {"message": message}}}}
    code = "batch_expired" if kind == "expired" else "batch_cancelled" if kind == "canceled" else "batch_unknown"
    return {"custom_id": custom_id, "error": {"code": code, "message": f"request {kind or 'without a result'}"}}


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _epoch(stamp: Any) -> float | None:
    if not isinstance(stamp, str):
        return None
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
