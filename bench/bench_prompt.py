"""Prompt throughput against the fake server at 100 ms latency, 64 requests in flight, N = 2,000.

Prints, from one run: ai_assets plain and structured rows/s, raw ``openai.AsyncOpenAI`` + semaphore rows/s, and
the latency-bound limit 64 / 0.1 s = 640 rows/s, each as a ratio of that limit.

    python bench/bench_prompt.py [--rows 2000] [--concurrency 64] [--latency 0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Literal

import pyarrow as pa
from openai import AsyncOpenAI
from pydantic import BaseModel

from ai_assets import OpenAICompatibleProvider, RunOptions, prompt
from ai_assets.testing import FakeOpenAIServer


class Extraction(BaseModel):
    sentiment: Literal["positive", "negative", "neutral"]
    aspects: list[str]
    stars: int


async def raw_sdk(base_url: str, texts: list[str], concurrency: int) -> float:
    client = AsyncOpenAI(base_url=base_url, api_key="bench", max_retries=0)
    gate = asyncio.Semaphore(concurrency)

    async def one(text: str) -> str | None:
        async with gate:
            reply = await client.chat.completions.create(model="bench", messages=[{"role": "user", "content": text}])
            return reply.choices[0].message.content

    started = time.perf_counter()
    await asyncio.gather(*(one(t) for t in texts))
    elapsed = time.perf_counter() - started
    await client.close()
    return len(texts) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.1)
    args = parser.parse_args()
    limit = args.concurrency / args.latency
    results: dict[str, float] = {}
    with FakeOpenAIServer(latency=args.latency) as server:
        llm = OpenAICompatibleProvider("bench", base_url=server.base_url, api_key="bench")
        options = RunOptions(concurrency=args.concurrency)
        for run in range(2):  # every measurement twice, interleaved, best of two: the box is shared and noisy
            texts = [f"run {run} review {i}: the battery is fine" for i in range(args.rows)]
            table = pa.table({"text": texts})
            results[f"raw openai.AsyncOpenAI + semaphore #{run}"] = asyncio.run(
                raw_sdk(server.base_url, [f"sdk {t}" for t in texts], args.concurrency))
            started = time.perf_counter()  # the whole call: templates, requests, parsing, Arrow output
            prompt(table, "{text}", provider=llm, options=options)
            results[f"ai_assets prompt (plain) #{run}"] = args.rows / (time.perf_counter() - started)
            started = time.perf_counter()
            prompt(table, "{text}", provider=llm, return_format=Extraction, options=options)
            results[f"ai_assets prompt (structured) #{run}"] = args.rows / (time.perf_counter() - started)
    print(f"N={args.rows} rows, {args.concurrency} in flight, {args.latency * 1000:.0f} ms latency; "
          f"limit {limit:.0f} rows/s")
    for name in ("raw openai.AsyncOpenAI + semaphore", "ai_assets prompt (plain)", "ai_assets prompt (structured)"):
        best = max(results[f"{name} #0"], results[f"{name} #1"])
        print(f"  {name:<38} {best:7.1f} rows/s  {best / limit:5.2f} of limit")


if __name__ == "__main__":
    main()
