"""The kinds the tests run over, from the package's own registry: a store added there is tested everywhere."""

from pathlib import Path
from typing import Any

from ai_assets.dagster.registry import STORES

STORE_KINDS = list(STORES)
"""Every IO manager kind: parquet, delta, lancedb, iceberg."""
TABLE_STORE_KINDS = [kind for kind in STORE_KINDS if kind != "parquet"]
"""The kinds with versioned table commits (concurrent writers, merges, table sources)."""


def local_io_manager(kind: str, root: Path) -> Any:
    """An IO manager of ``kind`` keeping its tables under the local folder ``root`` (Iceberg: a SQLite catalog)."""
    if kind == "iceberg":
        return STORES[kind](root=f"file://{root}/iceberg", catalog_uri=f"sqlite:///{root}/iceberg.db")
    return STORES[kind](root=str(root / kind))
