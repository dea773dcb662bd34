"""The Dagster layer: the only package of ai_assets that imports dagster.

Factories build partitioned assets around the plain-Python functions; resources hold providers and the cache;
IO managers store Arrow tables in Parquet, Delta Lake or LanceDB.
"""

from typing import TYPE_CHECKING

from ai_assets.lazy import lazy_exports

if TYPE_CHECKING:
    from ai_assets.dagster.budget import SpendCap
    from ai_assets.dagster.common import AssetArgs, EnrichArgs
    from ai_assets.dagster.enrich import (
        classify_asset,
        classify_image_asset,
        embed_asset,
        embed_image_asset,
        prompt_asset,
    )
    from ai_assets.dagster.gates import DriftCheck, GoldenSet, JudgeCheck
    from ai_assets.dagster.io_iceberg import IcebergIOManager
    from ai_assets.dagster.io_managers import DeltaIOManager, LanceDBIOManager, ParquetIOManager
    from ai_assets.dagster.kinds import with_store_kinds
    from ai_assets.dagster.placement import gpu_tags
    from ai_assets.dagster.resources import (
        EfficientNetResource,
        FailoverResource,
        LlamaCppResource,
        OpenAICompatibleResource,
        ResultCacheResource,
        SentenceTransformersResource,
    )
    from ai_assets.dagster.semantic_pairs import semantic_dedup_asset, semantic_join_asset
    from ai_assets.dagster.semantic_rows import semantic_aggregate_asset, semantic_top_k_asset
    from ai_assets.dagster.sensors import landing_folder_sensor, partitioned_schedule
    from ai_assets.dagster.sources import (
        chunk_text_asset,
        decode_images_asset,
        download_asset,
        extract_text_asset,
        ingest_asset,
        preprocess_asset,
    )
    from ai_assets.dagster.tasks import (
        extract_asset,
        fix_grammar_asset,
        mask_asset,
        semantic_filter_asset,
        sentiment_asset,
        similarity_asset,
        summarize_asset,
        task_asset,
        transcribe_asset,
        translate_asset,
    )
    from ai_assets.dagster.vendor_resources import AnthropicResource
    from ai_assets.dagster.versions import provider_versions

# Where each public name lives, imported on first use (ai_assets.lazy): `import ai_assets.dagster` imports
# none of the layer (nor Dagster) until a name is used; the block above is the same list, for type checkers.
_SOURCES = {
    "ai_assets.dagster.budget": ("SpendCap",),
    "ai_assets.dagster.common": ("AssetArgs", "EnrichArgs"),
    "ai_assets.dagster.enrich": ("classify_asset", "classify_image_asset", "embed_asset", "embed_image_asset",
                                 "prompt_asset"),
    "ai_assets.dagster.gates": ("DriftCheck", "GoldenSet", "JudgeCheck"),
    "ai_assets.dagster.io_iceberg": ("IcebergIOManager",),
    "ai_assets.dagster.io_managers": ("DeltaIOManager", "LanceDBIOManager", "ParquetIOManager"),
    "ai_assets.dagster.placement": ("gpu_tags",),
    "ai_assets.dagster.resources": ("EfficientNetResource", "FailoverResource", "LlamaCppResource",
                                    "OpenAICompatibleResource", "ResultCacheResource",
                                    "SentenceTransformersResource"),
    "ai_assets.dagster.semantic_pairs": ("semantic_dedup_asset", "semantic_join_asset"),
    "ai_assets.dagster.semantic_rows": ("semantic_aggregate_asset", "semantic_top_k_asset"),
    "ai_assets.dagster.sensors": ("landing_folder_sensor", "partitioned_schedule"),
    "ai_assets.dagster.sources": ("chunk_text_asset", "decode_images_asset", "download_asset", "extract_text_asset",
                                  "ingest_asset", "preprocess_asset"),
    "ai_assets.dagster.tasks": ("extract_asset", "fix_grammar_asset", "mask_asset", "semantic_filter_asset",
                                "sentiment_asset", "similarity_asset", "summarize_asset", "task_asset",
                                "transcribe_asset", "translate_asset"),
    "ai_assets.dagster.vendor_resources": ("AnthropicResource",),
    "ai_assets.dagster.versions": ("provider_versions",),
    "ai_assets.dagster.kinds": ("with_store_kinds",),
}

__getattr__, __dir__ = lazy_exports(__name__, globals(), _SOURCES, extras={"dagster": "dagster"})

__all__ = [
    "AnthropicResource",
    "AssetArgs",
    "DeltaIOManager",
    "DriftCheck",
    "EfficientNetResource",
    "EnrichArgs",
    "FailoverResource",
    "GoldenSet",
    "IcebergIOManager",
    "JudgeCheck",
    "LanceDBIOManager",
    "LlamaCppResource",
    "OpenAICompatibleResource",
    "ParquetIOManager",
    "ResultCacheResource",
    "SentenceTransformersResource",
    "SpendCap",
    "chunk_text_asset",
    "classify_asset",
    "classify_image_asset",
    "decode_images_asset",
    "download_asset",
    "embed_asset",
    "embed_image_asset",
    "extract_asset",
    "extract_text_asset",
    "fix_grammar_asset",
    "gpu_tags",
    "ingest_asset",
    "landing_folder_sensor",
    "mask_asset",
    "partitioned_schedule",
    "preprocess_asset",
    "prompt_asset",
    "provider_versions",
    "semantic_aggregate_asset",
    "semantic_dedup_asset",
    "semantic_filter_asset",
    "semantic_join_asset",
    "semantic_top_k_asset",
    "sentiment_asset",
    "similarity_asset",
    "summarize_asset",
    "task_asset",
    "transcribe_asset",
    "translate_asset",
    "with_store_kinds",
]
