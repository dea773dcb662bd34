"""The store an asset lands in, shown as its kind in the Dagster UI.

Dagster draws a kind under each asset box (``@asset(kinds={"python"})``, stored as the tag ``dagster/kind/<name>``)
and the UI filters on it. Our factories cannot name the store: an asset's ``io_manager_key`` is only a key, bound to
a ``ParquetIOManager``, ``DeltaIOManager``, ``LanceDBIOManager``, ... when the ``Definitions`` are built.
``with_store_kinds(defs)`` resolves each asset's IO manager key against ``defs``' resources (the stores of
``ai_assets.dagster.registry.STORES``, so a new store is picked up with no change here) and merges the store's
kind into the asset's spec. Partitions, checks, code versions and the outputs of a multi-asset (an enrichment
and its dead letters) are kept: ``AssetSpec.merge_attributes`` only adds the kind, and
``Definitions.map_asset_specs`` swaps the specs of each ``AssetsDefinition`` without touching its op. An IO
manager that is not ours (Dagster's default pickling one, a user's own) adds nothing.

    import dagster as dg
    from ai_assets.dagster import DeltaIOManager, ParquetIOManager, ingest_asset, with_store_kinds

    reviews = ingest_asset("reviews", path="data/reviews/*.jsonl", io_manager_key="delta")
    defs = with_store_kinds(dg.Definitions(
        assets=[reviews],
        resources={"delta": DeltaIOManager(root="out/delta"), "io_manager": ParquetIOManager(root="out/parquet")},
    ))   # reviews shows the kinds "python" and "deltalake"
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import dagster as dg

from ai_assets.dagster.registry import STORES

UI_NAMES = {"delta": "deltalake"}
"""Where the UI knows a store by another name: its kind-tag table keys Delta Lake as ``deltalake`` (dagster-ui
``OpTags.tsx``, ``KNOWN_TAGS``, after ``coerceToStandardLabel`` drops spaces, dots, dashes and underscores), so
``delta`` would show as bare text without the Delta Lake icon. Others keep their registry name (``parquet``,
``lancedb``, ``iceberg``)."""
DEFAULT_IO_MANAGER_KEY = "io_manager"
IO_MANAGER_KEY_METADATA = "dagster/io_manager_key"  # where AssetSpec.with_io_manager_key puts it
MAX_KINDS = 10
"""Dagster refuses an eleventh kind on an asset: one that has ten keeps them, without its store."""


def store_kind(resource: Any) -> str | None:
    """The kind of the store ``resource`` is (an IO manager, or one configured at launch), or ``None``."""
    cls = getattr(resource, "resource_cls", type(resource))  # PartialResource: .configure_at_launch()
    for name, store in STORES.items():
        if isinstance(cls, type) and issubclass(cls, store):
            return UI_NAMES.get(name, name)
    return None


def io_manager_keys(defs: dg.Definitions) -> dict[dg.AssetKey, str]:
    """Each asset's IO manager key: from its output for an op-backed asset (``@asset(io_manager_key=...)``,
    each output of a multi-asset), from its metadata for an ``AssetSpec``."""
    keys: dict[dg.AssetKey, str] = {}
    for item in defs.assets or []:
        if isinstance(item, dg.AssetsDefinition):
            keys.update({key: item.get_io_manager_key_for_asset_key(key) for key in item.keys})
        elif isinstance(item, dg.AssetSpec):
            keys[item.key] = str(item.metadata.get(IO_MANAGER_KEY_METADATA, DEFAULT_IO_MANAGER_KEY))
    return keys


def with_store_kinds(defs: dg.Definitions) -> dg.Definitions:
    """``defs`` with the kind of its store (``parquet``, ``deltalake``, ``lancedb``, ...) on every asset stored by
    one of ai_assets' IO managers; other assets are left as they are."""
    resources: Mapping[str, Any] = defs.resources or {}
    kinds = {key: store_kind(resources.get(io_key)) for key, io_key in io_manager_keys(defs).items()}

    def with_kind(spec: dg.AssetSpec) -> dg.AssetSpec:
        kind = kinds.get(spec.key)
        if kind is None or kind in spec.kinds or len(spec.kinds) >= MAX_KINDS:
            return spec
        return spec.merge_attributes(kinds={kind})

    # Not Definitions.map_asset_specs: it refuses a Definitions that holds a SourceAsset (``@observable_source_asset``
    # too), a documented way to declare an external table; its permissive form maps the specs and keeps the rest.
    with warnings.catch_warnings():  # marked preview in some Dagster releases; our tests hold its behaviour
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return defs.permissive_map_resolved_asset_specs(func=with_kind, selection=None)
