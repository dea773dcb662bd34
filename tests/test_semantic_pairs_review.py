"""Hostile review of semantic_join / semantic_dedup (commit f743da5): inputs a real user sends, each modelled on a
documented behaviour. Vectors are given in columns (no model to load), the verifier is the real HTTP server of
tests/semantic_pairs_world.py."""

import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa
import pytest

from ai_assets import OpenAICompatibleProvider, RetryPolicy, RunOptions
from ai_assets.dagster import OpenAICompatibleResource, ParquetIOManager, ResultCacheResource
from ai_assets.dagster.semantic_pairs import semantic_dedup_asset, semantic_join_asset
from ai_assets.functions.semantic.blocking import side_vectors
from ai_assets.functions.semantic.join import semantic_join
from ai_assets.runtime.errors import ConfigError
from ai_assets.storage.base import PARTITION_COLUMN
from tests.semantic_pairs_world import Verifier, World, serve

CONDITION = "A and B are the same company"
FAST = RunOptions(on_error="null", retry=RetryPolicy(max_attempts=2, base_wait=0.01, max_wait=0.05))
DAYS = ["2026-01-01", "2026-01-02"]


def _vectors(rows: list[list[float]]) -> pa.Array:
    return pa.array(rows, pa.list_(pa.float32(), len(rows[0])))


def _world(*groups: list[str]) -> World:
    world = World()
    for entity, texts in enumerate(groups):
        for text in texts:
            world.add(text, entity)
    return world


@pytest.fixture
def verifier() -> Iterator[tuple[Verifier, str]]:
    judge = Verifier(World())
    with serve(judge) as url:
        yield judge, url


def _llm(url: str) -> OpenAICompatibleProvider:
    return OpenAICompatibleProvider("verifier", base_url=url, api_key="unused")


def test_a_lancedb_right_side_with_duplicate_keys_is_refused_not_joined_to_the_wrong_row(
        tmp_path: Path, verifier: tuple[Verifier, str]) -> None:
    """LanceDB has no primary key: ``create_table`` / ``add`` accept rows with equal values in any column (LanceDB
    docs, "Tables": no uniqueness constraint). A right side whose ``right_key`` repeats used to map every search hit
    on that key to the key's last row, so the pair's verdict was asked on one row's text and reported on another."""
    import lancedb

    judge, url = verifier
    judge.world = _world(["Acme Inc", "Acme Incorporated"], ["Wayne Corp"])
    catalog = lancedb.connect(str(tmp_path / "lance")).create_table("catalog", pa.table({
        "sku": ["A1", "A1"], "title": ["Acme Incorporated", "Wayne Corp"],
        "v": _vectors([[1.0, 0.0], [0.0, 1.0]])}))
    with pytest.raises(ConfigError, match=r"right_key='sku'.*'A1'"):
        semantic_join(pa.table({"item": ["Acme Inc"], "v": _vectors([[1.0, 0.1]])}), catalog, "item", "title",
                      CONDITION, provider=_llm(url), left_vector="v", right_vector="v", right_key="sku", k=1,
                      options=FAST)
    assert judge.requests == 0


def test_a_lancedb_right_side_of_another_dimension_is_a_config_error_naming_both(
        tmp_path: Path, verifier: tuple[Verifier, str]) -> None:
    """A LanceDB vector column is ``fixed_size_list<float>[d]`` and a query of another size is rejected by LanceDB
    with its own error (LanceDB docs, "Vector search": the query vector must match the column's dimension). The
    exact search says which sides disagree; the LanceDB path must say the same, before anything is sent."""
    import lancedb

    judge, url = verifier
    catalog = lancedb.connect(str(tmp_path / "lance")).create_table("catalog", pa.table({
        "sku": ["A1", "B2"], "title": ["Acme", "Wayne"], "v": _vectors([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])}))
    with pytest.raises(ConfigError, match="left vectors have 2 dimensions and the right ones 3"):
        semantic_join(pa.table({"item": ["Acme Inc"], "v": _vectors([[1.0, 0.1]])}), catalog, "item", "title",
                      CONDITION, provider=_llm(url), left_vector="v", right_vector="v", right_key="sku", k=1,
                      options=FAST)
    assert judge.requests == 0


def test_a_lancedb_right_row_without_a_usable_vector_is_never_a_candidate(
        tmp_path: Path, verifier: tuple[Verifier, str]) -> None:
    """A zero vector has no cosine distance (0/0: LanceDB returns NaN or drops it, as numpy gives NaN); the exact
    search leaves such a right row out and reports it once as its own error row. Through LanceDB it must be the
    same: not a candidate with a NaN similarity sent to the verifier."""
    import lancedb

    judge, url = verifier
    judge.world = _world(["Acme Inc", "Acme Incorporated"], ["Zero Corp"], ["Wayne Corp"])
    catalog = lancedb.connect(str(tmp_path / "lance")).create_table("catalog", pa.table({
        "sku": ["A1", "Z0", "W1"], "title": ["Acme Incorporated", "Zero Corp", "Wayne Corp"],
        "v": _vectors([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]])}))
    out = semantic_join(pa.table({"item": ["Acme Inc"], "v": _vectors([[1.0, 0.1]])}), catalog, "item", "title",
                        CONDITION, provider=_llm(url), left_vector="v", right_vector="v", right_key="sku", k=3,
                        options=FAST, keep_unmatched=True)
    pairs = [(a, b) for a, b in zip(out.table["left_item"].to_pylist(), out.table["right_sku"].to_pylist(),
                                    strict=True) if a is not None]
    assert sorted(pairs) == [("Acme Inc", "A1"), ("Acme Inc", "W1")]
    assert all(s is None or np.isfinite(s) for s in out.table["similarity"].to_pylist())
    assert "Zero Corp" not in {b for _, b in judge.pairs}
    assert out.table["match_error"].to_pylist()[-1].startswith("right row 1: a vector that is zero")


def test_a_row_with_a_vector_but_no_text_is_its_own_error_and_never_sent(verifier: tuple[Verifier, str]) -> None:
    """Vectors computed upstream (an embedding asset, a LanceDB table) can sit beside a text that is null: Arrow
    keeps a column's validity per column (Arrow columnar format spec, "Validity bitmaps"). The docs promise a row
    with no text adds one row naming it; with vectors given, such a row was blocked and its pair sent to the
    verifier with an empty side ("A: Acme Inc\\n\\nB: None" or a null cell)."""
    judge, url = verifier
    judge.world = _world(["Acme Inc", "Acme Incorporated"])
    right = pa.table({"title": pa.array(["Acme Incorporated", None], pa.string()),
                      "v": _vectors([[1.0, 0.0], [1.0, 0.05]])})
    out = semantic_join(pa.table({"item": ["Acme Inc"], "v": _vectors([[1.0, 0.1]])}), right, "item", "title",
                        CONDITION, provider=_llm(url), left_vector="v", right_vector="v", k=2, options=FAST,
                        keep_unmatched=True)
    assert judge.requests == 1 and judge.pairs == [("Acme Inc", "Acme Incorporated")]
    assert out.table["match_error"].to_pylist()[-1] == "right row 1: no text in 'title'"


def test_reading_a_vector_column_holds_about_the_vectors_not_a_python_float_each() -> None:
    """Arrow stores ``fixed_size_list<float32>[d]`` as one contiguous float buffer (Arrow columnar format spec,
    "Fixed-Size List Layout"), so n x d vectors are 4 n d bytes. ``to_pylist`` made a Python float (24 bytes) and a
    list slot (8) for each: ~8x that, a 1M x 384 right side ~12 GB instead of 1.5 GB. The peak while reading is
    bounded by a small multiple of the float32 vectors themselves."""
    n, d = 20_000, 64
    vectors = pa.FixedSizeListArray.from_arrays(
        pa.array(np.random.default_rng(0).standard_normal(n * d, np.float32)), d)
    table = pa.table({"text": ["x"] * n, "v": vectors})
    tracemalloc.start()
    side = side_vectors(table, "text", embedder=None, vector_column="v")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert side.valid.all() and side.dim == d
    assert peak < 4 * n * d * 4, f"peak {peak / 1e6:.1f} MB for {n * d * 4 / 1e6:.1f} MB of vectors"


def _partitioned(by_day: dict[str, list[str]], vectors: dict[str, list[list[float]]]) -> dg.AssetsDefinition:
    daily = dg.StaticPartitionsDefinition(DAYS)

    @dg.asset(partitions_def=daily, backfill_policy=dg.BackfillPolicy.single_run())
    def orders(context: dg.AssetExecutionContext) -> pa.Table:
        keys = context.partition_keys
        rows = [t for key in keys for t in by_day[key]]
        table = pa.table({"item": rows, "v": _vectors([vectors[t][0] for t in rows])})
        if len(keys) == 1:
            return table
        return table.append_column(PARTITION_COLUMN, pa.array([key for key in keys for _ in by_day[key]]))

    return orders


def _resources(root: Path, url: str) -> dict[str, object]:
    return {"io_manager": ParquetIOManager(root=str(root / "tables")),
            "llm": OpenAICompatibleResource(model="verifier", base_url=url, api_key="unused"),
            "embedder": OpenAICompatibleResource(model="unused", base_url=url, api_key="unused"),
            "ai_cache": ResultCacheResource(path=str(root / "cache.sqlite"))}


RANGE = {"dagster/asset_partition_range_start": DAYS[0], "dagster/asset_partition_range_end": DAYS[1]}


def test_a_single_run_backfill_of_the_join_writes_each_day_as_its_own_run_would(
        tmp_path: Path, verifier: tuple[Verifier, str]) -> None:
    """Dagster's ``BackfillPolicy.single_run()`` hands one run a range of partitions (Dagster docs, "Backfills":
    the asset receives ``context.partition_keys`` and must write each). The join's output had the left's partition
    only as ``left__partition``, so the IO manager refused the range *after* every verdict was paid. Each day of
    the range must hold what a run of that day alone writes, the right side's unusable rows included, and its
    own dead letters (a verdict that is no JSON: OpenAI's docs warn JSON mode output can be cut off)."""
    judge, url = verifier
    judge.world = _world(["Acme Inc", "Acme Incorporated"], ["Wayne Corp", "Wayne Corporation"], ["Ghost Ltd"])
    judge.malformed = {"Ghost Ltd"}
    by_day = {DAYS[0]: ["Acme Inc"], DAYS[1]: ["Wayne Corp", "Ghost Ltd"]}
    vectors = {"Acme Inc": [[1.0, 0.1]], "Wayne Corp": [[0.1, 1.0]], "Ghost Ltd": [[0.0, 1.0]]}
    orders = _partitioned(by_day, vectors)

    @dg.asset
    def catalog() -> pa.Table:
        return pa.table({"title": pa.array(["Acme Incorporated", "Wayne Corporation", None], pa.string()),
                         "v": _vectors([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])})

    matches = semantic_join_asset("matches", orders, catalog, left_column="item", right_column="title", k=1,
                                  condition=CONDITION, left_vector="v", right_vector="v",
                                  partitions_def=orders.partitions_def,
                                  backfill_policy=dg.BackfillPolicy.single_run(), dead_letter=True,
                                  max_error_rate=1.0)
    assert matches.backfill_policy == dg.BackfillPolicy.single_run()
    resources = _resources(tmp_path, url)
    assert dg.materialize([catalog], resources=resources).success
    result = dg.materialize([orders, catalog, matches], resources=resources, tags=RANGE,
                            selection=[orders, matches], raise_on_error=False)
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    store = ParquetIOManager(root=str(tmp_path / "tables")).store(dg.AssetKey("matches"), {})
    for day, (item, title) in zip(DAYS, [("Acme Inc", "Acme Incorporated"), ("Wayne Corp", "Wayne Corporation")],
                                  strict=True):
        rows = store.read([day]).to_pylist()
        assert [(r["left_item"], r["right_title"]) for r in rows if r["match"]] == [(item, title)]
        assert [r["match_error"] for r in rows if r["match_error"]][-1] == "right row 2: no text in 'title'"
    letters = ParquetIOManager(root=str(tmp_path / "tables")).store(dg.AssetKey("matches_dead_letter"), {})
    assert [letters.read([day]).num_rows for day in DAYS] == [0, 1]
    assert letters.read([DAYS[1]])["a"].to_pylist() == ["Ghost Ltd"]


def test_a_single_run_backfill_of_dedup_clusters_each_day_on_its_own(
        tmp_path: Path, verifier: tuple[Verifier, str]) -> None:
    """The dedup asset clusters "the rows of its upstream partition" (its docstring); a single-run backfill
    (Dagster docs, "Backfills": one run, ``context.partition_keys``) must give each day what a run of that day
    gives, not clusters that cross days (ids of one day then change when a neighbouring day is re-run)."""
    judge, url = verifier
    judge.world = _world(["Acme Inc", "Acme Incorporated", "ACME Inc."])
    by_day = {DAYS[0]: ["Acme Inc", "ACME Inc."], DAYS[1]: ["Acme Incorporated"]}
    vectors = {"Acme Inc": [[1.0, 0.1]], "ACME Inc.": [[1.0, 0.12]], "Acme Incorporated": [[1.0, 0.0]]}
    orders = _partitioned(by_day, vectors)
    resolved = semantic_dedup_asset("resolved", orders, column="item", vector_column="v", k=2, threshold=0.5,
                                    partitions_def=orders.partitions_def,
                                    backfill_policy=dg.BackfillPolicy.single_run())
    resources = _resources(tmp_path, url)
    assert dg.materialize([orders, resolved], resources=resources, tags=RANGE).success
    store = ParquetIOManager(root=str(tmp_path / "tables")).store(dg.AssetKey("resolved"), {})
    ranged = {day: store.read([day])["cluster_id"].to_pylist() for day in DAYS}
    for day in DAYS:
        assert dg.materialize([orders, resolved], resources=resources, partition_key=day).success
    assert {day: store.read([day])["cluster_id"].to_pylist() for day in DAYS} == ranged
    assert len(set(ranged[DAYS[0]])) == 1 and ranged[DAYS[0]][0] != ranged[DAYS[1]][0]


def test_the_pair_factories_pass_on_backfill_and_freshness_policies() -> None:
    """``AssetArgs`` promises every factory passes ``backfill_policy`` and ``freshness_policy`` on to Dagster (as
    ``@dg.asset`` takes them: Dagster docs, "Backfill policies" and "Freshness policies"); the pair factories
    dropped both silently, so a ``single_run()`` join ran one partition per run and no freshness was checked."""
    import datetime

    fresh = dg.FreshnessPolicy.time_window(fail_window=datetime.timedelta(hours=26))
    daily = dg.StaticPartitionsDefinition(DAYS)
    common: dict[str, object] = {"partitions_def": daily, "backfill_policy": dg.BackfillPolicy.single_run(),
                                 "freshness_policy": fresh}
    join = semantic_join_asset("m", "orders", "catalog", left_column="a", right_column="b", condition="same",
                               **common)  # type: ignore[arg-type]
    dedup = semantic_dedup_asset("d", "orders", column="a", **common)  # type: ignore[arg-type]
    for asset, key in ((join, "m"), (dedup, "d")):
        assert asset.backfill_policy == dg.BackfillPolicy.single_run()
        assert asset.specs_by_key[dg.AssetKey(key)].freshness_policy == fresh


def test_an_embedder_that_is_down_fails_the_error_rate_not_a_green_empty_join(verifier: tuple[Verifier, str]) -> None:
    """An embedding endpoint that refuses connections (or answers 503, OpenAI's "server overloaded") leaves every
    row without a vector: nothing is a candidate, nothing is verified, and the verifier's usage showed 0 errors of
    0 rows, so the asset's error-rate check passed on a join that compared nothing. Each row that could not be
    compared because its embedding failed is a failed row of the call (its own error row, named, as before)."""
    from ai_assets.runtime.quality import error_rate

    judge, url = verifier
    down = OpenAICompatibleProvider("embedder", base_url="http://127.0.0.1:9/v1", api_key="unused")
    out = semantic_join(pa.table({"item": ["Acme Inc", "Wayne Corp"]}), pa.table({"title": ["Acme Incorporated"]}),
                        "item", "title", CONDITION, provider=_llm(url), embedder=down, k=1, options=FAST)
    assert judge.requests == 0 and out.candidates == 0
    errors = out.table["match_error"].to_pylist()
    assert len(errors) == 3 and errors[0].startswith("left row 0: ") and errors[2].startswith("right row 0: ")
    assert out.usage.errors == 3 and error_rate(out.usage) == 1.0


@pytest.mark.parametrize("limit", [0, -5, 2.5, True])
def test_dedup_refuses_a_text_limit_that_is_no_positive_int(limit: object, verifier: tuple[Verifier, str]) -> None:
    """``max_text_chars`` is "characters of a text sent"; the join refused 0 / -5 / 2.5, dedup took them: -5 cut
    every text to all but its last 5 characters (Python slicing, ``text[:-5]``) and said "cut to -5 of 12", 0 sent
    empty pairs. Both operators refuse it naming the setting, before anything is sent."""
    from ai_assets.functions.semantic.dedup import semantic_dedup

    judge, url = verifier
    table = pa.table({"name": ["Acme Inc", "Acme Inc."], "v": _vectors([[1.0, 0.0], [1.0, 0.01]])})
    with pytest.raises(ConfigError, match="max_text_chars"):
        semantic_dedup(table, "name", provider=_llm(url), vector_column="v", max_text_chars=limit,  # type: ignore[arg-type]
                       options=FAST)
    assert judge.requests == 0


@pytest.mark.parametrize("bad", [{"k": 0}, {"k": -1}, {"min_similarity": float("nan")}, {"min_similarity": 2.0},
                                 {"max_text_chars": 0}])
def test_a_wrong_setting_fails_when_the_definitions_load_not_when_the_run_pays(bad: dict[str, object]) -> None:
    """``dg check defs`` (Dagster docs, "dg check defs": loads the definitions to catch errors before deploying)
    must catch a YAML ``k: 0`` or ``min_similarity: .nan`` (YAML 1.2 spec: ``.nan`` is a float). The factories
    built the asset and the setting failed only when a run materialized it, after the embeddings were paid."""
    with pytest.raises(ConfigError, match=str(next(iter(bad)))):
        semantic_join_asset("m", "orders", "catalog", left_column="a", right_column="b", condition="same",
                            **bad)  # type: ignore[arg-type]
    dedup_bad = {"threshold" if k == "min_similarity" else k: v for k, v in bad.items()}
    with pytest.raises(ConfigError, match=str(next(iter(dedup_bad)))):
        semantic_dedup_asset("d", "orders", column="a", **dedup_bad)  # type: ignore[arg-type]


def test_a_text_holding_the_pair_separator_cannot_answer_for_another_pair(verifier: tuple[Verifier, str]) -> None:
    """The journal keys a verdict by the request's content (join.py's docstring). Rendered as plain "A: {a}\\n\\nB:
    {b}", the pairs ("x\\n\\nB: y", "z") and ("x", "y\\n\\nB: z") were one request, so one pair's verdict was
    reused for the other, and a row could write "B: ..." into its neighbour's slot. Each side is now a JSON string
    (RFC 8259 section 7: quotes and control characters escaped), so distinct pairs are distinct requests."""
    judge, url = verifier
    left = pa.table({"item": ["x\n\nB: y", "x"], "v": _vectors([[1.0, 0.0], [0.0, 1.0]])})
    right = pa.table({"title": ["z", "y\n\nB: z"], "v": _vectors([[1.0, 0.0], [0.0, 1.0]])})
    out = semantic_join(left, right, "item", "title", CONDITION, provider=_llm(url), left_vector="v",
                        right_vector="v", k=1, options=FAST, keep_unmatched=True)
    assert out.candidates == 2 and judge.requests == 2
    assert sorted(judge.pairs) == [("x", "y\n\nB: z"), ("x\n\nB: y", "z")]


def test_a_lancedb_right_key_that_is_no_column_is_a_config_error_naming_it(
        tmp_path: Path, verifier: tuple[Verifier, str]) -> None:
    """A typo in ``right_key`` gave pyarrow's bare ``KeyError: 'Field "skuu" does not exist in schema'`` after both
    sides were embedded; like every other column setting it is a ConfigError naming the setting and the columns."""
    import lancedb

    _judge, url = verifier
    catalog = lancedb.connect(str(tmp_path / "lance")).create_table("catalog", pa.table({
        "sku": ["A1"], "title": ["Acme"], "v": _vectors([[1.0, 0.0]])}))
    with pytest.raises(ConfigError, match=r"right_key='skuu'.*sku"):
        semantic_join(pa.table({"item": ["Acme Inc"], "v": _vectors([[1.0, 0.1]])}), catalog, "item", "title",
                      CONDITION, provider=_llm(url), left_vector="v", right_vector="v", right_key="skuu", k=1,
                      options=FAST)
