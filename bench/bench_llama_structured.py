"""Structured prompts on the embedded llama.cpp (SmolLM2-135M): ai_assets ``prompt`` against a lean client that sends
the very same request bodies to the same kind of server at the same parallelism (a semaphore, aiohttp, no retries,
no journal), one fresh server per pass so that neither side finds the other's prompts in llama.cpp's prompt cache.

Prints each pass's time and the ratio lean / ai_assets (1.0: as fast as the lean client; the target is >= 0.9), the
requests per row, and whether both sides got identical answers (temperature 0). Passes alternate (lean, ai_assets,
then ai_assets, lean with --rounds 2) and the best of each side counts; the machine may be shared, so keep runs short.

    python bench/bench_llama_structured.py [--rows 40] [--parallel 4] [--rounds 1] [--plain]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from typing import Annotated, Any, Literal

import aiohttp
import pyarrow as pa
from pydantic import BaseModel, Field, StringConstraints

from ai_assets import LlamaCppProvider, PromptParams, RunOptions, prompt

Aspect = Annotated[str, StringConstraints(max_length=24)]
SYSTEM = "Extract the sentiment, the aspects mentioned and a short summary of the product review."
PRODUCTS = ["Aurora X2 phone", "Pulse earbuds", "Nimbus laptop", "Orbit watch", "Echo speaker"]
PARTS = ["battery", "screen", "sound", "hinge", "strap", "charger", "camera", "keyboard"]
MOODS = ["is excellent and lasts", "broke after a week", "is fine but a bit slow", "feels cheap", "exceeded my hopes"]
PARAMS = PromptParams(temperature=0.0, max_output_tokens=200)


class ReviewInsight(BaseModel):
    """The demo's extraction schema (definitions.py)."""

    sentiment: Literal["positive", "negative", "mixed"] = Field(description="overall sentiment of the review")
    aspects: list[Aspect] = Field(max_length=3, description="product aspects mentioned, e.g. battery, screen")
    summary: str = Field(max_length=80, description="the review in at most ten words")


def reviews(n: int) -> list[str]:
    return [f"Product: {PRODUCTS[i % 5]}\nReview: The {PARTS[i % 8]} {MOODS[(i // 8) % 5]}; the "
            f"{PARTS[(i * 3 + 1) % 8]} {MOODS[(i * 7 + 2) % 5]}. ({i})" for i in range(n)]


async def lean(provider: LlamaCppProvider, texts: list[str], fmt: type[BaseModel] | None) -> list[Any]:
    bodies = [provider.chat_request([{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}], fmt,
                                    PARAMS.as_request()) for text in texts]
    gate = asyncio.Semaphore(provider.parallel)
    headers = {"content-type": "application/json"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=provider.parallel),
                                     timeout=aiohttp.ClientTimeout(total=None)) as session:

        async def one(body: dict[str, Any]) -> Any:
            async with gate, session.post(f"{provider.base_url}/chat/completions", data=json.dumps(body),
                                          headers=headers) as response:
                content = json.loads(await response.read())["choices"][0]["message"]["content"]
                return json.loads(content) if fmt is not None else content

        return list(await asyncio.gather(*(one(body) for body in bodies)))


def one_pass(side: str, texts: list[str], parallel: int, fmt: type[BaseModel] | None) -> tuple[float, list[Any], int]:
    with LlamaCppProvider(parallel=parallel) as provider:
        started = time.perf_counter()
        if side == "lean":
            answers = asyncio.run(lean(provider, texts, fmt))
            return time.perf_counter() - started, answers, len(texts)
        out = prompt(pa.table({"text": texts}), "{text}", provider=provider, return_format=fmt, system_message=SYSTEM,
                     params=PARAMS, options=RunOptions(concurrency=parallel))
        elapsed = time.perf_counter() - started
        column = out.table.column("response").to_pylist()
        return elapsed, column, out.usage.requests


def measure(name: str, texts: list[str], parallel: int, rounds: int, fmt: type[BaseModel] | None) -> float:
    best = {"lean": float("inf"), "ai_assets": float("inf")}
    answers: dict[str, list[Any]] = {}
    for number in range(rounds):
        order = ["lean", "ai_assets"] if number % 2 == 0 else ["ai_assets", "lean"]
        for side in order:
            elapsed, got, requests = one_pass(side, texts, parallel, fmt)
            best[side] = min(best[side], elapsed)
            answers[side] = got
            print(f"  {name} {side:<9} {elapsed:7.1f}s  {requests / len(texts):.2f} requests a row  "
                  f"(load {os.getloadavg()[0]:.1f})", flush=True)
    ratio = best["lean"] / best["ai_assets"]
    same = answers["lean"] == answers["ai_assets"]
    print(f"{name}: ai_assets {ratio:.2f}x the lean client ({len(texts)} rows, parallel {parallel}, best of "
          f"{rounds}); identical answers: {same}")
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=40)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--plain", action="store_true", help="also measure plain (unstructured) prompts")
    args = parser.parse_args()
    texts = reviews(args.rows)
    measure("structured", texts, args.parallel, args.rounds, ReviewInsight)
    if args.plain:
        measure("plain", texts, args.parallel, args.rounds, None)


if __name__ == "__main__":
    main()
