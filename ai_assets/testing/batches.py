"""The fake Batch API: ``/v1/files`` (upload, retrieve, content) and ``/v1/batches`` (create, retrieve, list,
cancel) with OpenAI's formats and statuses: validating -> in_progress -> finalizing -> completed, or failed
(validation), expired (the completion window ran out; unanswered lines go to the error file as
``batch_expired``), cancelling -> cancelled.

Lines are answered by the same code as live requests (faults included: an injected HTTP status becomes a failed
line in the error file), after ``BatchBehaviour.delay`` seconds, and the output file lists them in an order of its
own, as OpenAI's does not follow the input order.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

from ai_assets.testing.faults import BatchBehaviour
from ai_assets.testing.handlers import RESET, App, Reply

ENDPOINTS = {"/v1/chat/completions": "chat", "/v1/embeddings": "embeddings", "/v1/responses": "responses"}


@dataclass
class StoredFile:
    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int = field(default_factory=lambda: int(time.time()))

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "object": "file", "bytes": len(self.data), "created_at": self.created_at,
                "filename": self.filename, "purpose": self.purpose}


@dataclass
class Batch:
    id: str
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, Any] | None
    status: str = "validating"
    created_at: int = field(default_factory=lambda: int(time.time()))
    times: dict[str, int | None] = field(default_factory=dict)
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: dict[str, Any] | None = None
    counts: dict[str, int] = field(default_factory=lambda: {"total": 0, "completed": 0, "failed": 0})
    cancel: bool = False

    def describe(self) -> dict[str, Any]:
        stamps = ("in_progress_at", "finalizing_at", "completed_at", "failed_at", "expired_at", "cancelling_at",
                  "cancelled_at")
        return {"id": self.id, "object": "batch", "endpoint": self.endpoint, "errors": self.errors,
                "input_file_id": self.input_file_id, "completion_window": self.completion_window,
                "status": self.status, "output_file_id": self.output_file_id, "error_file_id": self.error_file_id,
                "created_at": self.created_at, "expires_at": self.created_at + 86_400,
                **{k: self.times.get(k) for k in stamps}, "request_counts": dict(self.counts),
                "metadata": self.metadata}


class BatchApi:
    def __init__(self, app: App) -> None:
        self.app = app
        self.behaviour = BatchBehaviour()
        self.files: dict[str, StoredFile] = {}
        self.batches: dict[str, Batch] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._lost = 0

    def configure(self, behaviour: BatchBehaviour) -> None:
        self.behaviour = behaviour
        self._lost = 0

    async def route(self, method: str, path: str, data: Any, body: bytes, headers: dict[str, str]
                    ) -> Reply | object | None:
        parts = [p for p in path.split("/") if p]  # v1, files|batches, [id], [content|cancel]
        if len(parts) < 2 or parts[1] not in ("files", "batches"):
            return None
        if self.behaviour.control_delay:
            await asyncio.sleep(self.behaviour.control_delay)
        if parts[1] == "files":
            if method == "POST" and len(parts) == 2:
                return self.upload(body, headers)
            stored = self.files.get(parts[2]) if len(parts) > 2 else None
            if stored is None:
                return _not_found("file", parts[2] if len(parts) > 2 else "")
            if len(parts) == 4 and parts[3] == "content":
                return Reply(200, None, raw=stored.data)
            return Reply(200, stored.describe())
        if method == "POST" and len(parts) == 2:
            return self.create(data)
        if method == "GET" and len(parts) == 2:
            listed = sorted(self.batches.values(), key=lambda b: b.created_at, reverse=True)
            return Reply(200, {"object": "list", "data": [b.describe() for b in listed], "has_more": False})
        batch = self.batches.get(parts[2])
        if batch is None:
            return _not_found("batch", parts[2])
        if method == "POST" and len(parts) == 4 and parts[3] == "cancel":
            if batch.status in ("validating", "in_progress"):
                batch.cancel = True
                batch.status = "cancelling"
                batch.times["cancelling_at"] = int(time.time())
            return Reply(200, batch.describe())
        return Reply(200, batch.describe())

    def upload(self, body: bytes, headers: dict[str, str]) -> Reply:
        fields = multipart_fields(body, headers)
        if "file" not in fields or "purpose" not in fields:
            return Reply(400, {"error": {"message": "file and purpose are required", "type": "invalid_request_error"}})
        filename, data = fields["file"]
        stored = StoredFile(f"file-{uuid.uuid4().hex[:24]}", filename or "upload", fields["purpose"][1].decode(), data)
        self.files[stored.id] = stored
        self.app.stats.files_uploaded += 1
        return Reply(200, stored.describe())

    def create(self, data: dict[str, Any]) -> Reply | object:
        if data.get("input_file_id") not in self.files:
            return _not_found("file", str(data.get("input_file_id")))
        if data.get("endpoint") not in ENDPOINTS:
            return Reply(400, {"error": {"message": f"endpoint {data.get('endpoint')!r} is not supported",
                                         "type": "invalid_request_error"}})
        batch = Batch(f"batch_{uuid.uuid4().hex[:24]}", data["input_file_id"], data["endpoint"],
                      data.get("completion_window", "24h"), data.get("metadata"))
        self.batches[batch.id] = batch
        self.app.stats.batches_created += 1
        task = asyncio.ensure_future(self._process(batch, self.behaviour))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if self._lost < self.behaviour.lose_create_responses:
            self._lost += 1
            return RESET
        return Reply(200, batch.describe())

    async def _process(self, batch: Batch, behaviour: BatchBehaviour) -> None:
        await asyncio.sleep(behaviour.delay / 4)
        lines, problems = self._validate(batch, behaviour)
        if problems:
            batch.status, batch.errors = "failed", {"object": "list", "data": problems}
            batch.times["failed_at"] = int(time.time())
            return
        batch.status = "in_progress"
        batch.times["in_progress_at"] = int(time.time())
        batch.counts["total"] = len(lines)
        await asyncio.sleep(behaviour.delay / 2)
        outputs, errors = [], []
        for index, line in enumerate(lines):
            if batch.cancel or (behaviour.expire_after is not None and index >= behaviour.expire_after):
                code = "batch_cancelled" if batch.cancel else "batch_expired"
                errors.append(_line(line["custom_id"], None, {"code": code, "message": f"request {code[6:]}"}))
                batch.counts["failed"] += 1
                continue
            self.app.stats.batch_lines += 1
            handler = getattr(self.app, ENDPOINTS[batch.endpoint])
            reply = await handler(line["body"], live=False)
            if reply is RESET or not isinstance(reply, Reply) or reply.status != 200:
                status = reply.status if isinstance(reply, Reply) else 500
                body = reply.body if isinstance(reply, Reply) else {"error": {"message": "server error"}}
                errors.append(_line(line["custom_id"], {"status_code": status, "request_id": uuid.uuid4().hex,
                                                        "body": body}, None))
                batch.counts["failed"] += 1
            else:
                outputs.append(_line(line["custom_id"], {"status_code": 200, "request_id": uuid.uuid4().hex,
                                                         "body": reply.body}, None))
                batch.counts["completed"] += 1
        batch.status = "finalizing"
        batch.times["finalizing_at"] = int(time.time())
        await asyncio.sleep(behaviour.delay / 4)
        outputs.reverse()  # the output order is not the input order
        if outputs:
            batch.output_file_id = self._store(f"{batch.id}_output.jsonl", outputs)
        if errors:
            batch.error_file_id = self._store(f"{batch.id}_error.jsonl", errors)
        final = "cancelled" if batch.cancel else "expired" if behaviour.expire_after is not None else "completed"
        batch.status = final
        batch.times[f"{final}_at"] = int(time.time())

    def _validate(self, batch: Batch, behaviour: BatchBehaviour) -> tuple[list[dict[str, Any]], list[Any]]:
        lines: list[dict[str, Any]] = []
        problems: list[dict[str, Any]] = []
        if behaviour.fail_validation:
            problems.append({"code": "invalid_request", "message": "injected validation failure", "line": 1})
        seen: set[str] = set()
        for number, text in enumerate(self.files[batch.input_file_id].data.decode().splitlines(), start=1):
            if not text.strip():
                continue
            try:
                line = json.loads(text)
            except json.JSONDecodeError:
                problems.append({"code": "invalid_json_line", "message": "not JSON", "line": number})
                continue
            if line.get("url") != batch.endpoint or line.get("method") != "POST":
                problems.append({"code": "mismatched_endpoint", "message": f"url {line.get('url')!r}",
                                 "line": number})
            if line.get("custom_id") in seen:
                problems.append({"code": "duplicate_custom_id", "message": str(line.get("custom_id")),
                                 "line": number})
            seen.add(str(line.get("custom_id")))
            lines.append(line)
        if len(lines) > 50_000:
            problems.append({"code": "too_many_requests", "message": f"{len(lines)} requests (limit 50,000)"})
        return lines, problems

    def _store(self, name: str, lines: list[dict[str, Any]]) -> str:
        stored = StoredFile(f"file-{uuid.uuid4().hex[:24]}", name, "batch_output",
                            "".join(json.dumps(line) + "\n" for line in lines).encode())
        self.files[stored.id] = stored
        return stored.id


def _line(custom_id: str, response: dict[str, Any] | None, error: dict[str, Any] | None) -> dict[str, Any]:
    return {"id": f"batch_req_{uuid.uuid4().hex[:16]}", "custom_id": custom_id, "response": response,
            "error": error}


def _not_found(kind: str, ident: str) -> Reply:
    return Reply(404, {"error": {"message": f"No such {kind}: {ident}", "type": "invalid_request_error"}})


def multipart_fields(body: bytes, headers: dict[str, str]) -> dict[str, tuple[str | None, bytes]]:
    """A multipart/form-data body as {field name: (file name or None, bytes)}."""
    message = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {headers.get('content-type', '')}\r\n\r\n".encode() + body)
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        fields[str(name)] = (part.get_filename(), payload if isinstance(payload, bytes) else b"")
    return fields
