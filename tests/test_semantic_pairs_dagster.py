"""semantic_join_asset / semantic_dedup_asset materialized for real: a daily-partitioned left side joined against
an unpartitioned right side, the verifier's requests counted on its server."""

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest

from ai_assets.dagster import (
    OpenAICompatibleResource,
    ParquetIOManager,
    ResultCacheResource,
    SentenceTransformersResource,
)
from ai_assets.dagster.semantic_pairs import semantic_dedup_asset, semantic_join_asset
from tests.semantic_pairs_world import Verifier, dedup_world, join_world, pairwise_f1, serve

pytestmark = pytest.mark.slow
DAYS = ["2026-01-01", "2026-01-02"]


@pytest.fixture
def verifier() -> Iterator[tuple[Verifier, str]]:
    world, _, _ = join_world(1)
    judge = Verifier(world)
    with serve(judge) as url:
        yield judge, url


def _resources(root: Path, url: str) -> dict[str, object]:
    return {"io_manager": ParquetIOManager(root=str(root / "tables")),
            "llm": OpenAICompatibleResource(model="verifier", base_url=url, api_key="unused"),
            "embedder": SentenceTransformersResource(device="cpu"),
            "ai_cache": ResultCacheResource(path=str(root / "cache.sqlite"))}


def test_adding_a_day_on_the_left_sends_only_that_days_pairs_and_a_rerun_sends_none(
        tmp_path: Path, verifier: tuple[Verifier, str]) -> None:
    """The incremental promise of Databricks ai_query over Delta (process only unprocessed rows), for pairs: a
    new left partition pays for its own pairs against all of the right side, and nothing else."""
    judge, url = verifier
    world, left, right = join_world(24, seed=20)
    judge.world = world
    daily = dg.StaticPartitionsDefinition(DAYS)
    by_day = {DAYS[0]: left[:12], DAYS[1]: left[12:]}

    @dg.asset(partitions_def=daily)
    def orders(context: dg.AssetExecutionContext) -> pa.Table:
        return pa.table({"item": by_day[context.partition_key]})

    @dg.asset
    def catalog() -> pa.Table:
        return pa.table({"sku": list(range(len(right))), "title": right})

    matches = semantic_join_asset("matches", orders, catalog, left_column="item", right_column="title",
                                  condition="the order is for this company's product", k=3, partitions_def=daily,
                                  dead_letter=True)
    resources = _resources(tmp_path, url)
    first = dg.materialize([orders, catalog, matches], partition_key=DAYS[0], resources=resources)
    assert first.success and judge.requests == 12 * 3
    meta = first.asset_materializations_for_node("matches")[0].metadata
    assert meta["candidate_pairs"].value == 36 and meta["brute_force_pairs"].value == 12 * 24
    assert meta["embedding_sent_rows"].value == 12 + 24
    second = dg.materialize([orders, matches, catalog], partition_key=DAYS[1], resources=resources,
                            selection=[orders, matches])
    assert second.success and judge.requests == 2 * 12 * 3
    assert {a for a, _ in judge.pairs[36:]} == set(left[12:])
    again = dg.materialize([orders, matches, catalog], partition_key=DAYS[1], resources=resources,
                           selection=[matches])
    assert again.success and judge.requests == 72
    table = ParquetIOManager(root=str(tmp_path / "tables")).store(dg.AssetKey("matches"), {}).read([DAYS[1]])
    found = {(a, b) for a, b in zip(table["left_item"].to_pylist(), table["right_title"].to_pylist(), strict=True)}
    truth = {(a, b) for a in left[12:] for b in right if world.same(a, b)}
    assert len(found & truth) >= 0.9 * len(truth)


def test_dedup_asset_gives_the_same_ids_on_a_rerun(tmp_path: Path, verifier: tuple[Verifier, str]) -> None:
    judge, url = verifier
    world, rows, entities = dedup_world(20, seed=21)
    judge.world = world

    @dg.asset
    def companies() -> pa.Table:
        return pa.table({"name": rows})

    resolved = semantic_dedup_asset("resolved", companies, column="name", k=4, threshold=0.5)
    resources = _resources(tmp_path, url)
    assert dg.materialize([companies, resolved], resources=resources).success
    store = ParquetIOManager(root=str(tmp_path / "tables")).store(dg.AssetKey("resolved"), {})
    first = store.read(None)
    sent = judge.requests
    assert pairwise_f1(first["cluster_id"].to_pylist(), entities) >= 0.9
    assert dg.materialize([companies, resolved], resources=resources, selection=[resolved]).success
    assert judge.requests == sent
    assert store.read(None)["cluster_id"].to_pylist() == first["cluster_id"].to_pylist()


def test_the_components_build_the_same_assets_from_yaml_values() -> None:
    """The YAML attributes (as dg reads them from defs.yaml) build the factories' assets: the join depends on
    both sides, all of the right side's partitions."""
    from ai_assets.dagster.components.semantic_pairs import SemanticDedupComponent, SemanticJoinComponent

    join = SemanticJoinComponent.model_validate({
        "name": "order_matches", "upstream": "orders", "right": "catalog", "left_column": "item",
        "right_column": "title", "condition": "the order is for this product", "k": 4,
        "partitions": {"static": DAYS}, "dead_letter": True}).asset()
    assert set(join.keys) == {dg.AssetKey("order_matches"), dg.AssetKey("order_matches_dead_letter")}
    deps = {dep.asset_key for dep in join.specs_by_key[dg.AssetKey("order_matches")].deps}
    assert deps == {dg.AssetKey("orders"), dg.AssetKey("catalog")}
    dedup = SemanticDedupComponent.model_validate({"name": "resolved", "upstream": "companies", "column": "name",
                                                    "threshold": 0.6}).asset()
    assert dedup.key == dg.AssetKey("resolved")
    reserved = set(dir(dg.Component)) | set(dir(dg.Model))
    assert not (set(SemanticJoinComponent.model_fields) | set(SemanticDedupComponent.model_fields)) & reserved


def test_an_estimate_run_observes_the_cost_and_stores_nothing(tmp_path: Path, verifier: tuple[Verifier, str]) -> None:
    """``python -m ai_assets.dagster.estimate`` runs assets in estimate mode: an observation with the candidate
    pairs and the estimated tokens, no verdict sent and no output stored (Dagster skips optional outputs)."""
    from ai_assets.dagster.modes import set_estimating

    judge, url = verifier
    world, rows, _ = dedup_world(6, seed=22)
    judge.world = world

    @dg.asset
    def companies() -> pa.Table:
        return pa.table({"name": rows})

    resolved = semantic_dedup_asset("resolved", companies, column="name", k=2, threshold=0.0)
    assert dg.materialize([companies], resources=_resources(tmp_path, url)).success
    set_estimating(True)
    try:
        result = dg.materialize([companies, resolved], resources=_resources(tmp_path, url), selection=[resolved])
    finally:
        set_estimating(False)
    assert result.success and judge.requests == 0
    observed = [e.asset_observation_data.asset_observation for e in result.all_events
                if e.event_type_value == "ASSET_OBSERVATION"]
    assert observed and observed[0].metadata["candidate_pairs"].value > 0
    assert not result.asset_materializations_for_node("resolved")


def test_every_parameter_reaches_the_factory_and_the_component() -> None:
    """The parity rule of tests/unit/test_parity.py for the pair operators: a function's setting is a factory
    keyword and a component field. The Dagster layer supplies the sides, the providers (``provider_key``,
    ``embedder_key``) and the journal; a LanceDB ``right_key`` is for a right side passed as a lancedb table,
    which an asset's IO manager never hands over."""
    import inspect

    from ai_assets.dagster.components.semantic_pairs import SemanticDedupComponent, SemanticJoinComponent
    from ai_assets.functions.semantic.dedup import semantic_dedup
    from ai_assets.functions.semantic.join import semantic_join

    supplied = {"left", "right", "table", "provider", "embedder", "run", "args", "name", "upstream", "right_key"}
    for function, factory, component in ((semantic_join, semantic_join_asset, SemanticJoinComponent),
                                         (semantic_dedup, semantic_dedup_asset, SemanticDedupComponent)):
        own = set(inspect.signature(function).parameters) - supplied
        taken = set(inspect.signature(factory).parameters)
        assert own <= taken, own - taken
        fields = set(component.model_fields)  # the left side is the component's ``upstream``
        assert taken - supplied <= fields, taken - supplied - fields
    assert "right" in SemanticJoinComponent.model_fields
