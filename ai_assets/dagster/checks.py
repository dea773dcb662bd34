"""Asset checks of enrichment assets: they report what ``ai_assets.runtime.quality`` measured during the run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import dagster as dg

from ai_assets.runtime.quality import VectorStats, error_rate, valid_share
from ai_assets.runtime.usage import Usage


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
