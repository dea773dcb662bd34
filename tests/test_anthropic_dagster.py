"""``prompt_asset`` with ``AnthropicResource``: a real Dagster materialization against the fake Anthropic server
gives the table an OpenAI-compatible resource gives, and metadata with the cache reads, writes and cost the server
billed; the key comes through ``dg.EnvVar("ANTHROPIC_API_KEY")`` and appears in no log, metadata or table.

Documented behaviour modelled: Anthropic's Messages API ``usage`` (cache reads and writes reported apart from
``input_tokens``) and prompt-caching prices (writes 1.25x, reads 0.1x the input price); Dagster's ``EnvVar``
(the value is resolved at run time, never stored in the definition).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pytest
from pydantic import BaseModel

from ai_assets.dagster import (
    AnthropicResource,
    OpenAICompatibleResource,
    ParquetIOManager,
    ResultCacheResource,
    ingest_asset,
    prompt_asset,
)
from ai_assets.dagster.registry import Provider, build_resource
from ai_assets.runtime.prices import lookup
from ai_assets.testing import FakeOpenAIServer
from ai_assets.testing.anthropic_server import FakeAnthropicServer

KEY = "sk-ant-api03-" + "Dg7pW3xQ" * 6
PREFIX = "Grade the review by the house rules. " + " ".join(f"rule{i}: stay brief." for i in range(320))


class Verdict(BaseModel):
    sentiment: str
    stars: int


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAnthropicServer]:
    with FakeAnthropicServer(in_process=True) as server:
        yield server


def definitions(tmp_path: Path, llm: dg.ConfigurableResource) -> tuple[list[dg.AssetsDefinition], dict[str, Any]]:  # type: ignore[type-arg]
    source = tmp_path / "src"
    source.mkdir(exist_ok=True)
    (source / "d1.jsonl").write_text("".join(json.dumps({"text": f"review {i}: works fine"}) + "\n"
                                             for i in range(40)))
    days = dg.StaticPartitionsDefinition(["d1"])
    raw = ingest_asset("raw", path=str(source) + "/{partition}.jsonl", partitions_def=days)
    verdicts = prompt_asset("verdicts", raw, template=PREFIX + "\n\nReview: {text}", return_format=Verdict,
                            system_message="Answer with the tool.", partitions_def=days)
    out = tmp_path / type(llm).__name__
    return [raw, verdicts], {"llm": llm, "io_manager": ParquetIOManager(root=str(out)),
                             "ai_cache": ResultCacheResource(path=str(out / "journal.sqlite"))}


def materialize(tmp_path: Path, llm: dg.ConfigurableResource) -> tuple[pa.Table, Mapping[str, Any], list[str]]:  # type: ignore[type-arg]
    assets, resources = definitions(tmp_path, llm)
    result = dg.materialize(assets, partition_key="d1", resources=resources, raise_on_error=True)
    metadata = result.asset_materializations_for_node("verdicts")[0].metadata
    logs = [str(event) for event in result.all_events]
    table = resources["io_manager"].store(dg.AssetKey("verdicts"), {}).read(["d1"])
    return table, metadata, logs


def test_an_anthropic_resource_gives_the_same_table_and_the_billed_cache_usage_and_cost(
        tmp_path: Path, fake: FakeAnthropicServer, server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch) -> None:
    fake.reset()
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    claude = AnthropicResource(model="claude-sonnet-4-5", base_url=fake.base_url,
                               api_key=dg.EnvVar("ANTHROPIC_API_KEY"))
    table, metadata, logs = materialize(tmp_path, claude)
    openai_table, _, _ = materialize(tmp_path, OpenAICompatibleResource(model="gpt-4o-mini", base_url=server.base_url,
                                                                        api_key="sk-test"))
    assert table.schema == openai_table.schema and table.num_rows == openai_table.num_rows == 40
    assert table.column("verdicts_error").null_count == 40

    stats = fake.stats()
    assert stats.headers["x-api-key"] == KEY
    assert metadata["ai/tokens_in"].value == stats.prompt_tokens
    assert metadata["ai/tokens_cached"].value == stats.cached_tokens > 0
    assert metadata["ai/tokens_cache_write"].value == stats.cache_write_tokens > 0
    prices = lookup("claude-sonnet-4-5")
    assert prices is not None
    billed = prices.cost(stats.prompt_tokens, stats.completion_tokens, cached_tokens=stats.cached_tokens,
                         cache_write_tokens=stats.cache_write_tokens)
    assert math.isclose(metadata["ai/estimated_cost_usd"].value, round(billed, 6), abs_tol=1e-6)
    shown = " ".join(logs) + json.dumps({k: str(v) for k, v in metadata.items()}) + table.to_pandas().to_json()
    assert KEY not in shown and KEY[13:25] not in shown


def test_yaml_reads_the_anthropic_key_from_its_own_variable() -> None:
    """A YAML ``kind: anthropic`` entry reads ``ANTHROPIC_API_KEY`` unless told otherwise (not OpenAI's)."""
    from pydantic import TypeAdapter

    entry = TypeAdapter(Provider).validate_python({"kind": "anthropic", "model": "claude-haiku-4-5"})
    resource = build_resource(entry)
    assert isinstance(resource, AnthropicResource) and entry.model_dump()["api_key_env"] == "ANTHROPIC_API_KEY"
    assert isinstance(resource.api_key, dg.EnvVar) and resource.api_key.env_var_name == "ANTHROPIC_API_KEY"
    openai = TypeAdapter(Provider).validate_python({"kind": "openai", "model": "gpt-4o-mini"})
    assert openai.model_dump()["api_key_env"] == "OPENAI_API_KEY"  # unchanged for the others


def test_a_store_alone_shares_the_limits_anthropic_s_headers_report(tmp_path: Path) -> None:
    """Anthropic reports its account's limits in ``anthropic-ratelimit-*`` headers (docs: "Rate limits"): with a
    ``rate_limit_store`` and no rpm / tpm, every process must pace those learned limits through the store, as the
    OpenAI-compatible resource does (before, the Anthropic resource built no shared limit without rpm / tpm)."""
    from ai_assets.dagster import AnthropicResource, OpenAICompatibleResource

    store = f"file://{tmp_path}"
    for resource in (AnthropicResource(model="claude-sonnet-4-5", api_key="unused", rate_limit_store=store),
                     OpenAICompatibleResource(model="m", api_key="unused", rate_limit_store=store)):
        shared = resource.build_provider().account_limit()
        assert shared is not None and shared[0].store == store, type(resource).__name__
        assert "unused" not in shared[1]  # the account's name is a hash, never the key
