"""embed_text with sentence-transformers vs raw ``SentenceTransformer.encode`` at its best batch size.

    python bench/bench_embed.py [--rows 2000]
"""

from __future__ import annotations

import argparse
import time

import pyarrow as pa

from ai_assets import SentenceTransformersProvider, embed_text


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2000)
    args = parser.parse_args()
    words = ["battery", "screen", "camera", "price", "delivery", "support", "sound", "fit", "colour", "weight"]
    texts = [f"Review {i}: the {words[i % 10]} is {'great' if i % 3 else 'poor'}, and the {words[(i * 7) % 10]} "
             f"{'could be better' if i % 2 else 'works as described'} after {i % 30} days." for i in range(args.rows)]
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
    print(f"N={args.rows} texts, all-MiniLM-L6-v2 on {provider.device}")
    for batch_size, rate in raw.items():
        print(f"  raw encode batch_size={batch_size:<4} {rate:8.1f} texts/s")
    print(f"  ai_assets embed_text (batch {best})  {max(ours):8.1f} texts/s  {max(ours) / raw[best]:5.2f} of raw best")


if __name__ == "__main__":
    main()
