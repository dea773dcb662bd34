"""The Iceberg IO manager: one Iceberg table per asset in a SQL or REST catalog (see ``ai_assets.storage.iceberg``).

Every partition write is one catalog commit carrying an idempotence key (table, partitions, run id) in its snapshot
summary, so a step that retries a commit whose response was lost never applies it twice.
"""

from __future__ import annotations

from typing import Any, Literal

import dagster as dg
from pydantic import Field, PrivateAttr

from ai_assets.dagster.io_managers import ArrowIOManager, _table_name, partition_column
from ai_assets.storage.base import TableStore
from ai_assets.storage.iceberg import DEFAULT_NAMESPACE, IcebergStore


class IcebergIOManager(ArrowIOManager):
    """One Iceberg table per asset (``<namespace>.<asset>``), identity-partitioned on the partition column; a
    partition is replaced in one commit (delete + append), concurrent writers of different partitions all land.

    ``root`` is the warehouse (where data files go); ``catalog_uri`` the SQL catalog's SQLAlchemy URL
    (``sqlite:///catalog.db``, ``postgresql+psycopg2://...``) or the REST catalog's URL. ``storage_options`` are
    pyiceberg FileIO properties (``s3.endpoint``, ...).

    .. code-block:: python

        import dagster as dg
        import pyarrow as pa
        from ai_assets.dagster import IcebergIOManager

        @dg.asset(partitions_def=dg.DailyPartitionsDefinition("2024-01-01"), metadata={"partition_expr": "day"})
        def reviews(context: dg.AssetExecutionContext) -> pa.Table:
            return pa.table({"day": [context.partition_key], "text": ["great"]})

        defs = dg.Definitions(assets=[reviews], resources={"io_manager": IcebergIOManager(
            root="file:///tmp/lake", catalog_uri="sqlite:////tmp/lake/catalog.db")})
    """

    catalog_uri: str = Field(description="SQL catalog: a SQLAlchemy URL (sqlite:///..., postgresql+psycopg2://...); "
                                         "REST catalog: its https:// URL")
    catalog_type: Literal["sql", "rest"] = Field(default="sql", description="The kind of Iceberg catalog")
    catalog_name: str = Field(default="ai_assets", description="The catalog's name (SQL catalogs keep tables "
                                                               "of several catalogs apart by it)")
    namespace: str = Field(default=DEFAULT_NAMESPACE, description="The namespace the asset tables live in")
    token: str | None = Field(default=None, description="REST catalog bearer token (pass dg.EnvVar('...'))")
    _catalog: Any = PrivateAttr(default=None)

    def catalog_properties(self) -> dict[str, str]:
        properties = {**self.storage_options, "type": self.catalog_type, "uri": self.catalog_uri,
                      "warehouse": self.root}
        if self.token:
            properties["token"] = self.token
        return properties

    def store(self, key: dg.AssetKey, definition_metadata: dict[str, Any], run_id: str | None = None
              ) -> TableStore:
        from ai_assets.storage.iceberg_catalog import open_catalog

        if self._catalog is None:  # one catalog (and SQL connection pool) per process, not one per load
            self._catalog = open_catalog(self.catalog_properties(), self.catalog_name)
        return IcebergStore(self._catalog, f"{self.namespace}.{_table_name(key)}", run_id=run_id,
                            partition_column=partition_column(definition_metadata))
