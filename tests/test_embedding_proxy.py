"""An embedding model as a certified cascade's proxy (issue 30: ``proxy=<cheap model or an embedding model>``).

LOTUS (``ProxyModel.EMBEDDING_MODEL``) and BARGAIN (Zeighami et al., SIGMOD 2026) use an embedding model as the
cheapest proxy: its score only has to order rows by how far to trust them, and the threshold learned from the
oracle's uniform sample carries the guarantee whatever the proxy's quality.

The generated task with a known truth: the fake server's "strong" model (the oracle) answers the truth; the proxy
embeds a column of phrases, each picked so that the nearest label of its fake-server embedding (a deterministic
vector per text, ``ai_assets.testing.handlers.embedding_for``) is the truth on a seeded ``1 - NOISE`` of the rows and
the other label on the rest, the wrong ones among the phrases nearest the boundary (an informative score, as a real
embedding's margin is).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pytest
from pydantic import BaseModel, Field

from ai_assets import Cascade, OpenAICompatibleProvider, Prices, embed_text, prompt
from ai_assets.functions.embedding_proxy import EmbeddingProxy
from ai_assets.functions.nearest_label import score
from ai_assets.runtime.cache.sqlite import ResultCache
from ai_assets.runtime.guarantees import Accuracy, Precision, Recall, Target
from ai_assets.testing import FakeOpenAIServer
from tests.certified_replay import replay
from tests.embedding_proxy_task import LABELS, phrases

ROWS, BUDGET, DELTA, RUNS = 1200, 300, 0.05, 60
TEMPLATE = "Is {text} about cats?"
EMBEDDING = "fake-embedding"
PRICES = {EMBEDDING: Prices(0.02, 0.0), "strong": Prices(2.5, 10.0)}


class Match(BaseModel):
    match: bool
    confidence: float = Field(ge=0, le=1)


class Topic(BaseModel):
    topic: Literal["cats", "dogs", "birds"]
    confidence: float = Field(ge=0, le=1)


def task(server: FakeOpenAIServer, llm: OpenAICompatibleProvider, journal: ResultCache,
         rows: int = ROWS) -> tuple[pa.Table, list[bool]]:
    """Rows, and the oracle's truth for each (its answers journalled: the cascade takes them from there)."""
    table = pa.table({"text": [f"item {i}" for i in range(rows)]})
    strong = prompt(table, TEMPLATE, provider=llm, return_format=Match, model="strong", cache=journal).table
    truth = [a["match"] for a in strong.column("response").to_pylist()]
    return table.append_column("phrase", pa.array(phrases(truth, server.embedding_dim))), truth


def embedder(server: FakeOpenAIServer) -> OpenAICompatibleProvider:
    return OpenAICompatibleProvider("strong", base_url=server.base_url, api_key="sk-embed-secret-key",
                                    embedding_model=EMBEDDING)


def certified(server: FakeOpenAIServer | None, target: Target, **settings: Any) -> Cascade:
    """The certified cascade of these tests: the oracle "strong", the proxy embedding ``phrase`` (the fake
    server's embedder unless ``embedder=`` is given)."""
    vectors = settings.pop("embedder", None)
    assert vectors is not None or server is not None
    proxy = EmbeddingProxy(vectors or embedder(server), "phrase", settings.pop("labels", LABELS))  # type: ignore[arg-type]
    return Cascade(["strong"], proxy=proxy, target=target, label_field="match", confidence_field="confidence",
                   delta=DELTA, label_budget=settings.pop("label_budget", BUDGET), prices=PRICES, **settings)


# -- the Must-show: the stated target holds in >= 1 - delta of the seeded runs -----------------------------------

@pytest.mark.parametrize("target", [Recall(0.9), Precision(0.9), Accuracy(0.9)], ids=str)
def test_an_embedding_proxy_meets_the_stated_target_in_at_least_1_minus_delta_of_seeded_runs(
        target: Target, server: FakeOpenAIServer, llm: OpenAICompatibleProvider, tmp_path: Path) -> None:
    """BARGAIN's guarantee, whatever the proxy: over the uniform sample's randomness the output meets the target
    with probability >= 1 - delta. One real run through the fake server; the other seeds replay its choice from
    the journalled answers (the proxy's from ``embed_text`` on the same journal: 0 requests) with the same
    ``sample_rows`` and ``learn`` (the bench runs 200 seeds)."""
    journal = ResultCache(tmp_path / "journal.sqlite")
    table, truth = task(server, llm, journal)
    server.reset()
    out = prompt(table, TEMPLATE, provider=llm, return_format=Match, cascade=certified(server, target),
                 cache=journal)
    stats = server.stats()
    assert stats.chat_requests == 0  # the oracle's answers were journalled: only embeddings were paid
    assert stats.embedding_inputs == len(set(table.column("phrase").to_pylist())) + len(LABELS)

    server.reset()
    vectors = embed_text(table, "phrase", provider=embedder(server), cache=journal).table.column("embedding")
    anchors = embed_text(pa.table({"t": list(LABELS.values())}), "t", provider=embedder(server), cache=journal)
    assert server.stats().requests == 0  # the proxy's embeddings are embed_text's: the same journal keys
    unit = np.asarray(anchors.table.column("embedding").to_pylist())
    nearest, confidence, _ = score(vectors.to_pylist(), [None] * ROWS, unit, 0.05)
    proxy = [list(LABELS)[i] for i in nearest]
    assert 0.05 < sum(p != t for p, t in zip(proxy, truth, strict=True)) / ROWS < 0.15  # the generator's noise

    runs = [replay(target, DELTA, BUDGET, seed, proxy, confidence, truth) for seed in range(RUNS)]
    held = sum(run.measure >= target.value for run in runs) / RUNS
    assert held >= 1 - DELTA, f"{target} held in {held:.3f} of {RUNS} runs"
    assert sum(run.oracle_share for run in runs) / RUNS < 0.9  # the proxy answered some rows on its own

    certificate = out.usage.certificate
    assert certificate is not None
    assert certificate.oracle_share == pytest.approx(runs[0].oracle_share)
    models = out.table.column("response_model").to_pylist()
    assert models.count("strong") == certificate.oracle_rows and models.count(EMBEDDING) == ROWS - models.count(
        "strong")
    kept = [a for a, m in zip(out.table.column("response").to_pylist(), models, strict=True) if m == EMBEDDING]
    assert all(set(a) == {"match", "confidence"} and 0.5 <= a["confidence"] <= 1 for a in kept)
    summary = certificate.summary()
    assert summary["guarantee"].startswith(f"{target.kind} >= 0.9 with probability >= 0.95")
    assert set(out.usage.models) == {EMBEDDING, "strong"}


def test_a_rerun_pays_no_request_and_gives_the_same_answers(server: FakeOpenAIServer,
                                                           llm: OpenAICompatibleProvider, tmp_path: Path) -> None:
    """The journal's promise, counted on the server: rows' and labels' embeddings, the oracle's sample and the
    learned threshold are all journalled, so a re-run sends nothing at all."""
    journal = ResultCache(tmp_path / "journal.sqlite")
    table, _ = task(server, llm, ResultCache(tmp_path / "truth.sqlite"), rows=500)
    cascade = certified(server, Accuracy(0.9), label_budget=150)
    server.reset()
    first = prompt(table, TEMPLATE, provider=llm, return_format=Match, cascade=cascade, cache=journal)
    stats = server.stats()
    assert stats.embedding_requests > 0 and 150 <= stats.models["strong"] <= 500
    assert first.usage.certificate is not None
    ratio = first.usage.certificate.summary()["cost_vs_all_oracle"]  # realised cost against all-oracle
    assert ratio is not None and ratio < 1.0
    server.reset()
    again = prompt(table, TEMPLATE, provider=llm, return_format=Match, cascade=cascade, cache=journal)
    assert server.stats().requests == 0
    assert again.table.equals(first.table)
    assert again.usage.certificate is not None and again.usage.certificate.reused


def test_a_yaml_prompt_component_takes_an_embedding_proxy(server: FakeOpenAIServer, llm: OpenAICompatibleProvider,
                                                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The YAML ``cascade:`` block says the proxy (its embedder as in the resources block, the key read from its
    ``api_key_env``); the materialization's metadata carries the certificate and the rows say who answered."""
    import dagster as dg

    from ai_assets.dagster import OpenAICompatibleResource, ParquetIOManager
    from ai_assets.dagster.components import PromptComponent

    table, _ = task(server, llm, ResultCache(tmp_path / "truth.sqlite"), rows=300)
    monkeypatch.setenv("PROXY_EMBED_KEY", "sk-proxy-secret-key")

    @dg.asset
    def reviews() -> pa.Table:
        return table

    component = PromptComponent.model_validate({
        "name": "verdicts", "upstream": "reviews", "template": TEMPLATE, "cache_key": None,
        "return_format": "tests.test_embedding_proxy:Match",
        "cascade": {"models": ["strong"], "confidence_field": "confidence",
                    "target": {"measure": "accuracy", "value": 0.9, "label_field": "match", "label_budget": 100},
                    "proxy": {"provider": {"kind": "openai", "model": "unused", "base_url": server.base_url,
                                           "embedding_model": EMBEDDING, "api_key_env": "PROXY_EMBED_KEY"},
                              "column": "phrase", "labels": {True: LABELS[True], False: LABELS[False]}}}})
    result = dg.materialize([reviews, component.asset()], resources={
        "llm": OpenAICompatibleResource(model="unused", base_url=server.base_url, api_key="k"),
        "io_manager": ParquetIOManager(root=str(tmp_path / "out"))})
    stored = ParquetIOManager(root=str(tmp_path / "out")).store(dg.AssetKey("verdicts"), {}).read()
    assert set(stored.column("verdicts_model").to_pylist()) <= {"strong", EMBEDDING}
    metadata = result.asset_materializations_for_node("verdicts")[0].metadata
    assert metadata["ai/cascade_guarantee"].value.startswith("accuracy >= 0.9")
    assert "sk-proxy-secret-key" not in repr(metadata)
    with pytest.raises(Exception, match="at least 2"):
        PromptComponent.model_validate({"name": "v", "upstream": "reviews", "template": "{text}",
                                        "cascade": {"models": ["one"]}})
