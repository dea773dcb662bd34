"""Prompt-cache ordering against caches that behave like real ones, in one run.

* The fake server writes a prefix into its cache once a request *has run* (as OpenAI, vLLM and llama.cpp do; see
  ``ai_assets.testing.prefix_cache``). 2,000 questions over 20 documents (~1,300 tokens each), shuffled, 64 in
  flight, 0.2 s a request. The best possible share is that of rows sent one at a time (every row but the first of
  its document finds the prefix cached). Then the same against a small cache (an LRU of 8 blocks, ~2 prefixes),
  as a provider's cache shared with other traffic.
* The embedded llama.cpp (SmolLM2-135M, 2 slots, its own per-slot prompt cache): prompt tokens it reports as
  reused (``usage.prompt_tokens_details.cached_tokens``, its ``timings.cache_n``) with and without ordering.

    python bench/bench_prompt_cache.py [--rows 2000] [--llama-rows 12] [--no-llama] [--no-fake]
"""

from __future__ import annotations

import argparse
import random
import time

import pyarrow as pa

from ai_assets import OpenAICompatibleProvider, PromptParams, RetryPolicy, RunOptions, Usage, prompt
from ai_assets.providers.protocols import Prompter
from ai_assets.testing import FakeOpenAIServer

TEMPLATE = "{doc}\n\nQuestion: {question}"
WORDS = ["river", "stone", "lantern", "copper", "meadow", "orbit", "velvet", "harbor", "signal", "timber",
         "quartz", "ember", "canyon", "ribbon", "falcon", "marble", "thistle", "beacon", "glacier", "saddle"]


def shuffled(groups: int, rows: int, words: int) -> pa.Table:
    rng = random.Random(7)
    documents = [f"Document {g}. " + " ".join(f"{WORDS[(g * 7 + i * 3) % len(WORDS)]}{g}" for i in range(words))
                 for g in range(groups)]
    pairs = [(documents[i % groups], f"question {i} about document {i % groups}?") for i in range(rows)]
    rng.shuffle(pairs)
    return pa.table({"doc": [p[0] for p in pairs], "question": [p[1] for p in pairs]})


def run(table: pa.Table, provider: Prompter, params: PromptParams | None = None, **options: object
        ) -> tuple[Usage, float]:
    started = time.perf_counter()
    usage = prompt(table, TEMPLATE, provider=provider, params=params,
                   options=RunOptions(**options)).usage  # type: ignore[arg-type]
    return usage, time.perf_counter() - started


def share(usage: Usage) -> float:
    return usage.cached_tokens / max(1, usage.prompt_tokens)


def fake_server(rows: int) -> None:
    table = shuffled(20, rows, 800)
    with FakeOpenAIServer() as server:
        llm = OpenAICompatibleProvider("fake-model", base_url=server.base_url, api_key="k")
        for blocks, label in ((4096, "large cache"), (8, "small cache (8 blocks)")):
            server.set_prefix_cache(blocks, write="completion")
            server.set_latency(0.0)
            server.reset()
            best, _ = run(table, llm, concurrency=1)
            server.set_latency(0.2)
            server.reset()
            plain, plain_s = run(table, llm, concurrency=64, order_by_prefix=False)
            server.reset()
            ordered, ordered_s = run(table, llm, concurrency=64, order_by_prefix=True)
            print(f"fake server, {label}, written at completion, {rows:,} rows, 64 in flight: cached share "
                  f"best {share(best):.3f} | shuffled {share(plain):.3f} in {plain_s:.1f}s | ordered "
                  f"{share(ordered):.3f} in {ordered_s:.1f}s = {share(ordered) / share(best):.2f} of best, "
                  f"{share(ordered) / max(share(plain), 1e-9):.2f}x shuffled, time {ordered_s / plain_s:.2f}x")


def llama(rows: int) -> None:
    from ai_assets.providers.llama_cpp import LlamaCppProvider

    table = shuffled(3, rows, 700)
    for ordered in (False, True):
        with LlamaCppProvider(parallel=2, context=2048) as local:  # a fresh server: no slot holds a prefix yet
            usage, seconds = run(table, local, PromptParams(max_output_tokens=4), concurrency=2,
                                 order_by_prefix=ordered, timeout_s=900, retry=RetryPolicy(max_attempts=1))
            print(f"llama.cpp, 2 slots, {rows} rows over 3 prefixes, order_by_prefix={ordered!s:5}: prompt tokens "
                  f"reused {usage.cached_tokens:,} of {usage.prompt_tokens:,} ({share(usage):.3f}) in "
                  f"{seconds:.0f}s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--llama-rows", type=int, default=12)
    parser.add_argument("--no-llama", action="store_true")
    parser.add_argument("--no-fake", action="store_true")
    args = parser.parse_args()
    if not args.no_fake:
        fake_server(args.rows)
    if not args.no_llama:
        llama(args.llama_rows)


if __name__ == "__main__":
    main()
