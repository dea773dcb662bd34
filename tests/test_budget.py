"""A spending cap for Declarative Automation: a tick requests only the partitions whose estimated cost fits what is
left of the period's budget, from a ledger fed by each materialization's billed cost.

Models Dagster's documented Declarative Automation evaluation (docs.dagster.io, "Declarative Automation" and
"Arbitrary Python automation conditions": a condition's true subset is what a tick requests; a custom condition is
evaluated in the code location by an ``AutomationConditionSensorDefinition(use_user_code_server=True)``), evaluated
here with ``dg.evaluate_automation_conditions`` as the sensor does, and a real materialization against the fake
OpenAI server billing tokens at the prices given.
"""

from __future__ import annotations

import math
import time
import uuid
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ai_assets import ConfigError
from ai_assets.dagster import (
    OpenAICompatibleResource,
    ParquetIOManager,
    ResultCacheResource,
    SpendCap,
    prompt_asset,
)
from ai_assets.runtime.ledger import Spend, open_ledger, period_start
from ai_assets.runtime.usage import Prices
from ai_assets.testing import FakeOpenAIServer

PARTS = dg.StaticPartitionsDefinition(["a", "b", "c", "d"])


def _ledger_url(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if kind == "sqlite":
        return str(tmp_path / "ledger.sqlite")
    if kind == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return f"{request.getfixturevalue('redis').url}/{uuid.uuid4().int % 15 + 1}"


@pytest.mark.parametrize("kind", ["sqlite", "postgres", "redis"])
def test_the_ledger_keeps_one_entry_per_partition_and_run_and_sums_a_period(
        kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    url = _ledger_url(kind, tmp_path, request)
    ledger = open_ledger(url)
    try:
        if kind == "redis":  # a shared Redis database: start from nothing
            import redis as redis_lib

            redis_lib.Redis.from_url(url).flushdb()
        now = time.time()
        month = period_start("month", now)
        ledger.record([Spend("insights", "a", "run1", 0.25, now), Spend("insights", "b", "run1", 0.5, now),
                       Spend("other", "a", "run0", 9.0, month - 10)])  # last month's: not counted
        ledger.record([Spend("insights", "a", "run1", 0.25, now)])  # the same run's partition again: one entry
        assert math.isclose(ledger.spent(month), 0.75)
        assert sorted(ledger.recent_costs("insights")) == [0.25, 0.5]
        assert ledger.cap("default") is None
        ledger.set_cap("default", 2.0)
        ledger.set_cap("default", 3.0)
        assert ledger.cap("default") == 3.0
    finally:
        ledger.close()


@pytest.mark.parametrize("bad", [math.nan, math.inf, -1.0])
def test_a_cost_or_cap_that_is_not_a_finite_amount_is_refused(bad: float, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="finite"):
        Spend("insights", "a", "run", bad, time.time())
    with pytest.raises(ConfigError, match="finite"):
        SpendCap(str(tmp_path / "l.sqlite"), usd=bad)
    with pytest.raises(ConfigError, match="period"):
        SpendCap(str(tmp_path / "l.sqlite"), usd=1.0, period="week")  # type: ignore[arg-type]


def _defs(cap: SpendCap) -> dg.Definitions:
    reviews = dg.AssetSpec("reviews", partitions_def=PARTS)
    insights = prompt_asset("insights", "reviews", template="Review: {text}", partitions_def=PARTS,
                            prices=Prices(input_per_million=1_000_000.0, output_per_million=0.0),
                            automation_condition=dg.AutomationCondition.missing() & cap.condition())
    none = dg.ResourceDefinition.none_resource()  # conditions are evaluated, nothing is run
    return dg.Definitions(assets=[reviews, insights], resources={"llm": none, "ai_cache": none},
                          sensors=[cap.sensor()])


def _tick(defs: dg.Definitions, instance: dg.DagsterInstance) -> tuple[set[str], dict[str, Any]]:
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    found = next(r for r in result.results if r.key == dg.AssetKey("insights"))
    budget = next(c for c in _walk(found) if c.condition.name == "within_budget")
    keys = found.true_subset.expensively_compute_partition_keys() if found.true_subset.size else set()
    return set(keys), dict(budget.serializable_evaluation.metadata or {})


def _walk(result: Any) -> list[Any]:
    return [result, *[r for child in result.child_results for r in _walk(child)]]


def test_a_tick_requests_only_what_the_budget_left_can_pay_for_and_raising_the_cap_releases_it(
        tmp_path: Path) -> None:
    """$0.90 spent this month of a $1.00 cap, $0.30 a partition: the tick requests nothing and says why;
    the cap raised to $1.65 (in the ledger, no redeploy): the next tick requests two of the four."""
    cap = SpendCap(str(tmp_path / "ledger.sqlite"), usd=1.0)
    ledger = open_ledger(cap.ledger)
    now = time.time()
    ledger.record([Spend("other", "x", "r0", 0.6, now), Spend("insights", "old", "r0", 0.3, now)])
    ledger.close()
    defs = _defs(cap)
    with dg.instance_for_test() as instance:
        requested, metadata = _tick(defs, instance)
        assert requested == set()
        assert metadata["ai/budget_held"].value == 4
        assert "spent of $1" in metadata["ai/budget"].value
        cap.raise_to(1.65)
        requested, metadata = _tick(defs, instance)
        assert requested == {"a", "b"}
        assert metadata["ai/budget_held"].value == 2


def test_with_nothing_recorded_a_tick_requests_one_partition_whose_billed_cost_then_estimates_the_rest(
        tmp_path: Path, server: FakeOpenAIServer) -> None:
    """The first materialization feeds the ledger with what the server billed (its prompt tokens at $1 a token
    here); a re-run of the same partition, answered from the journal, adds nothing; the next tick then holds
    partitions by that cost."""
    cap = SpendCap(str(tmp_path / "ledger.sqlite"), usd=1e9)
    with dg.instance_for_test() as instance:
        requested, _ = _tick(_defs(cap), instance)
        assert len(requested) == 1

    @dg.asset(partitions_def=PARTS, name="reviews")
    def reviews() -> pa.Table:
        return pa.table({"text": ["great phone", "bad battery"]})

    insights = prompt_asset("insights", reviews, template="Review: {text}", partitions_def=PARTS,
                            prices=Prices(input_per_million=1_000_000.0, output_per_million=0.0),
                            automation_condition=dg.AutomationCondition.missing() & cap.condition())
    resources = {"llm": OpenAICompatibleResource(model="m", base_url=server.base_url, api_key="unused"),
                 "ai_cache": ResultCacheResource(path=str(tmp_path / "journal.sqlite")),
                 "io_manager": ParquetIOManager(root=str(tmp_path / "warehouse"))}
    ledger = open_ledger(cap.ledger)
    try:
        with dg.instance_for_test() as instance:
            dg.materialize([reviews, insights], partition_key="a", instance=instance, resources=resources)
            billed = server.stats().prompt_tokens
            assert billed > 0
            assert ledger.spent(0) == pytest.approx(billed * 1.0)
            dg.materialize([reviews, insights], partition_key="a", instance=instance, resources=resources)
            assert server.stats().prompt_tokens == billed  # answered from the journal
            assert ledger.spent(0) == pytest.approx(billed * 1.0)
            assert ledger.recent_costs("insights") == [0.0, pytest.approx(billed * 1.0)]  # newest first
        cap.raise_to(billed * 2.5)  # room for two more partitions at that cost
        with dg.instance_for_test() as instance:
            requested, metadata = _tick(_defs(cap), instance)
            assert len(requested) == 1 and metadata["ai/budget_held"].value == 3
    finally:
        ledger.close()


@settings(max_examples=200, deadline=None)
@given(spent=st.floats(0, 10), cap=st.floats(0, 10), estimate=st.one_of(st.none(), st.floats(0, 5)),
       wanted=st.integers(0, 30))
def test_an_allowance_never_requests_more_than_the_budget_left_pays_for(
        spent: float, cap: float, estimate: float | None, wanted: int) -> None:
    from ai_assets.dagster.budget import Allowance

    n = Allowance(spent, cap, estimate).partitions(wanted)
    assert 0 <= n <= wanted
    if estimate is not None and estimate > 0:
        assert n * estimate <= max(cap - spent, 0) + 1e-6
    if cap <= spent:
        assert n == 0
