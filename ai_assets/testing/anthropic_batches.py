"""The fake Anthropic server's Message Batches API: create, retrieve, list, cancel and results JSONL.

What it models, and from where (docs.anthropic.com "Message Batches" and the API reference): ``POST
/v1/messages/batches`` takes ``{"requests": [{"custom_id", "params"}]}`` (400 for a ``custom_id`` outside
``^[a-zA-Z0-9_-]{1,64}$``, a duplicate, an empty list or more than 100,000 requests); a batch is ``in_progress``,
then ``ended`` (``canceling`` after a cancel), with ``request_counts`` and, once ended, a ``results_url``; results
are JSONL in an order of their own, each line ``succeeded`` (the message), ``errored`` (the error envelope),
``expired`` or ``canceled``. Lines are answered by the same code as live requests (faults included: an injected
status becomes an ``errored`` line). The list (newest first) is one page: the fake server drops query strings.

Knobs (``MessageBatchBehaviour``): ``polls`` retrievals before a batch reports ``ended`` (the setting of the
moment, so a test can hold batches open, then let them end); ``expire_match`` /
``cancel_match``: a line whose prompt contains the text comes back ``expired`` / ``canceled`` the first time it is
run (a resent one is answered); ``create_delay``: seconds between a batch being created and its create call being
answered (a kill in that window leaves a batch the client never heard of); ``lose_create_responses``: the first
this many creations happen but their answer is lost (the connection drops).
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from ai_assets.testing.faults import ServerStats
from ai_assets.testing.handlers import RESET, Reply

CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")
MAX_REQUESTS = 100_000


@dataclass(frozen=True)
class MessageBatchBehaviour:
    polls: int = 1
    expire_match: str | None = None
    cancel_match: str | None = None
    create_delay: float = 0.0
    lose_create_responses: int = 0


@dataclass
class MessageBatch:
    id: str
    requests: list[dict[str, Any]]
    behaviour: MessageBatchBehaviour
    created_at: str = field(default_factory=lambda: _now())  # noqa: PLW0108 (_now is defined below)
    polled: int = 0
    results: list[dict[str, Any]] | None = None
    ended_at: str | None = None
    cancel_at: str | None = None

    def describe(self, base_url: str) -> dict[str, Any]:
        counts = {"processing": len(self.requests), "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        if self.ended_at is not None and self.results is not None:
            counts["processing"] = 0
            for line in self.results:
                counts[line["result"]["type"]] += 1
        status = "ended" if self.ended_at else "canceling" if self.cancel_at else "in_progress"
        return {"id": self.id, "type": "message_batch", "processing_status": status, "request_counts": counts,
                "created_at": self.created_at, "ended_at": self.ended_at, "cancel_initiated_at": self.cancel_at,
                "expires_at": None, "archived_at": None,
                "results_url": f"{base_url}/v1/messages/batches/{self.id}/results" if self.ended_at else None}


class Answers(Protocol):
    """What answers a line: the fake Anthropic server's live handler (``AnthropicApp``)."""

    stats: ServerStats

    async def messages(self, data: dict[str, Any], headers: dict[str, str]) -> Reply | object: ...


class MessageBatches:
    def __init__(self, app: Answers, prompt_key: Callable[[list[dict[str, Any]]], str]) -> None:
        self.app = app
        self.prompt_key = prompt_key
        self.behaviour = MessageBatchBehaviour()
        self.batches: dict[str, MessageBatch] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._lost = 0
        self._ran: set[tuple[str, str]] = set()

    def configure(self, data: dict[str, Any]) -> Reply:
        self.behaviour = MessageBatchBehaviour(**data)
        self._lost = 0
        return Reply(200, {})

    async def route(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> Reply | object:
        parts = [p for p in path.split("/") if p]  # v1, messages, batches, [id], [results|cancel]
        base = f"http://{headers.get('host', '127.0.0.1')}"
        if len(parts) == 3:
            if method == "POST":
                return await self.create(body, headers, base)
            listed = sorted(self.batches.values(), key=lambda b: b.created_at, reverse=True)
            data = [b.describe(base) for b in listed]
            return Reply(200, {"data": data, "has_more": False, "first_id": data[0]["id"] if data else None,
                               "last_id": data[-1]["id"] if data else None})
        batch = self.batches.get(parts[3])
        if batch is None:
            return _error(404, f"no message batch {parts[3]}")
        if len(parts) == 5 and parts[4] == "results":
            if batch.ended_at is None or batch.results is None:
                return _error(400, f"batch {batch.id} is still {batch.describe(base)['processing_status']}")
            lines = list(reversed(batch.results))  # not the request order
            return Reply(200, None, raw="".join(json.dumps(line) + "\n" for line in lines).encode())
        if len(parts) == 5 and parts[4] == "cancel" and method == "POST":
            batch.cancel_at = batch.cancel_at or _now()
            return Reply(200, batch.describe(base))
        batch.polled += 1
        if batch.results is not None and batch.polled >= self.behaviour.polls and batch.ended_at is None:
            batch.ended_at = _now()
        return Reply(200, batch.describe(base))

    async def create(self, body: bytes, headers: dict[str, str], base: str) -> Reply | object:
        try:
            data = json.loads(body)
        except ValueError:
            return _error(400, "body: invalid JSON")
        requests = data.get("requests") if isinstance(data, dict) else None
        if not isinstance(requests, list) or not requests or len(requests) > MAX_REQUESTS:
            return _error(400, f"requests: between 1 and {MAX_REQUESTS:,} requests are required")
        seen: set[str] = set()
        for index, request in enumerate(requests):
            custom_id = request.get("custom_id") if isinstance(request, dict) else None
            if not isinstance(custom_id, str) or not CUSTOM_ID.fullmatch(custom_id):
                return _error(400, f"requests.{index}.custom_id: String should match pattern "
                                   "'^[a-zA-Z0-9_-]{1,64}$'")
            if custom_id in seen:
                return _error(400, f"requests.{index}.custom_id: duplicate custom_id {custom_id!r}")
            if not isinstance(request.get("params"), dict):
                return _error(400, f"requests.{index}.params: Field required")
            seen.add(custom_id)
        batch = MessageBatch(f"msgbatch_{uuid.uuid4().hex[:24]}", requests, self.behaviour)
        self.batches[batch.id] = batch
        self.app.stats.batches_created += 1
        task = asyncio.ensure_future(self._process(batch, headers))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if self.behaviour.create_delay:
            await asyncio.sleep(self.behaviour.create_delay)
        if self._lost < self.behaviour.lose_create_responses:
            self._lost += 1
            return RESET
        return Reply(200, batch.describe(base))

    async def _process(self, batch: MessageBatch, headers: dict[str, str]) -> None:
        results = []
        for request in batch.requests:
            results.append({"custom_id": request["custom_id"], "result": await self._run(batch, request, headers)})
        batch.results = results

    async def _run(self, batch: MessageBatch, request: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        params = request["params"]
        prompt = self.prompt_key(params.get("messages") or [{}]) if isinstance(params.get("messages"), list) else ""
        for kind, match in (("expired", batch.behaviour.expire_match), ("canceled", batch.behaviour.cancel_match)):
            if match and match in prompt and (kind, prompt) not in self._ran:
                self._ran.add((kind, prompt))
                return {"type": kind}
        if batch.cancel_at is not None:
            return {"type": "canceled"}
        self.app.stats.batch_lines += 1
        reply = await self.app.messages(params, headers)
        if isinstance(reply, Reply) and reply.status == 200:
            return {"type": "succeeded", "message": reply.body}
        if isinstance(reply, Reply) and isinstance(reply.body, dict):
            return {"type": "errored", "error": reply.body}
        return {"type": "errored", "error": {"type": "error", "error": {"type": "api_error", "message": "failed"}}}


def _error(status: int, message: str) -> Reply:
    kind = {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
    return Reply(status, {"type": "error", "error": {"type": kind, "message": message}})


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")
