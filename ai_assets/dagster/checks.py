"""Asset checks of enrichment assets: they report what ``ai_assets.runtime.quality`` measured during the run."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import dagster as dg
from dagster._core.definitions.asset_checks.asset_check_evaluation import (  # not re-exported by dagster
    AssetCheckEvaluationTargetMaterializationData as Target,
)

from ai_assets.runtime.quality import VectorStats, error_rate, valid_share
from ai_assets.runtime.usage import Usage

MAX_LISTED_PARTITIONS = 20
"""Partitions named in a range's check metadata (``ai/evaluated_over``); the count is always given."""


class Named(Protocol):
    """A check or a gate, as its spec sees it."""

    @property
    def name(self) -> str: ...

    @property
    def description(self) -> str: ...


def check_spec(name: str, key: dg.AssetKey, description: str, *, blocking: bool = False,
               partitions_def: dg.PartitionsDefinition | None = None) -> dg.AssetCheckSpec:
    """A check of the asset ``key``, partitioned like it: Dagster (1.13, ``AssetCheckSpec(partitions_def=...)``,
    a preview feature) then files each result under the partition the step materialized, so the UI shows a
    partition's golden / judge / drift / error-rate verdict beside that partition, not one verdict for the asset."""
    with warnings.catch_warnings():  # "Specifying a partitions_def on an AssetCheckSpec" is a preview: on purpose
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.AssetCheckSpec(name, asset=key, description=description, blocking=blocking,
                                 partitions_def=partitions_def)


def per_partition(context: dg.AssetExecutionContext, key: dg.AssetKey, result: dg.AssetCheckResult,
                  blocking: bool, of_partition: Callable[[str], dg.AssetCheckResult] | None = None
                  ) -> Iterator[dg.AssetCheckResult | dg.AssetCheckEvaluation]:
    """``result`` filed under the run's partitions. One partition: as is (Dagster files it under the step's
    partition). A range (a single-run backfill): Dagster 1.13 files an ``AssetCheckResult`` under no partition
    (``AssetCheckResult.to_asset_check_evaluation`` takes the partition only when the step has one partition key),
    so each partition of the range gets an evaluation of its own, pointing at that partition's materialization:
    ``of_partition(partition)`` where a check can judge one partition alone (the error rate of its rows), else the
    run's verdict, with ``ai/evaluated_over`` naming the partitions it covers."""
    if dg.AssetCheckKey(key, str(result.check_name)) not in context.selected_asset_check_keys:
        return  # a check the run left out reports nothing
    if not context.has_partition_key_range or context.has_partition_key:
        yield result
        return
    partitions = list(context.partition_keys)
    spread: dict[str, dg.MetadataValue[Any] | int] = {} if of_partition is not None else {
        "ai/evaluated_over": dg.MetadataValue.json(partitions[:MAX_LISTED_PARTITIONS]),
        "ai/evaluated_partitions": len(partitions)}
    for partition in partitions:
        if of_partition is not None:
            result = of_partition(partition)
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1).records
        target = Target(storage_id=records[0].storage_id, run_id=records[0].event_log_entry.run_id,
                        timestamp=records[0].timestamp) if records else None
        yield dg.AssetCheckEvaluation(asset_key=key, check_name=str(result.check_name), passed=result.passed,
                                      metadata={**result.metadata, **spread}, severity=result.severity,
                                      description=result.description, blocking=blocking, partition=partition,
                                      target_materialization_data=target)


def measured(context: dg.AssetExecutionContext, key: dg.AssetKey, checks: Sequence[Check], usage: Usage,
             vectors: VectorStats | None) -> Iterator[dg.AssetCheckResult | dg.AssetCheckEvaluation]:
    """The verdicts of ``checks`` on what the run sent; in a range, each partition judged on its own rows' usage
    (the vectors' check on the run's vectors: they are not kept per partition)."""
    def judge(check: Check) -> Callable[[str], dg.AssetCheckResult]:
        return lambda partition: check.evaluate(Measured(usage.groups.get(partition, Usage()), vectors))

    for check in checks:
        yield from per_partition(context, key, check.evaluate(Measured(usage, vectors)), False, judge(check))


def verdicts(context: dg.AssetExecutionContext, key: dg.AssetKey, results: Iterable[dg.AssetCheckResult | None],
             blocking: Mapping[str, bool]) -> Iterator[dg.AssetCheckResult | dg.AssetCheckEvaluation]:
    """``results`` (None: a check with nothing to say) each under its partitions (``per_partition``)."""
    for result in results:
        if result is not None:
            yield from per_partition(context, key, result, blocking.get(str(result.check_name), False))


@dataclass(frozen=True)
class Measured:
    usage: Usage
    vectors: VectorStats | None


@dataclass(frozen=True)
class Check:
    name: str
    description: str
    evaluate: Callable[[Measured], dg.AssetCheckResult]


def error_rate_check(output_column: str, max_error_rate: float) -> Check:
    def evaluate(measured: Measured) -> dg.AssetCheckResult:
        rate = error_rate(measured.usage)
        return dg.AssetCheckResult(check_name="error_rate", passed=rate <= max_error_rate,
                                   metadata={"error_rate": rate, "max_error_rate": max_error_rate,
                                             "rows_with_errors": measured.usage.errors})

    return Check("error_rate", f"share of rows sent whose {output_column} failed is at most {max_error_rate:.0%}",
                 evaluate)


def valid_share_check(output_column: str, min_share: float) -> Check:
    def evaluate(measured: Measured) -> dg.AssetCheckResult:
        share = valid_share(measured.usage)
        return dg.AssetCheckResult(check_name="schema_valid_share", passed=share >= min_share,
                                   metadata={"valid_share": share, "min_share": min_share})

    return Check("schema_valid_share",
                 f"at least {min_share:.0%} of rows sent got {output_column} output that validates against the "
                 "schema", evaluate)


def embedding_check(output_column: str) -> Check:
    def evaluate(measured: Measured) -> dg.AssetCheckResult:
        stats = measured.vectors or VectorStats()
        return dg.AssetCheckResult(check_name="embedding_dimension_and_finite", passed=stats.passed,
                                   metadata={"dimension": stats.dimension or 0, "all_finite": stats.all_finite,
                                             "zero_vectors": stats.zero_vectors, "vectors": stats.vectors})

    return Check("embedding_dimension_and_finite",
                 f"{output_column} has one fixed dimension, no NaN / inf and no all-zero vector", evaluate)
