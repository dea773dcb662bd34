"""The semantic row operators as real Dagster materializations: top-k and aggregate per partition, filter as a task
factory, a component loaded from YAML; requests counted on the judge (tests/semantic_rows_judge.py)."""

from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pytest

from ai_assets.dagster import OpenAICompatibleResource, ParquetIOManager, ResultCacheResource
from ai_assets.dagster.components.semantic_rows import SemanticAggregateComponent, SemanticTopKComponent
from ai_assets.dagster.semantic_rows import semantic_aggregate_asset, semantic_top_k_asset
from ai_assets.dagster.tasks import semantic_filter_asset
from ai_assets.runtime.engine import RunOptions
from ai_assets.runtime.retry import RetryPolicy
from ai_assets.runtime.usage import Prices
from tests.semantic_rows_judge import Judge

pytestmark = [pytest.mark.integration]

PARTS = dg.StaticPartitionsDefinition(["a", "b"])
FAST = RunOptions(concurrency=8, on_error="null", retry=RetryPolicy(max_attempts=2, base_wait=0.0, max_wait=0.0))


def scores(partition: str) -> list[float]:
    base = 0 if partition == "a" else 1
    return [round(((i * 7919 + base * 104729) % 10007) / 100.07, 3) for i in range(40)]


@dg.asset(partitions_def=PARTS)
def docs(context: dg.AssetExecutionContext) -> pa.Table:
    values = scores(context.partition_key)
    return pa.table({"id": list(range(40)),
                     "text": [f"doc {context.partition_key}{i}: score={s} value={i}" for i, s in enumerate(values)]})


def resources(judge: Judge, root: Path) -> dict[str, Any]:
    return {"llm": OpenAICompatibleResource(model="judge", base_url=judge.base_url, api_key="sk-test-secret"),
            "ai_cache": ResultCacheResource(path=str(root / "journal.sqlite")),
            "io_manager": ParquetIOManager(root=str(root / "store"))}


def stored(root: Path, name: str, partition: str) -> pa.Table:
    return ParquetIOManager(root=str(root / "store")).store(dg.AssetKey(name), {}).read([partition])


def test_top_k_and_aggregate_assets_per_partition_pay_once(judge: Judge, tmp_path: Path) -> None:
    """Materializing partition a ranks and folds it; again pays 0 requests; partition b pays for its own rows
    only (as many comparisons as a did: nothing of a is asked again). Cost metadata per partition."""
    best = semantic_top_k_asset("best", docs, column="text", query="highest score?", k=3, partitions_def=PARTS,
                                options=FAST, dead_letter=True, prices=Prices(1.0, 2.0))
    total = semantic_aggregate_asset("total", docs, column="text", instruction="Sum the values.",
                                     max_input_tokens=200, partitions_def=PARTS, options=FAST)
    assets = [docs, best, total]
    result = dg.materialize(assets, partition_key="a", resources=resources(judge, tmp_path))
    assert result.success
    top = stored(tmp_path, "best", "a")
    expected = sorted(range(40), key=lambda i: -scores("a")[i])[:3]
    assert top.column("id").to_pylist() == expected and top.column("best").to_pylist() == [1, 2, 3]
    folded = stored(tmp_path, "total", "a").to_pylist()[0]
    assert folded["total"] == f"value={sum(range(40))}" and folded["total_levels"] >= 2
    metadata = result.asset_materializations_for_node("best")[0].metadata
    assert metadata["ai/requests"].value == judge.seen["compare"] > 0
    assert metadata["ai/rows_in"].value == 40 and metadata["ai/estimated_cost_usd"].value > 0
    paid = judge.requests
    assert dg.materialize(assets, partition_key="a", resources=resources(judge, tmp_path)).success
    assert judge.requests == paid
    assert dg.materialize(assets, partition_key="b", resources=resources(judge, tmp_path)).success
    assert stored(tmp_path, "best", "b").column("best").to_pylist() == [1, 2, 3]
    assert 0 < judge.requests - paid <= 2 * paid


def test_filter_task_asset_keeps_passing_rows(judge: Judge, tmp_path: Path) -> None:
    """``semantic_filter_asset`` (generated from the task registry): the rows over 50, the verdict column named
    after the asset; YAML ``task: semantic_filter`` builds the same asset."""
    kept = semantic_filter_asset("kept", docs, column="text", condition="the score is over 50",
                                 partitions_def=PARTS, options=FAST)
    assert dg.materialize([docs, kept], partition_key="a", resources=resources(judge, tmp_path)).success
    out = stored(tmp_path, "kept", "a")
    assert sorted(out.column("id").to_pylist()) == [i for i, s in enumerate(scores("a")) if s > 50]
    assert set(out.column("kept").to_pylist()) == {True}


def test_components_from_yaml_materialize(judge: Judge, tmp_path: Path) -> None:
    """The YAML components build the same assets as the factories (unpartitioned here)."""

    @dg.asset
    def plain_docs() -> pa.Table:
        return pa.table({"text": [f"doc {i}: score={s} value={i}" for i, s in enumerate(scores("a")[:12])]})

    top = SemanticTopKComponent.resolve_from_yaml(
        "name: top\nupstream: plain_docs\ncolumn: text\nquery: highest score?\nk: 2\n"
        "options: {concurrency: 4, on_error: 'null'}\n").asset()
    agg = SemanticAggregateComponent.resolve_from_yaml(
        "name: agg\nupstream: plain_docs\ncolumn: text\ninstruction: Sum the values.\nmax_input_tokens: 64\n").asset()
    assert dg.materialize([plain_docs, top, agg], resources=resources(judge, tmp_path)).success
    store = ParquetIOManager(root=str(tmp_path / "store"))
    assert store.store(dg.AssetKey("top"), {}).read().column("top").to_pylist() == [1, 2]
    assert store.store(dg.AssetKey("agg"), {}).read().column("agg").to_pylist() == [f"value={sum(range(12))}"]


def test_provider_down_gives_dead_letters_and_a_failed_error_rate_check(judge: Judge, tmp_path: Path) -> None:
    """OpenAI's 503 from the 10th request: the asset still materializes (the rows whose comparisons failed are
    rows with an error, the rank of the others stands), its error-rate check fails and names the count, and the
    failed rows are in ``<name>_dead_letter`` with the reason."""
    best = semantic_top_k_asset("best", docs, column="text", query="highest score?", k=3, partitions_def=PARTS,
                                options=FAST, dead_letter=True)
    judge.down_after = 10
    result = dg.materialize([docs, best], partition_key="a", resources=resources(judge, tmp_path))
    assert result.success
    check = next(e for e in result.get_asset_check_evaluations() if e.check_name == "error_rate")
    assert not check.passed and check.metadata["rows_with_errors"].value > 0
    letters = stored(tmp_path, "best_dead_letter", "a")
    assert letters.num_rows == check.metadata["rows_with_errors"].value
    assert all("503" in e or "unavailable" in e for e in letters.column("_dead_letter_error").to_pylist())
    assert "sk-test-secret" not in repr(result.all_events)
