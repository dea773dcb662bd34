"""The Dagster layer: the only package of ai_assets that imports dagster.

Factories build partitioned assets around the plain-Python functions; resources hold providers and the cache;
IO managers store Arrow tables in Parquet, Delta Lake or LanceDB.
"""

from ai_assets.dagster.common import AssetArgs
from ai_assets.dagster.enrich import classify_asset, embed_asset, prompt_asset
from ai_assets.dagster.io_managers import DeltaIOManager, LanceDBIOManager, ParquetIOManager
from ai_assets.dagster.resources import (
    LlamaCppResource,
    OpenAICompatibleResource,
    ResultCacheResource,
    SentenceTransformersResource,
)
from ai_assets.dagster.sensors import landing_folder_sensor, partitioned_schedule
from ai_assets.dagster.sources import ingest_asset, preprocess_asset

__all__ = [
    "AssetArgs",
    "DeltaIOManager",
    "LanceDBIOManager",
    "LlamaCppResource",
    "OpenAICompatibleResource",
    "ParquetIOManager",
    "ResultCacheResource",
    "SentenceTransformersResource",
    "classify_asset",
    "embed_asset",
    "ingest_asset",
    "landing_folder_sensor",
    "partitioned_schedule",
    "preprocess_asset",
    "prompt_asset",
]
