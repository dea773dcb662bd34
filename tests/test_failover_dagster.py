"""Failover as a Dagster resource and in YAML: a real materialization whose primary is down.

Modelled behaviour: RFC 9110's 503 (Service Unavailable: the server is down; another may answer) and the
circuit-breaker pattern (Nygard, "Release It!"; Polly; resilience4j): every row is answered by the fallback, and
the table says who answered each row.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest

from ai_assets import RunOptions
from ai_assets.dagster import OpenAICompatibleResource, ParquetIOManager, ResultCacheResource, prompt_asset
from ai_assets.dagster.components import ResourcesComponent
from ai_assets.dagster.resources import FailoverResource
from ai_assets.testing import FakeOpenAIServer, Fault


@pytest.fixture
def backup() -> object:
    with FakeOpenAIServer(in_process=True) as server:
        yield server


PARTITIONS = dg.StaticPartitionsDefinition(["a"])


def source() -> dg.AssetsDefinition:
    @dg.asset(partitions_def=PARTITIONS)
    def reviews() -> pa.Table:
        return pa.table({"text": [f"review {i}" for i in range(40)]})

    return reviews


def test_a_failover_resource_answers_every_row_with_the_fallback_while_the_primary_is_down(
        tmp_path: Path, server: FakeOpenAIServer, backup: FakeOpenAIServer) -> None:
    server.set_faults(Fault("503", attempts=None))
    reviews = source()
    summaries = prompt_asset("summaries", reviews, template="Summarize: {text}", provider_key="llm",
                             partitions_def=PARTITIONS)
    llm = FailoverResource(
        primary=OpenAICompatibleResource(model="primary-model", base_url=server.base_url, api_key="sk-primary"),
        fallback=OpenAICompatibleResource(model="backup-model", base_url=backup.base_url, api_key="sk-backup"),
        breaker_threshold=2, breaker_store=f"file://{tmp_path}/breakers")
    result = dg.materialize([reviews, summaries], partition_key="a", resources={
        "llm": llm, "ai_cache": ResultCacheResource(path=str(tmp_path / "journal.sqlite")),
        "io_manager": ParquetIOManager(root=str(tmp_path / "lake"))})
    assert result.success
    table = ParquetIOManager(root=str(tmp_path / "lake")).store(dg.AssetKey("summaries"), {}).read(["a"])
    assert table.column("summaries").null_count == 0
    assert set(table.column("summaries_provider").to_pylist()) == {"openai-compatible:backup-model"}
    assert server.stats().requests <= 2 + RunOptions().concurrency  # the threshold + the requests in flight
    assert llm.answer_settings()["chain"][1]["model"] == "backup-model"  # a new fallback makes the asset stale


def test_yaml_names_a_providers_fallbacks_by_key(backup: FakeOpenAIServer) -> None:
    component = ResourcesComponent.model_validate({
        "providers": {"llm": {"kind": "openai", "model": "p", "base_url": "http://127.0.0.1:9/v1"},
                      "backup": {"kind": "openai", "model": "b", "base_url": backup.base_url}},
        "failover": {"llm": {"fallbacks": ["backup"], "threshold": 3, "cooldown_s": 5}}})
    defs = component.build_defs(None)  # type: ignore[arg-type]  # the context is not read for resources
    llm = defs.resources["llm"]  # type: ignore[index]
    assert isinstance(llm, FailoverResource)
    assert (llm.primary.model, llm.fallback.model, llm.breaker_threshold, llm.breaker_cooldown_s) == (  # type: ignore[attr-defined]
        "p", "b", 3, 5.0)
    for wrong, message in (({"fallbacks": ["nope"]}, "no provider"), ({"fallbacks": ["llm"]}, "its own fallback"),
                           ({"fallbacks": []}, "1 to 3")):
        bad = ResourcesComponent.model_validate({
            "providers": {"llm": {"kind": "openai", "model": "p"}}, "failover": {"llm": wrong}})
        with pytest.raises(dg.DagsterInvalidDefinitionError, match=message):
            bad.build_defs(None)  # type: ignore[arg-type]
