"""The op behind an enrichment asset, and the Dagster side of dead letters: with ``dead_letter=True`` the op also
writes, after its output, the rows that used up their attempts to ``<name>_dead_letter`` (see
``ai_assets.runtime.dead_letter``).

Every output of the op is optional (a subsettable multi-asset): an estimate (``RunOptions(mode="estimate")``) has
no new value to store, so it yields no output and no check result; Dagster then skips the assets downstream and
shows the checks as skipped (Dagster docs: "Op outputs", optional outputs; a check that did not execute in a run
that did not fail is SKIPPED). The op honours a selection of its outputs: the enrichment without its dead letters
writes no dead letters; its checks run only with the enrichment, whose output they measure.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import dagster as dg

from ai_assets.dagster.call import Upstream
from ai_assets.dagster.common import upstream_key
from ai_assets.runtime.dead_letter import COLUMNS
from ai_assets.runtime.errors import ConfigError

Body = Callable[..., Iterator[Any]]


def output_name(key: dg.AssetKey, letters: dg.AssetKey | None) -> str:
    """The op output of the enrichment: the key's identifier."""
    return key.to_python_identifier()


def enrichment_decorator(key: dg.AssetKey, letters: dg.AssetKey | None, upstream: Upstream, code_version: str,
               resource_keys: set[str], checks: list[dg.AssetCheckSpec], metadata: dict[str, Any],
               kwargs: dict[str, Any]) -> Callable[[Body], dg.AssetsDefinition]:
    """A multi-asset for the enrichment and, with ``letters``, its dead letters (partitioned like it, through the
    same IO manager)."""
    ins = {"upstream": dg.AssetIn(upstream_key(upstream))}
    shared = {k: kwargs[k] for k in ("group_name", "tags", "owners") if k in kwargs}
    kinds = {"ai", *(kwargs.get("kinds") or ())}
    io_manager = kwargs.get("io_manager_key", "io_manager")
    automation = {k: kwargs[k] for k in ("automation_condition", "freshness_policy") if k in kwargs}
    specs = [dg.AssetSpec(key, code_version=code_version, metadata=metadata, kinds=kinds,
                          description=kwargs.get("description"), deps=[upstream_key(upstream)], skippable=True,
                          **automation, **shared).with_io_manager_key(io_manager)]
    if letters is not None:
        # Requested whenever the enrichment is (a run of the enrichment alone would write no dead letters), and
        # only then (alone it has nothing to compute: its rows come from materializing the enrichment).
        with_it: dict[str, Any] = ({"automation_condition": dg.AutomationCondition.any_deps_match(
            dg.AutomationCondition.will_be_requested())} if "automation_condition" in kwargs else {})
        specs.append(dg.AssetSpec(
            letters, code_version=code_version, kinds=kinds, deps=[key], skippable=True,
            description=f"Rows of {key.to_user_string()} that used up their attempts: their input columns as they "
                        f"were, then {', '.join(COLUMNS)}. Materialize the enrichment again to re-drive them.",
            **with_it, **shared).with_io_manager_key(io_manager))
    op_args = {k: kwargs[k] for k in ("op_tags", "retry_policy", "pool", "backfill_policy", "partitions_def")
               if k in kwargs}
    decorate = dg.multi_asset(name=key.to_python_identifier(), specs=specs, ins=ins, can_subset=True,
                              required_resource_keys=resource_keys, check_specs=checks, **op_args)
    return lambda body: decorate(_selected_only(body, key))


def _selected_only(body: Body, key: dg.AssetKey) -> Body:
    """``body``'s events that the run selected: the enrichment is always computed (its checks and dead letters
    come from its output), a dead-letter output or a check result the run did not select is left out."""

    @functools.wraps(body)
    def run(context: dg.AssetExecutionContext, upstream: Any) -> Iterator[Any]:
        if key not in context.selected_asset_keys:
            raise ConfigError(f"{key.to_user_string()}: its dead letters and checks come from materializing it; "
                              "select it too")
        yield from only_selected(context, body(context, upstream))

    return run


def only_selected(context: dg.AssetExecutionContext, events: Iterable[Any]) -> Iterator[Any]:
    """``events`` less the outputs and check results the run did not select (a multi-asset's optional ones)."""
    outputs = context.op_execution_context.selected_output_names
    checks = {check.name for check in context.selected_asset_check_keys}
    for event in events:
        if isinstance(event, dg.Output) and event.output_name not in outputs:
            continue
        if isinstance(event, dg.AssetCheckResult) and event.check_name not in checks:
            continue
        yield event
