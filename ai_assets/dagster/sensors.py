"""A landing-folder sensor for dynamic partitions, and a schedule for time-partitioned assets."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dagster as dg


def landing_folder_sensor(
    name: str,
    *,
    folder: str | Path,
    pattern: str,
    partitions_def: dg.DynamicPartitionsDefinition,
    assets: Sequence[dg.AssetsDefinition | dg.AssetKey | str],
    minimum_interval_seconds: int = 30,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.STOPPED,
) -> dg.SensorDefinition:
    """Watch ``folder`` for files matching ``pattern``; add each new file name as a dynamic partition and request
    one run for it. Idempotent: a file already a partition is never requested again, and the run key is the
    file name, so even a lost cursor cannot request it twice.
    """
    if partitions_def.name is None:
        raise dg.DagsterInvalidDefinitionError("landing_folder_sensor needs a named DynamicPartitionsDefinition")
    partitions_name = partitions_def.name
    selection = dg.AssetSelection.assets(*assets)

    @dg.sensor(name=name, asset_selection=selection, minimum_interval_seconds=minimum_interval_seconds,
               default_status=default_status)
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        root = Path(folder)
        names = sorted(p.name for p in root.iterdir() if p.is_file() and fnmatch.fnmatch(p.name, pattern)) \
            if root.is_dir() else []
        known = set(context.instance.get_dynamic_partitions(partitions_name))
        new = [n for n in names if n not in known]
        if new:
            context.log.info(f"{len(new)} new file(s) in {root}: {new[:5]}")
        return dg.SensorResult(
            run_requests=[dg.RunRequest(run_key=f"{partitions_name}:{n}", partition_key=n) for n in new],
            dynamic_partitions_requests=[partitions_def.build_add_request(new)] if new else [],
        )

    return _sensor


def partitioned_schedule(name: str, assets: Sequence[dg.AssetsDefinition | dg.AssetKey | str],
                         partitions_def: dg.TimeWindowPartitionsDefinition, **kwargs: Any) -> Any:
    """A schedule that materializes the latest time partition of ``assets`` when it closes (its cron comes from
    ``partitions_def``, which every asset given as a definition must share)."""
    for asset in assets:
        if isinstance(asset, dg.AssetsDefinition) and asset.partitions_def != partitions_def:
            raise dg.DagsterInvalidDefinitionError(
                f"partitioned_schedule {name!r}: {asset.key.to_user_string()} is not partitioned by the schedule's "
                "partitions_def")
    job = dg.define_asset_job(f"{name}_job", selection=dg.AssetSelection.assets(*assets))
    return dg.build_schedule_from_partitioned_job(job, name=name, **kwargs)
