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

import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, Field

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: the task is in tests/

from bench_certified_cascade import replayed, run_targets

from ai_assets import Cascade, OpenAICompatibleProvider, embed_text, prompt
from ai_assets.functions.embedding_proxy import TEMPERATURE, EmbeddingProxy
from ai_assets.functions.nearest_label import score
from ai_assets.runtime.cache.sqlite import ResultCache
from ai_assets.runtime.guarantees import Target
from ai_assets.runtime.prices import lookup
from ai_assets.testing import FakeOpenAIServer
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
    proxy_cost = out.usage.models[EMBEDDING].cost(embedding)
    figures = replayed(target, DELTA, out.usage, proxy_cost, labels, list(confidence), truth, budget, runs,
                       rerun_requests)
    return {**figures, "proxy_cost_usd": round(proxy_cost, 6)}


def main() -> None:
    run_targets("embedding_proxy", one)


if __name__ == "__main__":
    main()
