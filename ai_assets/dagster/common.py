"""What every asset factory accepts, and the translation of partitions into plain values."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

import dagster as dg


class AssetArgs(TypedDict, total=False):
    """Keyword arguments every factory accepts and passes on to ``@dg.asset``."""

    partitions_def: dg.PartitionsDefinition[Any] | None
    io_manager_key: str
    group_name: str | None
    key_prefix: Sequence[str] | None
    tags: Mapping[str, str] | None
    op_tags: Mapping[str, Any] | None
    """Tags of the step: e.g. ``gpu_tags()`` to run it on a GPU node (Kubernetes) or GPU queue (Celery)."""
    retry_policy: dg.RetryPolicy | None
    pool: str | None
    backfill_policy: dg.BackfillPolicy | None
    description: str | None
    metadata: Mapping[str, Any] | None


def asset_kwargs(args: AssetArgs) -> dict[str, Any]:
    return {k: v for k, v in args.items() if v is not None}


def upstream_key(upstream: dg.AssetsDefinition | dg.AssetKey | str) -> dg.AssetKey:
    if isinstance(upstream, dg.AssetsDefinition):
        return upstream.key
    if isinstance(upstream, dg.AssetKey):
        return upstream
    return dg.AssetKey.from_user_string(upstream)


def partition_fields(context: dg.AssetExecutionContext) -> list[tuple[str, dict[str, str]]]:
    """Each partition of the run with the fields a path template may name: ``partition`` and, for
    multi-partitions, one per dimension."""
    if not context.has_partition_key_range and not context.has_partition_key:
        return []
    partitions_def = context.assets_def.partitions_def
    out = []
    for key in context.partition_keys:
        fields = {"partition": str(key)}
        if isinstance(partitions_def, dg.MultiPartitionsDefinition):
            multi = partitions_def.get_partition_key_from_str(str(key))
            fields.update(multi.keys_by_dimension)
        out.append((str(key), fields))
    return out


def fingerprint(**parts: Any) -> str:
    """A short stable hash: the code_version of an asset whose output these parts decide."""
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
