"""embed_text / classify_text with the bundled MiniLM and against the fake server."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from ai_assets import (
    NotSupportedError,
    OpenAICompatibleProvider,
    ResultCache,
    SentenceTransformersProvider,
    classify_text,
    embed_text,
)
from ai_assets.functions.classify import score_labels
from ai_assets.testing import FakeOpenAIServer

pytestmark = pytest.mark.slow

TEXTS = ["The battery lasts for days.", "Screen cracked after one drop.", None, "",
         "The battery lasts for days."]


@pytest.fixture(scope="module")
def minilm() -> SentenceTransformersProvider:
    return SentenceTransformersProvider(device="cpu")


def test_minilm_embeddings_are_fixed_size_float32(minilm: SentenceTransformersProvider) -> None:
    out = embed_text(pa.table({"text": TEXTS}), "text", provider=minilm)
    column = out.table.column("embedding")
    assert column.type == pa.list_(pa.float32(), 384)
    assert column.null_count == 2
    vectors = np.array([v for v in column.to_pylist() if v is not None], dtype=np.float32)
    assert not np.isnan(vectors).any()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(vectors[0], vectors[2])  # identical texts, one vector
    assert out.usage.deduplicated == 1 and out.usage.skipped == 2
    assert out.table.column("embedding_error").to_pylist()[2:4] == ["skipped: column 'text' is null",
                                                                     "skipped: empty input"]


def test_minilm_matches_a_direct_encode(minilm: SentenceTransformersProvider) -> None:
    texts = ["a red apple", "quantum chromodynamics"]
    ours = np.array(embed_text(pa.table({"t": texts}), "t", provider=minilm).table.column("embedding").to_pylist())
    direct = minilm.model.encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(ours, direct, atol=1e-5)


def test_cached_local_embeddings_are_not_recomputed(tmp_path: Path, minilm: SentenceTransformersProvider) -> None:
    cache = ResultCache(tmp_path / "c.sqlite")
    first = embed_text(pa.table({"t": ["one", "two"]}), "t", provider=minilm, cache=cache)
    second = embed_text(pa.table({"t": ["one", "two", "three"]}), "t", provider=minilm, cache=cache)
    assert second.usage.cache_hits == 2 and second.usage.sent_rows == 1
    assert second.table.column("embedding").to_pylist()[:2] == first.table.column("embedding").to_pylist()


def test_remote_embeddings_batch_and_cache(tmp_path: Path, server: FakeOpenAIServer,
                                           llm: OpenAICompatibleProvider) -> None:
    from ai_assets import RunOptions

    cache = ResultCache(tmp_path / "c.sqlite")
    table = pa.table({"t": [f"text {i}" for i in range(10)] + [None]})
    out = embed_text(table, "t", provider=llm, options=RunOptions(batch_size=4), cache=cache)
    assert out.table.column("embedding").type == pa.list_(pa.float32(), 32)
    assert server.stats().embedding_requests == 3  # 10 texts in batches of 4
    again = embed_text(table, "t", provider=llm, options=RunOptions(batch_size=4), cache=cache)
    assert server.stats().embedding_requests == 3
    assert again.table.column("embedding").equals(out.table.column("embedding"))


def test_classify_by_embedding_returns_label_and_score(minilm: SentenceTransformersProvider) -> None:
    labels = {"battery": "a review about battery life and charging",
              "screen": "a review about the display or screen breaking"}
    out = classify_text(pa.table({"text": TEXTS}), "text", labels, provider=minilm)
    column = out.table.column("classification")
    assert column.type == pa.struct([("label", pa.string()), ("score", pa.float32())])
    values = column.to_pylist()
    assert [v["label"] for v in values if v] == ["battery", "screen", "battery"]
    assert all(0.5 <= v["score"] <= 1.0 for v in values if v)
    assert values[2] is None and values[3] is None


def test_classify_by_llm_is_schema_valid(llm: OpenAICompatibleProvider) -> None:
    out = classify_text(pa.table({"text": ["great", "awful", None]}), "text", ["positive", "negative"],
                        provider=llm)
    values = out.table.column("classification").to_pylist()
    assert all(v["label"] in {"positive", "negative"} and 0 <= v["score"] <= 1 for v in values[:2])
    assert values[2] is None


def test_score_labels_picks_the_nearest() -> None:
    vectors = np.array([[1, 0], [0, 1], [0.9, 0.1]], dtype=np.float32)
    labels, scores = score_labels(vectors, np.array([[1, 0], [0, 1]], dtype=np.float32), ["x", "y"])
    assert labels == ["x", "y", "x"] and scores[0] > 0.99


def test_a_provider_without_the_capability_says_so(minilm: SentenceTransformersProvider) -> None:
    from ai_assets import prompt

    with pytest.raises(NotSupportedError, match="prompt is not supported by provider SentenceTransformersProvider"):
        prompt(pa.table({"t": ["x"]}), "{t}", provider=minilm)  # type: ignore[arg-type]
