"""The store an asset lands in, as its kind in the Dagster UI (``with_store_kinds``), resolved from the IO manager
its key is bound to.

Dagster's documented behaviour this models: kinds are tags ``dagster/kind/<name>`` on an asset's spec, at most ten,
shown under the asset box in the lineage view (docs.dagster.io, "Kind tags"); the UI gives a branded icon to the
names in its ``KNOWN_TAGS`` table (``deltalake``, ``parquet``, ``iceberg``), matched after dropping spaces, dots,
dashes and underscores and lower-casing. ``Definitions.map_asset_specs`` / ``AssetSpec.merge_attributes`` replace
an asset's specs without touching its op, partitions, checks or code version (dagster ``assets_definition.py``,
``replace_specs_on_asset``): the materialization afterwards proves it.
"""

import sys
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest
from dagster import AssetExecutionContext

from ai_assets import RunOptions
from ai_assets.dagster import (
    DeltaIOManager,
    LanceDBIOManager,
    OpenAICompatibleResource,
    ParquetIOManager,
    ResultCacheResource,
    embed_asset,
    prompt_asset,
    with_store_kinds,
)
from ai_assets.dagster.kinds import store_kind
from ai_assets.storage.delta import DeltaStore
from ai_assets.testing import FakeOpenAIServer, Fault

ROOT = Path(__file__).resolve().parents[1]
PARTITIONS = dg.StaticPartitionsDefinition(["a", "b"])
KIND_TAG = "dagster/kind/"


@dg.asset(partitions_def=PARTITIONS, code_version="v1")
def reviews(context: AssetExecutionContext) -> pa.Table:
    texts = [f"{context.partition_key} review {i}" + (" [bad]" if i == 3 else "") for i in range(8)]
    return pa.table({"id": list(range(8)), "text": texts})


@dg.asset(partitions_def=PARTITIONS, io_manager_key="pickles")
def review_count(reviews: pa.Table) -> int:
    """Stored by Dagster's own filesystem IO manager: not one of ours, so no store kind."""
    return reviews.num_rows


answers = prompt_asset("answers", reviews, template="Judge: {text}", provider_key="llm", partitions_def=PARTITIONS,
                       dead_letter=True, io_manager_key="delta", max_error_rate=0.5,
                       options=RunOptions(on_error="null"))
vectors = embed_asset("vectors", reviews, column="text", provider_key="llm", partitions_def=PARTITIONS,
                      io_manager_key="lancedb", max_error_rate=0.5, options=RunOptions(on_error="null"))
catalogued = dg.AssetSpec("catalogued", kinds={"python"}).with_io_manager_key("delta")  # external: not executable


def definitions(server: FakeOpenAIServer, tmp_path: Path) -> dg.Definitions:
    return dg.Definitions(
        assets=[reviews, review_count, answers, vectors, catalogued],
        resources={"llm": OpenAICompatibleResource(model="fake-model", base_url=server.base_url, api_key="k"),
                   "ai_cache": ResultCacheResource(path=str(tmp_path / "cache.sqlite")),
                   "io_manager": ParquetIOManager(root=str(tmp_path / "parquet")),
                   "delta": DeltaIOManager(root=str(tmp_path / "delta")),
                   "lancedb": LanceDBIOManager.configure_at_launch(root=str(tmp_path / "lancedb")),
                   "pickles": dg.FilesystemIOManager(base_dir=str(tmp_path / "pickles"))})


def store_kinds(spec: dg.AssetSpec) -> set[str]:
    return spec.kinds & {"parquet", "deltalake", "lancedb", "iceberg"}


def test_each_asset_shows_the_store_its_io_manager_key_is_bound_to(server: FakeOpenAIServer,
                                                                     tmp_path: Path) -> None:
    before = definitions(server, tmp_path)
    after = with_store_kinds(before)
    specs = {spec.key.to_user_string(): spec for spec in after.resolve_all_asset_specs()}
    assert {name: store_kinds(spec) for name, spec in specs.items()} == {
        "reviews": {"parquet"},  # the default key, "io_manager"
        "answers": {"deltalake"}, "answers_dead_letter": {"deltalake"},  # both outputs of the multi-asset
        "vectors": {"lancedb"},  # an IO manager configured at launch
        "catalogued": {"deltalake"},  # an external asset's key, from its metadata
        "review_count": set(),  # Dagster's FilesystemIOManager: not ours, nothing added
    }
    assert specs["answers"].kinds == {"ai", "deltalake"} and specs["catalogued"].kinds == {"python", "deltalake"}
    assert specs["answers"].tags[KIND_TAG + "deltalake"] == ""  # the tag the UI and `kind:` selections read
    # Everything else is as it was: partitions, code versions, descriptions, metadata, checks, dependencies.
    old = {spec.key.to_user_string(): spec for spec in before.resolve_all_asset_specs()}
    for name, spec in specs.items():
        assert spec.replace_attributes(kinds=old[name].kinds) == old[name], name
    assert after.resolve_asset_graph().asset_check_keys == before.resolve_asset_graph().asset_check_keys != set()


def test_a_materialization_works_afterwards(server: FakeOpenAIServer, tmp_path: Path) -> None:
    """Partitioned, with the enrichment's checks and dead letters, through every kind of IO manager."""
    server.set_faults(Fault("400", match="[bad]"))
    defs = with_store_kinds(definitions(server, tmp_path))
    job = defs.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(partition_key="a", instance=dg.DagsterInstance.ephemeral())
    assert result.success
    materialized = {event.asset_key.to_user_string() for event in result.get_asset_materialization_events()}
    assert materialized == {"reviews", "review_count", "answers", "answers_dead_letter", "vectors"}
    assert all(evaluation.passed for evaluation in result.get_asset_check_evaluations())
    assert result.get_asset_check_evaluations()
    assert len(DeltaStore(str(tmp_path / "delta" / "answers")).read(["a"])) == 8
    assert DeltaStore(str(tmp_path / "delta" / "answers_dead_letter")).read(["a"]).column("id").to_pylist() == [3]
    assert result.output_for_node("review_count") == 8  # the foreign IO manager still stores and loads


class Notebook(dg.ConfigurableIOManager):
    """A user's own IO manager: not a store of ours."""

    def handle_output(self, context: dg.OutputContext, obj: int) -> None: ...

    def load_input(self, context: dg.InputContext) -> int:
        return 1


def test_an_io_manager_that_is_not_ours_or_dagster_s_default_adds_no_kind() -> None:
    @dg.asset(io_manager_key="notes")
    def noted() -> int:
        return 1

    spec = dg.AssetSpec("mine", kinds={"python"})  # the key "io_manager", unbound: Dagster's default
    defs = with_store_kinds(dg.Definitions(assets=[noted, spec], resources={"notes": Notebook()}))
    assert {s.key.to_user_string(): s.kinds for s in defs.resolve_all_asset_specs()} == {
        "noted": set(), "mine": {"python"}}
    assert dg.materialize([a for a in defs.assets or [] if isinstance(a, dg.AssetsDefinition)],
                          resources={"notes": Notebook()}).success
    assert store_kind(dg.FilesystemIOManager(base_dir="x")) is None and store_kind(None) is None
    assert store_kind(DeltaIOManager.configure_at_launch()) == "deltalake"


def test_an_asset_at_dagster_s_ten_kinds_keeps_them() -> None:
    """Dagster refuses an eleventh kind (``AssetSpec``: "Assets can have at most 10 kinds"): the store is left off
    rather than the Definitions failing to load."""
    ten = {f"k{i}" for i in range(10)}
    spec = dg.AssetSpec("busy", kinds=ten).with_io_manager_key("delta")
    defs = with_store_kinds(dg.Definitions(assets=[spec], resources={"delta": DeltaIOManager(root="unused")}))
    assert defs.resolve_all_asset_specs()[0].kinds == ten


def demo_defs(which: str) -> dg.Definitions:
    if which == "definitions.py":
        sys.path.insert(0, str(ROOT))
        import definitions

        return definitions.defs
    sys.path.insert(0, str(ROOT / "demo" / "src"))  # the dg project: YAML components, IO managers by kind
    from ai_assets_demo import definitions as project

    return project.defs


@pytest.mark.parametrize("which", ["definitions.py", "demo/ (YAML components)"])
def test_the_demo_shows_a_store_on_every_asset(which: str) -> None:
    """The demo binds three stores: each of its assets shows exactly one (the README's lineage picture)."""
    kinds = {spec.key.to_user_string(): store_kinds(spec) for spec in demo_defs(which).resolve_all_asset_specs()}
    assert all(len(found) == 1 for found in kinds.values()), kinds
    assert kinds["raw_reviews"] == {"parquet"} and kinds["review_embeddings"] == {"lancedb"}
    assert kinds["review_topics"] == {"deltalake"} and kinds["product_doc_chunk_vectors"] == {"lancedb"}
