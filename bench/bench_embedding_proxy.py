"""Certified cascades with an embedding model as the proxy (issue 30): does the stated target hold in >= 1 - delta of
200 seeded runs, what share of the rows still goes to the oracle, and at what cost against sending every row to it?

The task has a known truth (``tests/embedding_proxy_task.py``): the fake server's "strong" model (the oracle, at
gpt-4o prices) answers it; the proxy (the fake server's embeddings, at text-embedding-3-small prices) embeds a
phrase per row whose nearest label is wrong on about 10 % of the rows, mostly near the boundary. Per target: one
real certified run through the fake server (its own journal), the proxy's answer to every row (``embed_text`` on
the same journal: no request) and the truth (from a separate journal), then 199 more seeded runs replayed from
those answers with the same ``sample_rows`` and ``learn`` (``tests/certified_replay.py``), and a re-run of the real
one, counted on the server.

    python bench/bench_embedding_proxy.py [--rows 5000] [--budget 500] [--runs 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, Field

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: the task is in tests/

from results import save

from ai_assets import Cascade, OpenAICompatibleProvider, embed_text, prompt
from ai_assets.functions.embedding_proxy import TEMPERATURE, EmbeddingProxy
from ai_assets.functions.nearest_label import score
from ai_assets.runtime.cache.sqlite import ResultCache
from ai_assets.runtime.guarantees import Accuracy, Precision, Recall, Target
from ai_assets.runtime.prices import lookup
from ai_assets.testing import FakeOpenAIServer
from tests.certified_replay import replay
from tests.embedding_proxy_task import LABELS, phrases

DELTA = 0.05
TEMPLATE = "Is {text} about cats?"
EMBEDDING = "text-embedding-3-small"


class Match(BaseModel):
    match: bool
    confidence: float = Field(ge=0, le=1)


def one(server: FakeOpenAIServer, target: Target, rows: int, budget: int, runs: int) -> dict[str, float | str]:
    embedding, strong = lookup(EMBEDDING), lookup("gpt-4o")
    assert embedding is not None and strong is not None
    llm = OpenAICompatibleProvider("unused", base_url=server.base_url, api_key="k")
    embedder = OpenAICompatibleProvider("unused", base_url=server.base_url, api_key="k", embedding_model=EMBEDDING)
    table = pa.table({"text": [f"item {i}" for i in range(rows)]})
    with tempfile.TemporaryDirectory() as folder:
        oracle = prompt(table, TEMPLATE, provider=llm, return_format=Match, model="strong",
                        cache=ResultCache(Path(folder) / "truth.sqlite"))
        truth = [a["match"] for a in oracle.table.column("response").to_pylist()]
        table = table.append_column("phrase", pa.array(phrases(truth, server.embedding_dim)))
        cascade = Cascade(["strong"], proxy=EmbeddingProxy(embedder, "phrase", LABELS), target=target,
                          delta=DELTA, label_budget=budget, label_field="match", confidence_field="confidence",
                          prices={EMBEDDING: embedding, "strong": strong})
        journal = ResultCache(Path(folder) / "journal.sqlite")
        server.reset()
        out = prompt(table, TEMPLATE, provider=llm, return_format=Match, cascade=cascade, cache=journal)
        server.reset()
        prompt(table, TEMPLATE, provider=llm, return_format=Match, cascade=cascade, cache=journal)
        rerun_requests = server.stats().requests
        vectors = embed_text(table, "phrase", provider=embedder, cache=journal).table.column("embedding")
        anchors = embed_text(pa.table({"t": list(LABELS.values())}), "t", provider=embedder, cache=journal)
    nearest, confidence, _ = score(vectors, [None] * rows,
                                   np.asarray(anchors.table.column("embedding").to_pylist()), TEMPERATURE)
    labels = [list(LABELS)[i] for i in nearest]
    replays = [replay(target, DELTA, budget, seed, labels, confidence, truth) for seed in range(runs)]
    certificate = out.usage.certificate
    assert certificate is not None
    all_oracle = certificate.all_oracle_cost_usd or 0.0
    proxy_cost = out.usage.models[EMBEDDING].cost(embedding)
    ratios = [(proxy_cost + r.oracle_share * all_oracle) / all_oracle for r in replays] if all_oracle else [0.0]
    return {
        "target": str(target), "delta": DELTA, "rows": rows, "label_budget": budget, "runs": runs,
        "proxy_error_rate": round(sum(p != t for p, t in zip(labels, truth, strict=True)) / rows, 4),
        "held_share": sum(r.measure >= target.value for r in replays) / runs,
        "worst_measure": round(min(r.measure for r in replays), 4),
        "mean_measure": round(statistics.fmean(r.measure for r in replays), 4),
        "mean_oracle_share": round(statistics.fmean(r.oracle_share for r in replays), 4),
        "mean_cost_vs_all_oracle": round(statistics.fmean(ratios), 4),
        "real_run_oracle_share": round(certificate.oracle_share, 4),
        "real_run_cost_vs_all_oracle": certificate.summary()["cost_vs_all_oracle"],
        "proxy_cost_usd": round(proxy_cost, 6),
        "rerun_requests": rerun_requests,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--budget", type=int, default=500)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    figures = {}
    with FakeOpenAIServer() as server:
        for target in (Recall(0.95), Precision(0.9), Accuracy(0.95)):
            result = one(server, target, args.rows, args.budget, args.runs)
            figures[target.kind] = result
            print(" | ".join(f"{k} {v}" for k, v in result.items()), flush=True)
    save("embedding_proxy", figures)


if __name__ == "__main__":
    main()
