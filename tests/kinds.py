"""The kinds the tests run over, from the package's own registry: a store added there is tested everywhere."""

from ai_assets.dagster.registry import STORES

STORE_KINDS = list(STORES)
"""Every IO manager kind: parquet, delta, lancedb."""
TABLE_STORE_KINDS = [kind for kind in STORE_KINDS if kind != "parquet"]
"""The kinds with versioned table commits (concurrent writers, merges, table sources)."""
