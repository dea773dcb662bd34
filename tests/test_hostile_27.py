"""Issue 27 (and part of 29), read as a hostile user: the spending cap, the store kinds and the generated run
keywords given what a real user gives them (an integer cap, a ledger that is down, two caps in one ledger, a
SourceAsset in the Definitions, a price that is not a number, a task setting of the wrong type).

Each test names the documented behaviour it models. Dagster's: ``AutomationConditionSensorDefinition`` evaluates
every asset of its target in one tick, and an exception raised by one condition fails that whole tick ("Error
while evaluating conditions for <asset>", dagster ``automation_condition_evaluator.py``), so no asset of the
sensor is requested; ``MetadataValue.float`` takes a float only (``FloatMetadataValue``, checked by
``check.opt_float_param``).
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ai_assets import ConfigError, OpenAICompatibleProvider, RetryPolicy, RunOptions
from ai_assets.dagster import (
    DeltaIOManager,
    ParquetIOManager,
    SpendCap,
    prompt_asset,
    summarize_asset,
    with_store_kinds,
)
from ai_assets.functions.tasks import similarity
from ai_assets.runtime.ledger import Spend, open_ledger
from ai_assets.runtime.results import Enriched
from ai_assets.runtime.usage import Prices
from ai_assets.testing import FakeOpenAIServer, Fault

PARTS = dg.StaticPartitionsDefinition(["a", "b", "c"])


def _defs(cap: SpendCap, *, partitions: dg.PartitionsDefinition[Any] | None = PARTS) -> dg.Definitions:
    reviews = dg.AssetSpec("reviews", partitions_def=partitions)
    insights = prompt_asset("insights", "reviews", template="Review: {text}", partitions_def=partitions,
                            automation_condition=dg.AutomationCondition.missing() & cap.condition())

    @dg.asset(automation_condition=dg.AutomationCondition.missing())
    def uncapped() -> int:  # an asset of the same sensor that no cap covers
        return 1

    none = dg.ResourceDefinition.none_resource()
    return dg.Definitions(assets=[reviews, insights, uncapped], resources={"llm": none, "ai_cache": none})


def _tick(defs: dg.Definitions) -> tuple[dict[str, int], dict[str, Any]]:
    """What one tick requests of each asset, and the budget's metadata for ``insights``."""
    with dg.instance_for_test() as instance:
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    sizes = {r.key.to_user_string(): r.true_subset.size for r in result.results}
    found = next(r for r in result.results if r.key == dg.AssetKey("insights"))
    budget = next(c for c in _walk(found) if c.condition.name == "within_budget")
    return sizes, dict(budget.serializable_evaluation.metadata or {})


def _walk(result: Any) -> list[Any]:
    return [result, *[r for child in result.child_results for r in _walk(child)]]


def test_a_cap_given_as_a_whole_number_of_dollars_does_not_fail_the_tick(tmp_path: Path) -> None:
    """``SpendCap(ledger, usd=5)``: a cap is naturally written as an int; the tick's metadata needs a float
    (Dagster's ``MetadataValue.float`` refuses an int), and a failed condition fails the whole tick."""
    cap = SpendCap(str(tmp_path / "ledger.sqlite"), usd=5)
    sizes, metadata = _tick(_defs(cap))
    assert sizes["insights"] == 1 and sizes["uncapped"] == 1
    assert metadata["ai/budget_cap_usd"].value == 5.0
    assert isinstance(cap.usd, float)


def test_a_ledger_in_a_folder_that_cannot_be_created_is_a_config_error_naming_it(tmp_path: Path) -> None:
    """POSIX ``mkdir``: a path under a regular file cannot be created (ENOTDIR); the error names the ledger."""
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(ConfigError, match=r"ledger.*file/sub/ledger\.sqlite"):
        open_ledger(tmp_path / "file" / "sub" / "ledger.sqlite")


@pytest.mark.parametrize("where", ["uncreatable", "redis_down"])
def test_a_ledger_that_cannot_be_read_at_tick_time_holds_only_its_assets_and_says_why(
        where: str, tmp_path: Path) -> None:
    """A cap must fail closed (a budget that cannot be read is not a budget left), but one asset's ledger must
    not fail the whole tick: Dagster fails every asset of the sensor when one condition raises. The tick holds
    the capped asset, requests the others, and its metadata names the ledger (never its password)."""
    (tmp_path / "file").write_text("not a folder")
    url = (str(tmp_path / "file" / "ledger.sqlite") if where == "uncreatable"
           else "redis://:hunter2secret@127.0.0.1:1/0")  # port 1: nothing listens (connection refused)
    sizes, metadata = _tick(_defs(SpendCap(url, usd=10.0)))
    assert sizes["insights"] == 0 and sizes["uncapped"] == 1
    assert metadata["ai/budget_held"].value == 3
    reason = metadata["ai/budget"].value
    assert "cannot read the spend ledger" in reason and "hunter2" not in reason
    assert ("ledger.sqlite" in reason) if where == "uncreatable" else ("127.0.0.1:1" in reason)


def test_caps_with_different_names_in_one_ledger_count_only_their_own_spending(tmp_path: Path) -> None:
    """``SpendCap.name`` "tells caps in one ledger apart" (its docstring): team B's $100 month must not hold
    team A's partitions under A's $5 cap; team A's own spending still does."""
    ledger_path = str(tmp_path / "ledger.sqlite")
    ledger = open_ledger(ledger_path)
    now = time.time()
    ledger.record([Spend("team_b_asset", "x", "r1", 100.0, now, cap="team_b")])
    ledger.close()
    sizes, _ = _tick(_defs(SpendCap(ledger_path, usd=5.0, name="team_a")))
    assert sizes["insights"] == 1
    ledger = open_ledger(ledger_path)
    ledger.record([Spend("insights", "old", "r0", 5.0, now, cap="team_a")])
    ledger.close()
    sizes, metadata = _tick(_defs(SpendCap(ledger_path, usd=5.0, name="team_a")))
    assert sizes["insights"] == 0 and metadata["ai/budget_held"].value == 3
    assert math.isclose(metadata["ai/budget_spent_usd"].value, 5.0)


def test_caps_with_different_names_in_one_redis_ledger_count_only_their_own_spending(redis: Any) -> None:
    """The same per-cap accounting in the Redis ledger (a database of its own, flushed first)."""
    import redis as redis_lib

    url = f"{redis.url}/14"
    redis_lib.Redis.from_url(url).flushdb()
    ledger = open_ledger(url)
    try:
        now = time.time()
        ledger.record([Spend("a", "p", "r", 2.0, now, cap="one"), Spend("a", "p", "r", 2.0, now, cap="two"),
                       Spend("b", "p", "r", 7.0, now, cap="two")])
        assert ledger.spent(now - 1, cap="one") == 2.0 and ledger.spent(now - 1, cap="two") == 9.0
        assert ledger.recent_costs("a", cap="one") == [2.0] and ledger.recent_costs("b", cap="one") == []
    finally:
        ledger.close()


def test_store_kinds_leave_a_source_asset_alone(tmp_path: Path) -> None:
    """A ``SourceAsset`` (and ``@observable_source_asset``) is still a documented way to declare an external
    table; Dagster's ``Definitions.map_asset_specs`` refuses a Definitions holding one, which made
    ``with_store_kinds`` unusable for such a project."""

    @dg.asset(io_manager_key="delta")
    def table() -> int:
        return 1

    @dg.observable_source_asset
    def watched() -> dg.DataVersion:
        return dg.DataVersion("1")

    external = dg.SourceAsset("external", io_manager_key="delta")
    defs = with_store_kinds(dg.Definitions(
        assets=[table, external, watched],
        resources={"delta": DeltaIOManager(root=str(tmp_path / "d")),
                   "io_manager": ParquetIOManager(root=str(tmp_path / "p"))}))
    specs = {s.key.to_user_string(): s for s in defs.resolve_all_asset_specs()}
    assert "deltalake" in specs["table"].kinds
    assert {"external", "watched"} <= set(specs)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -1.0])
def test_a_price_that_is_not_a_finite_amount_is_refused_when_given(bad: float) -> None:
    """A price is dollars per million tokens (OpenAI's pricing page): finite and >= 0. Accepted, a NaN or
    negative price made every cost NaN or negative, and the spend ledger refused it after the run had paid."""
    with pytest.raises(ConfigError, match="input_per_million"):
        Prices(input_per_million=bad)
    with pytest.raises(ConfigError, match="cached_input_per_million"):
        Prices(input_per_million=1.0, cached_input_per_million=bad)


def test_a_task_setting_of_the_wrong_type_is_refused_when_the_asset_is_defined() -> None:
    """``summarize_asset(..., max_words="50")`` is a type error for mypy (the typed view says ``int``); untyped
    code (a notebook, settings read from env) must get it at definition time naming the setting, not a
    ``TypeError: '<' not supported`` when the daemon runs the asset."""
    with pytest.raises(ConfigError, match="max_words"):
        summarize_asset("summary", "reviews", column="text", max_words="50")  # type: ignore[arg-type]


def test_similarity_keeps_the_rows_that_used_up_their_attempts(server: FakeOpenAIServer) -> None:
    """Every AI function returns its dead letters in ``failed`` (``Enriched.failed``); similarity dropped both
    passes' failures, so ``similarity_asset(dead_letter=True)`` wrote none. A 500 on every attempt models a
    provider down for those rows (OpenAI's error codes: 500 "Issue on our servers")."""
    server.set_faults(Fault("500", match="[bad]", attempts=None))
    embedder = OpenAICompatibleProvider("fake-embed", base_url=server.base_url, api_key="k")
    table = pa.table({"id": [0, 1, 2], "a": ["fine", "x [bad]", "ok"], "b": ["fine", "y", "z [bad]"]})
    options = RunOptions(on_error="null", retry=RetryPolicy(max_attempts=2, base_wait=0.01, max_wait=0.02))
    out = similarity(table, "a", "b", provider=embedder, options=options)
    assert isinstance(out, Enriched)
    errors = out.table.column("similarity_error").to_pylist()
    failed_ids = [i for i, e in enumerate(errors) if e is not None]  # a failed batch fails each of its rows
    assert failed_ids
    assert sorted(set(out.failed.table().column("id").to_pylist())) == failed_ids


def test_a_ledger_that_cannot_be_written_keeps_the_paid_output_and_says_what_was_not_recorded(
        tmp_path: Path, server: FakeOpenAIServer) -> None:
    """The run's answers are billed by the provider whether or not our ledger is up: failing the step would
    discard a good, paid output (and a retry answered from the journal records $0). The materialization stands,
    the cap that could be written gets the spend under its own name, and the metadata says what was not."""
    from ai_assets.dagster import OpenAICompatibleResource, ResultCacheResource

    (tmp_path / "file").write_text("not a folder")
    team_a = SpendCap(str(tmp_path / "ledger.sqlite"), usd=1e9, name="team_a")
    down = SpendCap(str(tmp_path / "file" / "ledger.sqlite"), usd=1e9)

    @dg.asset(partitions_def=PARTS, name="reviews")
    def reviews() -> pa.Table:
        return pa.table({"text": ["great phone", "bad battery"]})

    insights = prompt_asset("insights", reviews, template="Review: {text}", partitions_def=PARTS,
                            prices=Prices(input_per_million=1_000_000.0),
                            automation_condition=dg.AutomationCondition.missing() & team_a.condition()
                            & down.condition())
    resources = {"llm": OpenAICompatibleResource(model="m", base_url=server.base_url, api_key="unused"),
                 "ai_cache": ResultCacheResource(path=str(tmp_path / "journal.sqlite")),
                 "io_manager": ParquetIOManager(root=str(tmp_path / "warehouse"))}
    with dg.instance_for_test() as instance:
        result = dg.materialize([reviews, insights], partition_key="a", instance=instance, resources=resources)
        assert result.success
        event = instance.get_latest_materialization_event(dg.AssetKey("insights"))
        assert event is not None and event.asset_materialization is not None
        unrecorded = event.asset_materialization.metadata["ai/budget_unrecorded"].value
    assert "not recorded" in str(unrecorded) and "file/ledger.sqlite" in str(unrecorded)
    ledger = open_ledger(team_a.ledger)
    try:
        billed = server.stats().prompt_tokens
        assert ledger.spent(0, cap="team_a") == pytest.approx(billed * 1.0)
        assert ledger.spent(0) == 0.0  # nothing against the "default" cap of this ledger
    finally:
        ledger.close()


def test_a_key_prefix_given_as_one_string_is_one_prefix_as_in_dagster() -> None:
    """Dagster's ``@asset(key_prefix=...)`` takes ``str | Sequence[str]`` ("If a string is provided, it is used as
    a single-element prefix"); ``key_prefix="team"`` made ``t/e/a/m/insights``."""
    asset = prompt_asset("insights", "reviews", template="Review: {text}", key_prefix="team")
    assert dg.AssetKey(["team", "insights"]) in asset.keys


@pytest.mark.parametrize(("setting", "value"), [
    ("provider_key", None), ("max_error_rate", None), ("max_error_rate", math.nan), ("max_error_rate", 1.5),
    ("dead_letter", None), ("dead_letter", "yes"), ("options", "fast"), ("model", 5),
    ("prices", {"input_per_million": 1.0}), ("automation_condition", "eager"), ("owners", "team:x"),
    ("kinds", "parquet")])
def test_an_enrichment_setting_of_the_wrong_type_is_refused_by_name_when_the_asset_is_defined(
        setting: str, value: Any) -> None:
    """``EnrichArgs`` declares each setting's type (mypy holds typed callers to it); untyped callers (notebooks,
    settings read from the environment) got a Dagster ``CheckError`` on a set member, an ``AttributeError`` on
    ``'str'.children``, or worse, nothing: ``options="fast"`` and ``prices={...}`` failed only when the daemon ran
    the asset, a NaN ``max_error_rate`` turned the error-rate check off (no rate is > NaN)."""
    with pytest.raises(ConfigError, match=setting):
        prompt_asset("insights", "reviews", template="Review: {text}", **{setting: value})


def test_the_documented_yaml_automation_condition_uses_dagsters_current_template_scope() -> None:
    """Dagster's components docs ("Template variables"): ``{{ dg.AutomationCondition.eager() }}``; the old
    ``{{ automation_condition.eager() }}`` scope warns "deprecated and will be removed" and offers only eager and
    on_cron. The snippet our docs give a user must resolve without that warning."""
    import re
    import warnings

    from ai_assets.dagster import components

    docs = (Path(__file__).resolve().parents[1] / "docs" / "dagster.md").read_text()
    snippets = re.findall(r'automation_condition: ("\{\{.*?\}\}")', docs)
    assert snippets
    for snippet in snippets:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            component = components.PromptComponent.resolve_from_yaml(
                f'name: insights\nupstream: reviews\ntemplate: "Review: {{text}}"\nautomation_condition: {snippet}\n')
        assert isinstance(component.automation_condition, dg.AutomationCondition)
        assert not [w for w in caught if "will be removed" in str(w.message)], snippet


def test_similarity_of_a_table_reports_progress_through_both_passes(server: FakeOpenAIServer) -> None:
    """``progress(rows_done, rows_total)`` (``RunArgs.progress``: "called with the rows done and the total as the
    call goes"): similarity embeds ``left`` for the whole table, then ``right``; the first pass was silent, so a
    progress bar sat at 0 for half the call. Each pass now counts half a row, monotonic, ending at the total."""
    embedder = OpenAICompatibleProvider("fake-embed", base_url=server.base_url, api_key="k")
    table = pa.table({"a": [f"a{i}" for i in range(120)], "b": [f"b{i}" for i in range(120)]})
    calls: list[tuple[int, int | None]] = []
    similarity(table, "a", "b", provider=embedder, progress=lambda done, total: calls.append((done, total)),
               options=RunOptions(window_rows=30))
    assert len(calls) == 8  # four windows a pass
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)
    assert calls[0] == (15, 120) and calls[-1] == (120, 120)


def test_two_assets_under_one_cap_do_not_both_spend_what_is_left_in_one_tick(tmp_path: Path) -> None:
    """Dagster evaluates each asset's condition in turn within one tick, then launches every request together
    (docs: "Declarative Automation", the sensor's tick); each asset read the same $1.00 left, and two assets at
    $0.60 a partition both got one: $1.20 requested under a $1.00 cap. What one asset's request will cost is
    counted against the cap for the rest of the tick."""
    cap = SpendCap(str(tmp_path / "ledger.sqlite"), usd=1.0)
    ledger = open_ledger(cap.ledger)
    now = time.time() - 40 * 86400  # last month or before: a cost estimate, not this month's spending
    ledger.record([Spend("first", "old", "r0", 0.6, now), Spend("second", "old", "r0", 0.6, now)])
    ledger.close()
    reviews = dg.AssetSpec("reviews", partitions_def=PARTS)
    assets = [prompt_asset(name, "reviews", template="Review: {text}", partitions_def=PARTS,
                           automation_condition=dg.AutomationCondition.missing() & cap.condition())
              for name in ("first", "second")]
    none = dg.ResourceDefinition.none_resource()
    defs = dg.Definitions(assets=[reviews, *assets], resources={"llm": none, "ai_cache": none})
    with dg.instance_for_test() as instance:
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    sizes = {r.key.to_user_string(): r.true_subset.size for r in result.results}
    assert sizes["first"] + sizes["second"] == 1  # $0.60 fits once in $1.00


def test_the_api_reference_documents_each_generated_task_factory() -> None:
    """docs/api.md is built by mkdocstrings, which reads the source statically (griffe; its docs: "Griffe ...
    visits the AST"): a factory made at import time by ``_named`` was an undocumented attribute
    ``summarize_asset: _Summarize``. Each needs a docstring there naming its task's own settings."""
    import griffe

    from ai_assets.functions import tasks

    package = griffe.load("ai_assets.dagster", search_paths=[str(Path(__file__).resolve().parents[1])],
                          resolve_aliases=True, resolve_external=False)
    for task, entry in tasks.TASKS.items():
        found = package[f"{task}_asset"]
        target = found.final_target if found.is_alias else found
        assert target.docstring is not None, task
        for setting in (*entry.inputs, *entry.settings):
            assert f"``{setting}``" in target.docstring.value, (task, setting)


@pytest.mark.parametrize("keyword", ["task", "arguments"])
def test_a_generated_factory_refuses_task_asset_s_own_parameters_as_its_own_unknown_keyword(keyword: str) -> None:
    """Python's rule for a keyword a function does not take: ``f() got an unexpected keyword argument 'x'``
    (the language reference, "Calls"). ``summarize_asset`` takes no ``task`` or ``arguments``; it said
    ``task_asset() got multiple values for argument 'task'``, naming a function the user never called."""
    with pytest.raises(TypeError, match=rf"summarize_asset\(\) got an unexpected keyword argument '{keyword}'"):
        summarize_asset("summary", "reviews", column="text", **{keyword: "translate"})


@settings(max_examples=200, deadline=None)
@given(moment=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)))
def test_a_spend_counts_in_the_utc_day_and_month_that_hold_it_up_to_the_last_second(moment: datetime) -> None:
    """Calendar periods in UTC (the docs: "a calendar day's or month's budget"): a spend at 23:59:59.999 of a
    month's last day counts in that month, and the tick at 00:00:00 of the next starts from nothing. No defect was
    found here; this holds the boundary (leap days, 28-31 day months) for any moment."""
    from ai_assets.runtime.ledger import period_start

    at = moment.timestamp()
    for period in ("day", "month"):
        start = period_start(period, at)
        assert start <= at
        assert period_start(period, start) == start
    last_second = datetime(moment.year, moment.month, 1, tzinfo=UTC) + timedelta(days=32)
    next_month = last_second.replace(day=1).timestamp()
    assert period_start("month", next_month - 0.001) < next_month == period_start("month", next_month)
