"""The yardstick: a bare aiohttp client for chat completions and embeddings, with nothing a pipeline needs (no
journal, no retries, no Arrow, no limits) beyond a semaphore. What ai_assets adds on top is measured against it."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Sequence
from typing import Any

import aiohttp
import numpy as np


async def _post(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> dict[str, Any]:
    async with session.post(url, data=json.dumps(body)) as response:
        result: dict[str, Any] = json.loads(await response.text())
        return result


async def chat(base_url: str, texts: Sequence[str], concurrency: int) -> float:
    """Rows a second for one plain chat completion per text."""
    gate = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)
    headers = {"authorization": "Bearer bench", "content-type": "application/json"}
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def one(text: str) -> str:
            async with gate:
                body = await _post(session, f"{base_url}/chat/completions",
                                   {"model": "bench", "messages": [{"role": "user", "content": text}]})
                return str(body["choices"][0]["message"]["content"])

        started = time.perf_counter()
        await asyncio.gather(*(one(t) for t in texts))
        return len(texts) / (time.perf_counter() - started)


async def embeddings(base_url: str, texts: Sequence[str], batch: int, concurrency: int) -> float:
    """Texts a second, ``batch`` texts a request as base64 float32, decoded into one matrix."""
    gate = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)
    headers = {"authorization": "Bearer bench", "content-type": "application/json"}
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def one(part: Sequence[str]) -> np.ndarray[Any, Any]:
            async with gate:
                body = await _post(session, f"{base_url}/embeddings",
                                   {"model": "bench", "input": list(part), "encoding_format": "base64"})
                return np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in body["data"]])

        started = time.perf_counter()
        parts = [texts[i:i + batch] for i in range(0, len(texts), batch)]
        matrix = np.concatenate(await asyncio.gather(*(one(p) for p in parts)))
        assert len(matrix) == len(texts)
        return len(texts) / (time.perf_counter() - started)
