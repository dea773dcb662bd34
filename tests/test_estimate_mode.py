"""``RunOptions(mode="estimate")`` inside a Dagster run: the estimate is reported, the real table and the asset's
materialization history are left exactly as they were.

Dagster's model (docs: "Op outputs" / ``Output``; "Asset observations"): a step that does not produce a new value
of an asset yields no output for it (the output is optional, ``is_required=False`` / ``skippable=True``, and the
assets downstream of it are skipped), and what it learned about the asset without changing it is an
``AssetObservation``. A materialization says "this asset has a new value"; an estimate has none to give.
"""

import hashlib
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest
from dagster import AssetExecutionContext

from ai_assets import RunOptions
from ai_assets.dagster import (
    DeltaIOManager,
    OpenAICompatibleResource,
    ParquetIOManager,
    ResultCacheResource,
    prompt_asset,
)
from ai_assets.dagster.gates import GoldenSet
from ai_assets.testing import FakeOpenAIServer

DAYS = dg.StaticPartitionsDefinition(["d1", "d2"])


@dg.asset(partitions_def=DAYS)
def reviews(context: AssetExecutionContext) -> pa.Table:
    return pa.table({"text": [f"{context.partition_key} review {i}" for i in range(12)]})


def answers(options: RunOptions) -> dg.AssetsDefinition:
    golden = GoldenSet(rows=pa.table({"text": ["a fine review"], "expected": ["never answered like this"]}),
                       min_score=1.0)
    return prompt_asset("answers", reviews, template="Review: {text}", options=options, partitions_def=DAYS,
                        dead_letter=True, golden_set=golden, max_error_rate=1.0)


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("store", [ParquetIOManager, DeltaIOManager])
def test_an_estimate_inside_a_run_writes_nothing_and_materializes_nothing(
        server: FakeOpenAIServer, tmp_path: Path, store: type[ParquetIOManager] | type[DeltaIOManager]) -> None:
    root = tmp_path / "warehouse"
    resources = {"llm": OpenAICompatibleResource(model="gpt-4o-mini", base_url=server.base_url, api_key="k"),
                 "io_manager": store(root=str(root)), "ai_cache": ResultCacheResource(path=str(tmp_path / "j.db"))}
    instance = dg.DagsterInstance.ephemeral()
    live = prompt_asset("answers", reviews, template="Review: {text}", options=RunOptions(on_error="null"),
                        partitions_def=DAYS, dead_letter=True, max_error_rate=1.0)
    assert dg.materialize([reviews, live], partition_key="d1", resources=resources, instance=instance).success
    before = snapshot(root)
    assert any("answers" in name for name in before)
    history = len(instance.fetch_materializations(dg.AssetKey("answers"), limit=100).records)
    server.reset()

    estimated = answers(RunOptions(mode="estimate"))

    @dg.asset(partitions_def=DAYS, deps=[dg.AssetKey("answers")])
    def downstream() -> None:
        raise AssertionError("an estimate gives downstream assets nothing to read")

    result = dg.materialize([reviews, estimated, downstream], partition_key="d1", resources=resources,
                            instance=instance, selection=[estimated, downstream])
    assert result.success
    assert server.stats().requests == 0  # not even the golden set is sent
    assert snapshot(root) == before  # the real table and its dead letters are byte-identical
    assert len(instance.fetch_materializations(dg.AssetKey("answers"), limit=100).records) == history
    assert not result.get_asset_materialization_events()
    observations = [e.asset_observation_data.asset_observation for e in result.get_asset_observation_events()]
    (observed,) = [o for o in observations if o.asset_key == dg.AssetKey("answers") and o.partition is not None]
    metadata = {k: v.value for k, v in observed.metadata.items()}
    assert observed.partition == "d1" and metadata["ai/mode"] == "estimate"
    assert metadata["ai/rows_in"] == 12 and metadata["ai/rows_from_cache"] == 12 and metadata["ai/rows_sent"] == 0
    assert not result.get_asset_check_evaluations()  # nothing new was produced, so there is nothing to check
    skipped = {e.step_key for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_SKIPPED}
    assert skipped == {"downstream"}

    fresh = dg.materialize([reviews, estimated], partition_key="d2", resources=resources, instance=instance,
                           selection=[reviews, estimated])
    observed_d2 = next(e.asset_observation_data.asset_observation for e in fresh.get_asset_observation_events()
                       if e.asset_observation_data.asset_observation.asset_key == dg.AssetKey("answers")
                       and e.asset_observation_data.asset_observation.partition is not None)
    assert observed_d2.metadata["ai/rows_sent"].value == 12 and observed_d2.metadata["ai/tokens_in"].value > 0
    assert "ai/estimated_cost_usd" in observed_d2.metadata and server.stats().requests == 0
    assert {m.asset_key for m in (e.step_materialization_data.materialization
                                  for e in fresh.get_asset_materialization_events())} == {dg.AssetKey("reviews")}
