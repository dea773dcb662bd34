"""Checks and quality gates on partitioned assets belong to their partition.

Dagster's docs ("Asset checks" > partitioned asset checks; ``AssetCheckSpec(partitions_def=...)``, in the
installed 1.13) file a partitioned check's result under the partition the step materialized, and the UI shows each
partition's verdict; an unpartitioned check on a partitioned asset keeps only the latest verdict of any partition.
These tests materialize real partitions through the fake OpenAI-compatible server and read the check executions
back per partition from the instance's event log, as the UI does.
"""

import datetime
import sys
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
from dagster._core.event_api import PartitionKeyFilter

from ai_assets import RunOptions
from ai_assets.dagster import OpenAICompatibleResource, ParquetIOManager, ResultCacheResource, prompt_asset
from ai_assets.dagster.gates import GoldenSet
from ai_assets.testing import FakeOpenAIServer, Fault

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PARTITIONS = ["2024-01-01", "2024-01-02"]
BROKEN_DAY = "2024-01-02"
DAILY = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-03")


@dg.asset(partitions_def=DAILY, backfill_policy=dg.BackfillPolicy.single_run())
def days(context: dg.AssetExecutionContext) -> pa.Table:
    """Four rows per day; every row of ``BROKEN_DAY`` says "broken" (the fake server refuses those)."""
    keys = context.partition_keys
    return pa.table({"text": [f"{'broken' if k == BROKEN_DAY else 'fine'} row {i} of {k}" for k in keys
                              for i in range(4)],
                     "_partition": [k for k in keys for _ in range(4)]})


def _defs(server: FakeOpenAIServer, tmp_path: Path) -> tuple[list[Any], dict[str, Any]]:
    golden = GoldenSet(rows=pa.table({"text": ["hello"], "expected": ["Answer to: hello"]}))
    insights = prompt_asset("insights", days, template="{text}", partitions_def=DAILY, golden_set=golden,
                            backfill_policy=dg.BackfillPolicy.single_run(), max_error_rate=0.1,
                            options=RunOptions(on_error="null"))  # a failed row is that row's error
    resources = {"llm": OpenAICompatibleResource(model="fake-model", base_url=server.base_url, api_key="k"),
                 "io_manager": ParquetIOManager(root=str(tmp_path / "out")),
                 "ai_cache": ResultCacheResource(path=str(tmp_path / "journal.sqlite"))}
    return [days, insights], resources


def _verdicts(instance: dg.DagsterInstance, name: str) -> dict[str, bool | None]:
    """Each partition's latest execution of check ``name``, as the UI reads it (None: no evaluation for it)."""
    key = dg.AssetCheckKey(dg.AssetKey("insights"), name)
    out: dict[str, bool | None] = {}
    for partition in PARTITIONS:
        found = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [key], partition_filter=PartitionKeyFilter(key=partition)).get(key)
        evaluation = found.event.asset_check_evaluation if found is not None and found.event is not None else None
        out[partition] = None if evaluation is None else evaluation.passed
    return out


def test_each_partition_run_files_its_check_results_under_its_partition(
        server: FakeOpenAIServer, tmp_path: Path) -> None:
    """One run per partition (the UI's "Materialize" of a partition): the error-rate check and the golden set
    gate land on that partition; the broken day fails its error rate, the fine day passes, and neither verdict
    overwrites the other."""
    server.set_faults(Fault(400, match="broken", attempts=None))  # a 400 is not retried (OpenAI error codes)
    assets, resources = _defs(server, tmp_path)
    with dg.instance_for_test() as instance:
        for partition in PARTITIONS:
            result = dg.materialize(assets, partition_key=partition, resources=resources, instance=instance,
                                    raise_on_error=False)
            assert result.success
        assert _verdicts(instance, "error_rate") == {"2024-01-01": True, BROKEN_DAY: False}
        assert _verdicts(instance, "golden_set") == {"2024-01-01": True, BROKEN_DAY: True}


def test_a_single_run_backfill_files_a_verdict_per_partition(server: FakeOpenAIServer, tmp_path: Path) -> None:
    """A single-run backfill of a range (``BackfillPolicy.single_run()``): Dagster files an ``AssetCheckResult``
    of a range step under no partition, so each partition of the range must get its own evaluation, judged on its
    own rows where the check can (the error rate), pointing at that partition's materialization."""
    server.set_faults(Fault(400, match="broken", attempts=None))
    assets, resources = _defs(server, tmp_path)
    with dg.instance_for_test() as instance:
        result = dg.materialize(assets, resources=resources, instance=instance, raise_on_error=False, tags={
            "dagster/asset_partition_range_start": PARTITIONS[0],
            "dagster/asset_partition_range_end": PARTITIONS[-1]})
        assert result.success
        assert _verdicts(instance, "error_rate") == {"2024-01-01": True, BROKEN_DAY: False}
        assert _verdicts(instance, "golden_set") == {"2024-01-01": True, BROKEN_DAY: True}
        key = dg.AssetCheckKey(dg.AssetKey("insights"), "error_rate")
        found = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [key], partition_filter=PartitionKeyFilter(key=BROKEN_DAY))[key]
        evaluation = found.event.asset_check_evaluation if found.event is not None else None
        assert evaluation is not None and evaluation.target_materialization_data is not None
        assert evaluation.target_materialization_data.run_id == result.run_id


def test_a_components_freshness_policy_resolves_from_yaml() -> None:
    """Dagster's components resolve ``freshness_policy`` as a template (``{{ dg.FreshnessPolicy.time_window(...)
    }}``, dagster ``components/resolved/core_models.py``): the prompt component takes it as its asset does."""
    from ai_assets.dagster import components

    component = components.PromptComponent.resolve_from_yaml(
        'name: insights\nupstream: reviews\ntemplate: "Review: {text}"\n'
        'freshness_policy: "{{ dg.FreshnessPolicy.time_window(fail_window=datetime.timedelta(hours=26)) }}"\n')
    spec = next(iter(component.asset().specs))
    assert spec.freshness_policy == dg.FreshnessPolicy.time_window(fail_window=datetime.timedelta(hours=26))
