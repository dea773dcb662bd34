"""Gemini through its OpenAI-compatible endpoint: the quirks that affect ai_assets, against a fake that has them.

Documented behaviour modelled (ai.google.dev "OpenAI compatibility"; Google's "Gemini Batch API now supports
Embeddings and OpenAI Compatibility", September 2025): the base URL ``.../v1beta/openai/`` (with a path and a
trailing slash), the Gemini API key sent as ``Authorization: Bearer``, models named ``gemini-...`` (and
``gemini-embedding-001`` for embeddings), ``reasoning_effort`` (none / minimal / low / medium / high), structured
output through ``response_format`` (JSON schema), errors as a JSON list ``[{"error": {...}}]``, and the Batch API
through the OpenAI SDK's files and batches calls (``endpoint="/v1/chat/completions"``, 24 h window, half price).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
from pydantic import BaseModel

from ai_assets import OpenAICompatibleProvider, PromptParams, RunOptions, embed_text, prompt
from ai_assets.runtime.cache.sqlite import ResultCache
from ai_assets.runtime.errors import AIAssetsError
from ai_assets.runtime.options import BatchOptions
from ai_assets.testing import FakeOpenAIServer
from ai_assets.testing.gemini_server import FakeGeminiServer

KEY = "AIzaSy" + "Gq4Xk9Lm2Np7Rs" * 2
ROW_ERRORS = RunOptions(on_error="null")


class Review(BaseModel):
    sentiment: str
    stars: int


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeGeminiServer]:
    with FakeGeminiServer(in_process=True) as server:
        yield server


@pytest.fixture
def gemini(fake: FakeGeminiServer, monkeypatch: pytest.MonkeyPatch) -> OpenAICompatibleProvider:
    fake.set_faults()
    fake.reset()
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    return OpenAICompatibleProvider("gemini-2.5-flash", base_url=fake.base_url, api_key_env="GEMINI_API_KEY",
                                    embedding_model="gemini-embedding-001")


def rows(n: int, tag: str = "row") -> pa.Table:
    return pa.table({"id": list(range(n)), "text": [f"{tag} {i}" for i in range(n)]})


def test_structured_output_under_the_v1beta_openai_path_with_a_bearer_key(
        fake: FakeGeminiServer, gemini: OpenAICompatibleProvider) -> None:
    out = prompt(rows(20), "{text}", provider=gemini, return_format=Review, options=ROW_ERRORS)
    assert out.table.column("response").null_count == 0, out.table.column("response_error").drop_null()[:1]
    stats = fake.stats()
    assert stats.chat_requests == 20 and stats.models == {"gemini-2.5-flash": 20}


def test_reasoning_effort_is_sent_as_gemini_takes_it(gemini: OpenAICompatibleProvider) -> None:
    ok = prompt(rows(3), "{text}", provider=gemini, params=PromptParams(reasoning={"effort": "minimal"}),
                options=ROW_ERRORS)
    assert ok.table.column("response").null_count == 0
    bad = prompt(rows(3, "b"), "{text}", provider=gemini, params=PromptParams(reasoning={"effort": "extreme"}),
                 options=ROW_ERRORS)
    errors = bad.table.column("response_error").to_pylist()
    assert all("Invalid reasoning_effort 'extreme'" in (e or "") for e in errors), errors[:1]


def test_googles_list_shaped_errors_are_read_for_their_message(gemini: OpenAICompatibleProvider) -> None:
    """Google answers errors as ``[{"error": {"code", "message", "status"}}]``: the row error (or the run's) says
    Google's message, not the JSON list around it; the key is in neither."""
    wrong = gemini.with_model("gpt-4o-mini")
    with pytest.raises(AIAssetsError) as caught:
        prompt(rows(2), "{text}", provider=wrong, options=ROW_ERRORS)
    message = str(caught.value)
    assert "models/gpt-4o-mini is not found" in message and '[{"error"' not in message, message
    assert KEY not in message and KEY[-8:] not in message


def test_embeddings_need_a_gemini_embedding_model(fake: FakeGeminiServer, gemini: OpenAICompatibleProvider) -> None:
    out = embed_text(rows(10), "text", provider=gemini)
    assert out.table.column("embedding").null_count == 0
    default = OpenAICompatibleProvider("gemini-2.5-flash", base_url=fake.base_url, api_key=KEY)  # OpenAI's model
    with pytest.raises(AIAssetsError, match="models/text-embedding-3-small is not found"):
        embed_text(rows(2, "d"), "text", provider=default)


@pytest.mark.slow
def test_batch_mode_through_geminis_openai_compatible_batch_api(
        tmp_path: Path, fake: FakeGeminiServer, gemini: OpenAICompatibleProvider) -> None:
    options = RunOptions(mode="batch", on_error="null", batch=BatchOptions(poll_s=0.05))
    out = prompt(rows(40), "{text}", provider=gemini, return_format=Review,
                 cache=ResultCache(tmp_path / "j.sqlite"), options=options)
    stats = fake.stats()
    assert (stats.files_uploaded, stats.batches_created, stats.batch_lines) == (1, 1, 40)
    assert out.table.column("response").null_count == 0 and out.usage.batch


# -- one partition, three vendors ---------------------------------------------------------------------------------
VERDICT_RULES = "Grade the review by the house rules. " + " ".join(f"rule{i}: stay brief." for i in range(320))


def test_one_partition_through_openai_anthropic_and_gemini_gives_one_table_and_what_each_billed(
        tmp_path: Path, fake: FakeGeminiServer, server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same partition materialized through the OpenAI-compatible, Anthropic and Gemini fakes: the same table
    shape, and per vendor the tokens (cache reads and writes included) and the cost each server billed, at that
    vendor's list prices (genai-prices: OpenAI, Anthropic, Google; Anthropic's "Pricing": cache writes 1.25x, reads
    0.1x; Gemini models had no price before, so no cost)."""
    import dagster as dg

    from ai_assets.dagster import (
        AnthropicResource,
        OpenAICompatibleResource,
        ParquetIOManager,
        ResultCacheResource,
        ingest_asset,
        prompt_asset,
    )
    from ai_assets.runtime.prices import lookup
    from ai_assets.testing.anthropic_server import FakeAnthropicServer

    source = tmp_path / "src"
    source.mkdir()
    (source / "d1.jsonl").write_text("".join(f'{{"text": "review {i}: it works"}}\n' for i in range(30)))
    days = dg.StaticPartitionsDefinition(["d1"])
    raw = ingest_asset("raw", path=str(source) + "/{partition}.jsonl", partitions_def=days)
    verdicts = prompt_asset("verdicts", raw, template=VERDICT_RULES + "\n\nReview: {text}", return_format=Review,
                            system_message="Answer with the tool.", partitions_def=days)
    fake.set_faults()
    fake.reset()
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-api03-" + "Vx5nB8qT" * 6)
    with FakeAnthropicServer(in_process=True) as claude_fake:
        vendors = {
            "openai": (OpenAICompatibleResource(model="gpt-4o-mini", base_url=server.base_url, api_key="sk-test"),
                       server),
            "anthropic": (AnthropicResource(model="claude-sonnet-4-5", base_url=claude_fake.base_url,
                                            api_key=dg.EnvVar("ANTHROPIC_API_KEY")), claude_fake),
            "gemini": (OpenAICompatibleResource(model="gemini-2.5-flash", base_url=fake.base_url,
                                                api_key=dg.EnvVar("GEMINI_API_KEY")), fake),
        }
        tables = {}
        for vendor, (llm, vendor_server) in vendors.items():
            io = ParquetIOManager(root=str(tmp_path / vendor))
            result = dg.materialize([raw, verdicts], partition_key="d1", raise_on_error=True, resources={
                "llm": llm, "io_manager": io, "ai_cache": ResultCacheResource(path=str(tmp_path / f"{vendor}.db"))})
            tables[vendor] = io.store(dg.AssetKey("verdicts"), {}).read(["d1"])
            metadata = result.asset_materializations_for_node("verdicts")[0].metadata
            stats = vendor_server.stats()
            assert stats.chat_requests == 30 or vendor == "anthropic", (vendor, stats.chat_requests)
            assert (metadata["ai/tokens_in"].value, metadata["ai/tokens_out"].value) == (
                stats.prompt_tokens, stats.completion_tokens), vendor
            assert metadata["ai/tokens_cached"].value == stats.cached_tokens, vendor
            assert metadata["ai/tokens_cache_write"].value == stats.cache_write_tokens, vendor
            prices = lookup(llm.model)
            assert prices is not None, vendor
            billed = prices.cost(stats.prompt_tokens, stats.completion_tokens, cached_tokens=stats.cached_tokens,
                                 cache_write_tokens=stats.cache_write_tokens)
            assert "ai/estimated_cost_usd" in metadata, f"{vendor}: no cost"
            assert metadata["ai/estimated_cost_usd"].value == pytest.approx(round(billed, 6), abs=1e-6), vendor
        assert claude_fake.stats().cache_write_tokens > 0 and claude_fake.stats().cached_tokens > 0
    first = tables["openai"]
    for vendor, table in tables.items():
        assert table.schema == first.schema and table.num_rows == 30, vendor
        assert table.column("verdicts_error").null_count == 30, vendor
