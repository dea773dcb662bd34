"""semantic_join and semantic_dedup over generated company names with a brute-force truth, in one run:

* join: ``n`` left variants against ``n`` clean names; for each k, the pairs sent (counted on the verifier's server)
  against the ``n * n`` of brute force, and the recall of the matched pairs against the truth; then a second day
  of ``n / 4`` left rows added to the other ``3n / 4``: the pairs it sends;
* dedup: ``n`` entities with 1-4 dirty rows each; pairs sent against all pairs, pairwise F1 against the truth.

Blocking with all-MiniLM-L6-v2 on the CPU; the verifier answers from the truth (tests/semantic_pairs_world.py), so
the figures measure the blocking and the clustering, not a model.

    python bench/bench_semantic_pairs.py [--entities 200]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ai_assets import OpenAICompatibleProvider, ResultCache, RunOptions, SentenceTransformersProvider
from ai_assets.functions.semantic.dedup import semantic_dedup
from ai_assets.functions.semantic.join import semantic_join
from tests.semantic_pairs_world import Verifier, dedup_world, join_world, pairwise_f1, serve

CONDITION = "A and B are the same company"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entities", type=int, default=200)
    n = parser.parse_args().entities
    minilm = SentenceTransformersProvider(device="cpu")
    options = RunOptions(on_error="null", concurrency=16)
    world, day1, right = join_world(n, seed=1)
    judge = Verifier(world)
    with serve(judge) as url, tempfile.TemporaryDirectory() as tmp:
        llm = OpenAICompatibleProvider("verifier", base_url=url, api_key="unused")
        truth = {(a, b) for a in day1 for b in right if world.same(a, b)}
        for k in (1, 3, 5, 10):
            judge.requests = 0
            start = time.perf_counter()
            out = semantic_join(pa.table({"name": day1}), pa.table({"name": right}), "name", "name", CONDITION,
                                provider=llm, embedder=minilm, k=k, options=options)
            found = {(a, b) for a, b, m in zip(out.table["left_name"].to_pylist(),
                                               out.table["right_name"].to_pylist(), out.table["match"].to_pylist(),
                                               strict=True) if m}
            print(f"join k={k:<2} left={len(day1)} right={len(right)}: pairs sent {judge.requests} "
                  f"(brute force {out.brute_force}, {judge.requests / out.brute_force:.1%}), recall "
                  f"{len(found & truth) / len(truth):.3f}, {time.perf_counter() - start:.1f}s")
        cache = ResultCache(Path(tmp) / "journal.sqlite")
        quarter = day1[: n // 4]
        semantic_join(pa.table({"name": day1[n // 4:]}), pa.table({"name": right}), "name", "name", CONDITION,
                      provider=llm, embedder=minilm, k=5, cache=cache, options=options)
        judge.requests = 0
        semantic_join(pa.table({"name": day1}), pa.table({"name": right}), "name", "name", CONDITION,
                      provider=llm, embedder=minilm, k=5, cache=cache, options=options)
        added = judge.requests
        judge.requests = 0
        semantic_join(pa.table({"name": day1}), pa.table({"name": right}), "name", "name", CONDITION,
                      provider=llm, embedder=minilm, k=5, cache=cache, options=options)
        print(f"join incremental k=5: {len(quarter)} left rows added send {added} pairs "
              f"({len(quarter)} x 5); a re-run sends {judge.requests}")
        world, rows, entities = dedup_world(n, seed=2)
        judge.world = world
        for threshold in (0.5, 0.6):
            judge.requests = 0
            start = time.perf_counter()
            dedup = semantic_dedup(pa.table({"name": rows}), "name", provider=llm, embedder=minilm, k=5,
                                   threshold=threshold, options=options)
            f1 = pairwise_f1(dedup.table["cluster_id"].to_pylist(), entities)
            print(f"dedup k=5 threshold={threshold} rows={len(rows)} distinct={len(set(rows))}"
                  f": pairs sent {judge.requests} (all pairs {dedup.brute_force}, "
                  f"{judge.requests / dedup.brute_force:.1%}), pairwise F1 {f1:.3f}, "
                  f"{time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    main()
