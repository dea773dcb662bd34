"""The Dagster layer: the only package of ai_assets that imports dagster.

Factories build partitioned assets around the plain-Python functions; resources hold providers and the cache;
IO managers store Arrow tables in Parquet, Delta Lake or LanceDB.
"""

from ai_assets.dagster.common import AssetArgs
from ai_assets.dagster.enrich import (
    classify_asset,
    classify_image_asset,
    embed_asset,
    embed_image_asset,
    prompt_asset,
)
from ai_assets.dagster.gates import DriftCheck, GoldenSet, JudgeCheck
from ai_assets.dagster.io_managers import DeltaIOManager, LanceDBIOManager, ParquetIOManager
from ai_assets.dagster.placement import gpu_tags
from ai_assets.dagster.resources import (
    EfficientNetResource,
    LlamaCppResource,
    OpenAICompatibleResource,
    ResultCacheResource,
    SentenceTransformersResource,
)
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
    sentiment_asset,
    similarity_asset,
    summarize_asset,
    task_asset,
    transcribe_asset,
    translate_asset,
)
from ai_assets.dagster.versions import provider_versions

__all__ = [
    "AssetArgs",
    "DeltaIOManager",
    "DriftCheck",
    "EfficientNetResource",
    "GoldenSet",
    "JudgeCheck",
    "LanceDBIOManager",
    "LlamaCppResource",
    "OpenAICompatibleResource",
    "ParquetIOManager",
    "ResultCacheResource",
    "SentenceTransformersResource",
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
    "sentiment_asset",
    "similarity_asset",
    "summarize_asset",
    "task_asset",
    "transcribe_asset",
    "translate_asset",
]
