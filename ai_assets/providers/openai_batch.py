"""The Batch API of an OpenAI-compatible endpoint: upload a JSONL file of requests, create a batch, poll it, and
download its output and error files. Control calls are retried on transient failures (with the same
``RetryPolicy`` as requests); what to do with batches is the runtime's job (``ai_assets.runtime.batch``)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from ai_assets.providers.openai_wire import endpoint_url, error_message, http_error
from ai_assets.runtime.batch_protocol import BatchState, Record, parsed_line
from ai_assets.runtime.errors import TransientError, bounded
from ai_assets.runtime.retry import RetryPolicy

if TYPE_CHECKING:
    import aiohttp

CONTROL_RETRY = RetryPolicy(max_attempts=6, base_wait=1.0, max_wait=30.0)
T = TypeVar("T")


async def control_call(url: str, request: Callable[[], Awaitable[T]], *, attempts: int = CONTROL_RETRY.max_attempts,
                       found: Callable[[], Awaitable[T | None]] | None = None) -> T:
    """A Batch API control call, tried again after a transient failure (a dropped connection, a timeout, 429 /
    5xx). With ``found``, a failed try first looks for what the call would have made (a create whose answer was
    lost): what it finds is the answer, so a retry never creates a second batch (paid twice)."""
    import aiohttp

    for attempt in range(1, attempts + 1):
        try:
            return await request()
        except (aiohttp.ClientError, ConnectionError, TimeoutError) as exc:  # TimeoutError: RunOptions.timeout_s
            error: Exception = TransientError(f"{type(exc).__name__} talking to {url}: {exc}")
        except TransientError as exc:
            error = exc
        if found is not None and (made := await found()) is not None:
            return made
        if attempt == attempts:
            raise error
        await asyncio.sleep(CONTROL_RETRY.delay(attempt, error))
    raise AssertionError("unreachable")
TERMINAL = ("completed", "expired", "cancelled", "failed")
"""The batch statuses after which nothing changes."""


class BatchClient:
    """OpenAI's Batch API as a ``runtime.batch_protocol.BatchClient``: the submission recorded before the batch
    exists is the uploaded file's id (the create call carries it in ``metadata`` and ``find`` looks it up)."""

    max_requests = 50_000  # OpenAI's limits per batch file ("Batch API": 50,000 requests, 200 MB)
    max_bytes = 200 * 1024 * 1024

    def __init__(self, base_url: str, session: aiohttp.ClientSession, secrets: Sequence[str]) -> None:
        self.base_url = base_url
        self.session = session
        self.secrets = secrets

    async def _call(self, method: str, path: str, *, body: Mapping[str, Any] | None = None,
                    form: aiohttp.FormData | None = None, raw: bool = False,
                    attempts: int = CONTROL_RETRY.max_attempts) -> Any:
        url = endpoint_url(self.base_url, path)

        async def request() -> Any:
            data = form if form is not None else (json.dumps(body) if body is not None else None)
            headers = {"content-type": "application/json"} if body is not None else None
            async with self.session.request(method, url, data=data, headers=headers) as response:
                payload = await response.read()
                if response.status == 200:
                    return payload if raw else json.loads(payload)
                raise http_error(response.status, f"HTTP {response.status} from {method} {url}: "
                                 f"{error_message(payload.decode(errors='replace'))}", response.headers,
                                 self.secrets)

        return await control_call(url, request, attempts=attempts)

    # -- the batch client protocol ------------------------------------------------------------------------
    def custom_id(self, key: str) -> str:
        return key

    def line(self, custom_id: str, endpoint: str, request: Mapping[str, Any]) -> str:
        return json.dumps({"custom_id": custom_id, "method": "POST", "url": endpoint, "body": request},
                          separators=(",", ":"))

    async def submit(self, lines: Sequence[str], custom_ids: Sequence[str], endpoint: str, record: Record) -> str:
        payload = ("\n".join(lines) + "\n").encode()
        file_id = await self.upload(f"ai_assets-{int(time.time())}.jsonl", payload)
        await record({"file": file_id})  # durable before the batch exists: a kill now leaves a findable file
        created = await self.create(file_id, endpoint, {"ai_assets_file": file_id})
        return str(created["id"])

    async def recover(self, record: Mapping[str, Any], endpoint: str) -> list[str]:
        """The batch of the recorded file, created now if the run that uploaded it was killed before."""
        if not record.get("file"):
            return []
        file_id = str(record["file"])
        found = await self.find(file_id) or await self.create(file_id, endpoint, {"ai_assets_file": file_id})
        return [str(found["id"])]

    async def status(self, batch_id: str) -> BatchState:
        state = await self.retrieve(batch_id)
        done = state.get("status") in TERMINAL
        failed = None
        if state.get("status") == "failed":
            failed = bounded(json.dumps((state.get("errors") or {}).get("data", [])), self.secrets, 200)
        empty = done and not state.get("output_file_id") and not state.get("error_file_id")
        return BatchState(str(state["id"]), done, failed, empty, state)

    async def results(self, state: BatchState) -> AsyncIterator[Mapping[str, Any]]:
        for file_key in ("output_file_id", "error_file_id"):
            if state.raw.get(file_key):
                data = await self.content(str(state.raw[file_key]))
                for text in data.splitlines():
                    line = parsed_line(text)
                    if line is not None:
                        yield line

    async def custom_ids(self, state: BatchState) -> list[str]:
        data = await self.content(str(state.raw["input_file_id"]))
        return [str(json.loads(t)["custom_id"]) for t in data.splitlines() if t.strip()]

    # -- the Batch API's calls ------------------------------------------------------------------------------
    async def upload(self, filename: str, payload: bytes) -> str:
        """Upload a JSONL file of requests (purpose ``batch``); its file id."""
        import aiohttp

        form = aiohttp.FormData()
        form.add_field("purpose", "batch")
        form.add_field("file", payload, filename=filename, content_type="application/jsonl")
        result = await self._call("POST", "/files", form=form)
        return str(result["id"])

    async def create(self, file_id: str, endpoint: str, metadata: Mapping[str, str]) -> dict[str, Any]:
        """Create a batch of ``file_id``, once: a creation whose answer was lost (a dropped connection, a 5xx
        after the fact) is looked up by its file before it is tried again, so a retry never creates a second
        batch of the same requests (paid twice)."""
        body = {"input_file_id": file_id, "endpoint": endpoint, "completion_window": "24h", "metadata": dict(metadata)}
        created: dict[str, Any] = await control_call(
            "/batches", lambda: self._call("POST", "/batches", body=body, attempts=1), found=lambda: self.find(file_id))
        return created

    async def retrieve(self, batch_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", f"/batches/{batch_id}")
        return result

    async def find(self, file_id: str) -> dict[str, Any] | None:
        """The batch created from ``file_id``, if any (for a run killed between creating it and recording it)."""
        after: str | None = None
        while True:
            page = await self._call("GET", "/batches?limit=100" + (f"&after={after}" if after else ""))
            for batch in page.get("data", []):
                if batch.get("input_file_id") == file_id:
                    return dict(batch)
            if not page.get("has_more") or not page.get("data"):
                return None
            after = page["data"][-1]["id"]

    async def content(self, file_id: str) -> bytes:
        data: bytes = await self._call("GET", f"/files/{file_id}/content", raw=True)
        return data

    async def cancel(self, batch_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("POST", f"/batches/{batch_id}/cancel")
        return result
