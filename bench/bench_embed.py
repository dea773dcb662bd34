"""Embedding throughput, one run, each figure the best of two interleaved measurements:

* local: ``embed_text`` with all-MiniLM-L6-v2 vs raw ``SentenceTransformer.encode`` at its best batch size;
* API: ``embed_text`` against the fake server (100 texts a request, 8 in flight) vs a bare aiohttp client asking
  for the same base64 vectors (``bench/bare_client.py``).

    python bench/bench_embed.py [--rows 2000] [--api-texts 50000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).parent))
import bare_client
import results

from ai_assets import OpenAICompatibleProvider, RunOptions, SentenceTransformersProvider, embed_text
from ai_assets.testing import FakeOpenAIServer


def review_texts(n: int, tag: str = "") -> list[str]:
    words = ["battery", "screen", "camera", "price", "delivery", "support", "sound", "fit", "colour", "weight"]
    return [f"Review {tag}{i}: the {words[i % 10]} is {'great' if i % 3 else 'poor'}, and the {words[(i * 7) % 10]} "
            f"{'could be better' if i % 2 else 'works as described'} after {i % 30} days." for i in range(n)]


def local(rows: int) -> None:
    texts = review_texts(rows)
    provider = SentenceTransformersProvider(device="cpu")
    model = provider.model
    model.encode(texts[:64])  # warm-up
    raw: dict[int, float] = {}
    for batch_size in (16, 32, 64, 128):
        started = time.perf_counter()
        model.encode(texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False)
        raw[batch_size] = len(texts) / (time.perf_counter() - started)
    best = max(raw, key=lambda b: raw[b])
    provider.batch_size = best
    table = pa.table({"text": texts})
    ours = []
    for _ in range(2):
        started = time.perf_counter()
        embed_text(table, "text", provider=provider)
        ours.append(len(texts) / (time.perf_counter() - started))
        started = time.perf_counter()
        model.encode(texts, batch_size=best, normalize_embeddings=True, show_progress_bar=False)
        raw[best] = max(raw[best], len(texts) / (time.perf_counter() - started))
    print(f"local: N={rows} texts, all-MiniLM-L6-v2 on {provider.device}")
    for batch_size, rate in raw.items():
        print(f"  raw encode batch_size={batch_size:<4} {rate:8.1f} texts/s")
    print(f"  ai_assets embed_text (batch {best})  {max(ours):8.1f} texts/s  {max(ours) / raw[best]:5.2f} of raw best")
    results.save("embed_local", {"raw_best": raw[best], "raw_best_batch_size": best, "ai_assets": max(ours),
                                 **{f"raw_batch_{size}": rate for size, rate in raw.items()}})


def api(n: int) -> None:
    bare, ours = [], []
    with FakeOpenAIServer(embedding_dim=256, track=False) as server:
        llm = OpenAICompatibleProvider("bench", base_url=server.base_url, api_key="bench")
        options = RunOptions(concurrency=8, batch_size=100)
        for run in range(2):
            bare.append(asyncio.run(bare_client.embeddings(server.base_url, review_texts(n, f"b{run}-"), 100, 8)))
            table = pa.table({"text": review_texts(n, f"a{run}-")})
            started = time.perf_counter()
            embed_text(table, "text", provider=llm, options=options)
            ours.append(n / (time.perf_counter() - started))
    print(f"API: N={n} texts, 100 a request, 8 in flight, 256-d base64 vectors, no latency")
    print(f"  bare aiohttp client            {max(bare):8.0f} texts/s")
    print(f"  ai_assets embed_text           {max(ours):8.0f} texts/s  {max(ours) / max(bare):5.2f} of the bare "
          "client (target >= 0.95)")
    results.save("embed_api", {"bare": max(bare), "ai_assets": max(ours)})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--api-texts", type=int, default=50_000)
    args = parser.parse_args()
    api(args.api_texts)
    local(args.rows)


if __name__ == "__main__":
    main()
