"""Semantic top-k and aggregate (issue 30): how many requests a first run, a re-run and a re-run after adding rows
pay, and how close a noisy judge's top k is to the brute-force one.

The judge (``tests/semantic_rows_judge.py``) answers from scores planted in the documents: a comparison names the
document with the higher score as it perceives it (the score plus a fixed per-document error of up to
``--noise`` on a 0-100 scale); an aggregation sums the ``value=`` it reads. Requests are counted on the judge.

    python bench/bench_semantic_rows.py [--rows 1000] [--added 50] [--k 10] [--noise 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: the judge is in tests/

from results import save

from ai_assets import OpenAICompatibleProvider, RunOptions
from ai_assets.functions.semantic.aggregate import semantic_aggregate
from ai_assets.functions.semantic.top_k import semantic_top_k
from ai_assets.runtime.cache.sqlite import ResultCache
from tests.semantic_rows_judge import Judge
from tests.test_semantic_rows import documents, truth

QUERY = "Which document has the highest score?"


def top_k(rows: int, added: int, k: int, noise: float, embed: int | None) -> dict[str, float]:
    judge = Judge(noise=noise).start()
    llm = OpenAICompatibleProvider("judge", base_url=judge.base_url, api_key="unused")
    options = RunOptions(concurrency=16, on_error="null")
    extra = {"embedder": llm, "candidates": embed} if embed else {"max_candidates": rows + added}
    try:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "journal.sqlite"
            old = documents(rows, seed=1)
            start = time.perf_counter()
            out = semantic_top_k(old, "text", QUERY, k, provider=llm, cache=ResultCache(path), options=options,
                                 **extra)
            seconds = time.perf_counter() - start
            first = judge.seen["compare"]
            semantic_top_k(old, "text", QUERY, k, provider=llm, cache=ResultCache(path), options=options, **extra)
            rerun = judge.seen["compare"] - first
            both = pa.concat_tables([old, documents(added, seed=2, start=rows)])
            semantic_top_k(both, "text", QUERY, k, provider=llm, cache=ResultCache(path), options=options, **extra)
            grown = judge.seen["compare"] - first - rerun
            cold = Judge(noise=noise).start()
            cold_llm = OpenAICompatibleProvider("judge", base_url=cold.base_url, api_key="unused")
            semantic_top_k(both, "text", QUERY, k, provider=cold_llm, options=options,
                           **({**extra, "embedder": cold_llm} if embed else extra))
            scratch = cold.seen["compare"]
            cold.stop()
    finally:
        judge.stop()
    found = set(out.table.column("id").to_pylist()[:k])
    return {"rows": rows, "k": k, "noise": noise, "candidates": embed or rows, "comparisons_first_run": first,
            "comparisons_rerun": rerun, "comparisons_after_adding": grown, "added_rows": added,
            "comparisons_from_scratch_after_adding": scratch, "all_pairs": rows * (rows - 1) // 2,
            "recall_at_k": len(found & set(truth(old, k))) / k, "first_run_s": round(seconds, 2)}


def aggregate(rows: int, added: int, budget: int) -> dict[str, float]:
    judge = Judge().start()
    llm = OpenAICompatibleProvider("judge", base_url=judge.base_url, api_key="unused")
    table = pa.table({"text": [f"entry {i}: value={i + 1} " + "x" * 80 for i in range(rows + added)]})
    try:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "journal.sqlite"
            out = semantic_aggregate(table.slice(0, rows), "text", "Sum the values.", provider=llm,
                                     max_input_tokens=budget, cache=ResultCache(path))
            first = judge.requests
            semantic_aggregate(table.slice(0, rows), "text", "Sum the values.", provider=llm,
                               max_input_tokens=budget, cache=ResultCache(path))
            rerun = judge.requests - first
            grown_out = semantic_aggregate(table, "text", "Sum the values.", provider=llm, max_input_tokens=budget,
                                           cache=ResultCache(path))
            grown = judge.requests - first - rerun
    finally:
        judge.stop()
    row = out.table.to_pylist()[0]
    return {"rows": rows, "budget_tokens": budget, "levels": row["aggregate_levels"], "requests_first_run": first,
            "requests_rerun": rerun, "added_rows": added, "requests_after_adding": grown,
            "levels_after_adding": grown_out.table.column("aggregate_levels")[0].as_py(),
            "exact": row["aggregate"] == f"value={rows * (rows + 1) // 2}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--added", type=int, default=50)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--noise", type=float, default=2.0)
    args = parser.parse_args()
    figures = {"top_k": top_k(args.rows, args.added, args.k, args.noise, None),
               "top_k_embedder_100": top_k(args.rows, args.added, args.k, args.noise, 100),
               "aggregate": aggregate(args.rows, args.added, 1000)}
    for name, result in figures.items():
        print(name, " | ".join(f"{k} {v}" for k, v in result.items()), flush=True)
    save("semantic_rows", figures)


if __name__ == "__main__":
    main()
