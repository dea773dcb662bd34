"""The Batch API of an OpenAI-compatible endpoint: upload a JSONL file of requests, create a batch, poll it, and
download its output and error files. Control calls are retried on transient failures (with the same
``RetryPolicy`` as requests); what to do with batches is the runtime's job (``ai_assets.runtime.batch``)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp

from ai_assets.providers.openai_wire import endpoint_url, error_message, http_error
from ai_assets.runtime.errors import TransientError
from ai_assets.runtime.retry import RetryPolicy

CONTROL_RETRY = RetryPolicy(max_attempts=6, base_wait=1.0, max_wait=30.0)


class BatchClient:
    def __init__(self, base_url: str, session: aiohttp.ClientSession, secrets: Sequence[str]) -> None:
        self.base_url = base_url
        self.session = session
        self.secrets = secrets

    async def _call(self, method: str, path: str, *, body: Mapping[str, Any] | None = None,
                    form: aiohttp.FormData | None = None, raw: bool = False,
                    attempts: int = CONTROL_RETRY.max_attempts) -> Any:
        url = endpoint_url(self.base_url, path)
        for attempt in range(1, attempts + 1):
            try:
                data = form if form is not None else (json.dumps(body) if body is not None else None)
                headers = {"content-type": "application/json"} if body is not None else None
                async with self.session.request(method, url, data=data, headers=headers) as response:
                    payload = await response.read()
                    if response.status == 200:
                        return payload if raw else json.loads(payload)
                    raise http_error(response.status, f"HTTP {response.status} from {method} {url}: "
                                     f"{error_message(payload.decode(errors='replace'))}", response.headers,
                                     self.secrets)
            except (aiohttp.ClientError, ConnectionError, TimeoutError) as exc:  # TimeoutError: RunOptions.timeout_s
                error: Exception = TransientError(f"{type(exc).__name__} talking to {url}: {exc}")
            except TransientError as exc:
                error = exc
            if attempt == attempts:
                raise error
            await asyncio.sleep(CONTROL_RETRY.delay(attempt, error))
        raise AssertionError("unreachable")

    async def upload(self, filename: str, payload: bytes) -> str:
        """Upload a JSONL file of requests (purpose ``batch``); its file id."""
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
        for attempt in range(1, CONTROL_RETRY.max_attempts + 1):
            try:
                result: dict[str, Any] = await self._call("POST", "/batches", body=body, attempts=1)
                return result
            except TransientError as exc:
                found = await self.find(file_id)
                if found is not None:
                    return found
                if attempt == CONTROL_RETRY.max_attempts:
                    raise
                await asyncio.sleep(CONTROL_RETRY.delay(attempt, exc))
        raise AssertionError("unreachable")

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
