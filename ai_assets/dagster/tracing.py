"""The OpenTelemetry span of a materialization, tagged with what Dagster knows (``ai_assets.runtime.telemetry``)."""

from __future__ import annotations

import dagster as dg

from ai_assets.runtime.telemetry import Scope, materialization


def materialization_scope(context: dg.AssetExecutionContext, key: dg.AssetKey, partitions: list[str]) -> Scope:
    """Open the materialization's span (a no-op unless ``OTEL_*`` turn telemetry on): run id, asset key and
    partition keys as attributes, which its calls' spans carry too."""
    asset = key.to_user_string()
    return materialization(f"materialize {asset}", {
        "dagster.run_id": context.run.run_id, "dagster.asset_key": asset, "dagster.partition_keys": partitions,
        "dagster.partition_key": partitions[0] if len(partitions) == 1 else None})
