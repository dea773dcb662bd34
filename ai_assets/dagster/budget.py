"""A spending cap for Declarative Automation: an automation condition that lets a tick request only the partitions
whose estimated cost fits what is left of a period's budget, read from the spend ledger
(``ai_assets.runtime.ledger``) that every enrichment under the condition feeds with its billed cost.

    cap = SpendCap("warehouse/ledger.sqlite", usd=50.0, period="month")
    insights = prompt_asset(..., automation_condition=dg.AutomationCondition.eager() & cap.condition())
    defs = dg.Definitions(assets=[...], sensors=[cap.sensor()])

The condition is Python of ours, not one of Dagster's built-in ones, so it is evaluated in the code location
(``AutomationConditionSensorDefinition(use_user_code_server=True)``, which ``cap.sensor()`` builds; Dagster's docs,
"Arbitrary Python automation conditions"). A tick that holds partitions back says why in the evaluation's metadata
(the UI's automation history): spent, cap, the estimate per partition and how many were held. The cap is kept in
the ledger: ``SpendCap.raise_to(usd)`` (or ``python -m ai_assets.dagster.budget LEDGER NAME USD``) releases held
partitions at the next tick, without a redeploy.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import dagster as dg

from ai_assets.runtime.errors import ConfigError
from ai_assets.runtime.ledger import Period, Spend, check_cap, open_ledger, period_start
from ai_assets.runtime.pg import redact
from ai_assets.runtime.scrub import scrub_and_cut
from ai_assets.runtime.usage import Prices, Usage


@dataclass(frozen=True)
class SpendCap:
    """``usd`` per calendar ``period`` (UTC day or month) for the assets whose condition includes ``condition()``;
    ``name`` tells caps in one ledger apart. The cap set in the ledger (``raise_to``) wins over ``usd``."""

    ledger: str
    usd: float
    period: Period = "month"
    name: str = "default"

    def __post_init__(self) -> None:
        object.__setattr__(self, "usd", check_cap(self.usd))  # usd=5 is 5.0: Dagster's float metadata takes no int
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"a spending cap's name must be a non-empty string, got {self.name!r}")
        period_start(self.period)  # refuses another period now, not at the first tick

    def condition(self) -> dg.AutomationCondition[Any]:
        return WithinBudget(self)

    def sensor(self, name: str = "ai_assets_budget", target: Any = None,
               minimum_interval_seconds: int = 30) -> dg.AutomationConditionSensorDefinition:
        """The automation sensor that evaluates these conditions in the code location (every asset by default)."""
        return dg.AutomationConditionSensorDefinition(
            name, target=target if target is not None else dg.AssetSelection.all(), use_user_code_server=True,
            minimum_interval_seconds=minimum_interval_seconds, default_status=dg.DefaultSensorStatus.RUNNING)

    def raise_to(self, usd: float) -> None:
        """Set this cap in the ledger (raise or lower it): the next tick reads it."""
        ledger = open_ledger(self.ledger)
        try:
            ledger.set_cap(self.name, usd)
        finally:
            ledger.close()


@dataclass(frozen=True)
class Allowance:
    """What one tick may request of one asset."""

    spent: float
    cap: float
    estimate: float | None
    """US dollars per partition: the most expensive of the asset's recent partitions (None: none recorded yet)."""

    def partitions(self, wanted: int) -> int:
        left = self.cap - self.spent
        if left <= 0:
            return 0
        if self.estimate is None:  # nothing recorded yet: one partition, whose cost then estimates the rest
            return min(wanted, 1)
        fits = left / self.estimate if self.estimate > 0 else math.inf
        return wanted if fits >= wanted else math.floor(fits + 1e-9)


def allowance(cap: SpendCap, asset: str) -> Allowance:
    ledger = open_ledger(cap.ledger)
    try:
        stored = ledger.cap(cap.name)
        costs = ledger.recent_costs(asset, cap=cap.name)
        spent = ledger.spent(period_start(cap.period), cap=cap.name)
    finally:
        ledger.close()
    return Allowance(spent, cap.usd if stored is None else stored, max(costs) if costs else None)


def ledger_problem(ledger: str, exc: Exception) -> str:
    """Why ``ledger`` could not be used, naming it without its password (in the URL or the error)."""
    password = urlsplit(ledger).password if "://" in ledger else None
    detail = scrub_and_cut(f"{type(exc).__name__}: {exc}", [password] if password else [], 300)
    return f"cannot read the spend ledger {redact(ledger)} ({detail})"


_reserved: dict[tuple[str, str, datetime], float] = {}
"""What the assets evaluated so far in a tick (its evaluation time) will cost, per ledger and cap: Dagster
evaluates each asset's condition in turn and launches the requests together, so each must see what the ones
before it took. Kept in the code location's process, which evaluates the tick; the last few ticks only."""


def _reserve(tick: tuple[str, str, datetime], usd: float) -> None:
    if len(_reserved) > 64:  # a code location that runs for months: forget the ticks before this one
        for old in [t for t in _reserved if t[2] < tick[2]]:
            del _reserved[old]
    _reserved[tick] = _reserved.get(tick, 0.0) + usd


class WithinBudget(dg.AutomationCondition[dg.AssetKey]):
    """True for as many of the candidate partitions (oldest first) as the budget left can pay for."""

    def __init__(self, cap: SpendCap) -> None:
        self.cap = cap

    @property
    def description(self) -> str:
        return f"within the {self.cap.name} budget of ${self.cap.usd:g} a {self.cap.period}"

    @property
    def name(self) -> str:
        return "within_budget"

    def evaluate(self, context: dg.AutomationContext[dg.AssetKey]) -> dg.AutomationResult[dg.AssetKey]:
        candidates = context.candidate_subset
        if candidates.is_empty:
            return dg.AutomationResult(context, candidates)
        try:
            allowed = allowance(self.cap, context.key.to_user_string())
        except Exception as exc:  # any failure of any backend (SQLite, Postgres, Redis): see _unreadable
            return self._unreadable(context, ledger_problem(self.cap.ledger, exc))
        tick = (self.cap.ledger, self.cap.name, context.evaluation_time)
        spent, reserved = allowed.spent, _reserved.get(tick, 0.0)
        allowed = replace(allowed, spent=spent + reserved)
        if candidates.is_partitioned:
            keys = sorted(candidates.expensively_compute_partition_keys())
            n = allowed.partitions(len(keys))
            chosen = candidates.compute_intersection_with_partition_keys(set(keys[:n]))
        else:
            n = allowed.partitions(1)
            chosen = candidates if n else context.get_empty_subset()
        _reserve(tick, n * (allowed.estimate or 0.0))
        held = candidates.size - chosen.size
        reason = (f"{held} held: ${spent:.4f} spent of ${allowed.cap:g} this {self.cap.period}"
                  f"{f' and ${reserved:.4f} requested of it earlier this tick' if reserved else ''}, about "
                  f"${allowed.estimate or 0:.4f} a partition" if held else "within budget")
        if held:
            context.log.info(f"{context.key.to_user_string()}: {reason}")
        metadata = {"ai/budget": dg.MetadataValue.text(reason),
                    "ai/budget_spent_usd": dg.MetadataValue.float(round(spent, 6)),
                    "ai/budget_cap_usd": dg.MetadataValue.float(allowed.cap),
                    "ai/budget_held": dg.MetadataValue.int(held),
                    "ai/budget_reserved_usd": dg.MetadataValue.float(round(reserved, 6))}
        return dg.AutomationResult(context, chosen, metadata=metadata)

    def _unreadable(self, context: dg.AutomationContext[dg.AssetKey], problem: str) -> dg.AutomationResult[Any]:
        """A ledger that cannot be read holds every candidate of this asset (a budget that cannot be read is not
        a budget left) and says why, instead of raising: Dagster fails the whole tick, every asset of the sensor,
        when one condition raises."""
        held = context.candidate_subset.size
        reason = f"{held} held: {problem}"
        context.log.warning(f"{context.key.to_user_string()}: {reason}")
        metadata = {"ai/budget": dg.MetadataValue.text(reason), "ai/budget_held": dg.MetadataValue.int(held),
                    "ai/budget_cap_usd": dg.MetadataValue.float(self.cap.usd)}
        return dg.AutomationResult(context, context.get_empty_subset(), metadata=metadata)


def caps_of(condition: dg.AutomationCondition[Any] | None) -> Iterator[SpendCap]:
    """The caps inside an asset's automation condition (``eager() & cap.condition()``)."""
    if condition is None:
        return
    if isinstance(condition, WithinBudget):
        yield condition.cap
    for child in condition.children:
        yield from caps_of(child)


def record_spend(caps: Sequence[SpendCap], asset: str, run_id: str, usage: Usage, prices: Prices | None,
                 partitions: Sequence[str], now: float) -> list[str]:
    """Each partition's billed cost (journal hits cost nothing) into the ledgers of ``caps``, against each cap's
    name. A ledger that cannot be written does not fail the materialization (its output is paid for and good):
    the problems are returned, for a warning and the ``ai/budget_unrecorded`` metadata."""
    groups = {p: usage.groups.get(p, Usage()) for p in partitions} if partitions else {"": usage}
    costs = {p: part.cost(prices) for p, part in groups.items()}
    problems = []
    for ledger_url in sorted({cap.ledger for cap in caps}):
        names = sorted({cap.name for cap in caps if cap.ledger == ledger_url})
        try:
            ledger = open_ledger(ledger_url)
            try:
                ledger.record([Spend(asset, p, run_id, usd, now, cap=name) for name in names
                               for p, usd in costs.items()])
            finally:
                ledger.close()
        except Exception as exc:  # any backend's failure: the run's output stands, the warning says what is missing
            problems.append(f"${sum(costs.values()):.6f} not recorded: "
                            f"{ledger_problem(ledger_url, exc).replace('read', 'write', 1)}")
    return problems


def report_spend(context: dg.AssetExecutionContext, key: dg.AssetKey, caps: Sequence[SpendCap], usage: Usage,
                 prices: Prices | None, partitions: Sequence[str]) -> None:
    """``record_spend`` of a materialization; what could not be recorded is a warning and each partition's
    ``ai/budget_unrecorded`` metadata (the output is paid for and kept; the cap undercounts until someone looks)."""
    problems = record_spend(caps, key.to_user_string(), context.run.run_id, usage, prices, partitions, time.time())
    for problem in problems:
        context.log.warning(f"{key.to_user_string()}: {problem}")
    targets: list[str | None] = [*partitions] or [None]
    for target in targets if problems else []:
        context.add_asset_metadata({"ai/budget_unrecorded": "; ".join(problems)}, asset_key=key,
                                   partition_key=target)


if __name__ == "__main__":  # python -m ai_assets.dagster.budget LEDGER NAME USD
    import sys

    location, cap_name, dollars = sys.argv[1:4]
    SpendCap(location, float(dollars), name=cap_name).raise_to(float(dollars))
    print(f"cap {cap_name!r} in {location}: ${float(dollars):g}")
