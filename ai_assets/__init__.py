"""ai_assets: AI batch inference over multimodal data as partitioned, incremental, retryable Dagster assets.

The plain-Python layers (functions, providers, runtime, storage) import no Dagster; the Dagster layer lives in
``ai_assets.dagster``.
"""

from ai_assets.functions.audio import transcribe
from ai_assets.functions.cascade import Cascade
from ai_assets.functions.chunks import chunk_text
from ai_assets.functions.classify import classify_text
from ai_assets.functions.download import DownloadPolicy, download
from ai_assets.functions.embed import embed_text
from ai_assets.functions.files import extract_text
from ai_assets.functions.images import ImageSpec, decode_images
from ai_assets.functions.ingest import read_source, stream_source
from ai_assets.functions.prompt import PromptParams, aprompt, prompt
from ai_assets.functions.table_sources import DeltaSource, LanceSource
from ai_assets.functions.tasks import analyze_sentiment, extract, fix_grammar, mask, similarity, summarize, translate
from ai_assets.functions.templates import FileColumn, ImageColumn
from ai_assets.functions.vision import classify_image, embed_image
from ai_assets.providers.efficientnet import EfficientNetLite0Provider
from ai_assets.providers.llama_cpp import LlamaCppProvider
from ai_assets.providers.openai_compatible import OpenAICompatibleProvider
from ai_assets.providers.sentence_transformers import SentenceTransformersProvider
from ai_assets.runtime.budget import BudgetExceededError
from ai_assets.runtime.cache import Cache, open_cache
from ai_assets.runtime.cache.object_store import ObjectStoreCache
from ai_assets.runtime.cache.postgres import PostgresCache
from ai_assets.runtime.cache.sqlite import ResultCache
from ai_assets.runtime.engine import RunOptions
from ai_assets.runtime.errors import (
    AIAssetsError,
    ConfigError,
    MissingExtraError,
    NotSupportedError,
    RowFailedError,
)
from ai_assets.runtime.options import BatchOptions
from ai_assets.runtime.ratelimit import RateLimit
from ai_assets.runtime.results import Enriched, EnrichedStream
from ai_assets.runtime.retry import RetryPolicy
from ai_assets.runtime.usage import Prices, Usage

__all__ = [
    "AIAssetsError",
    "BatchOptions",
    "BudgetExceededError",
    "Cache",
    "Cascade",
    "ConfigError",
    "DeltaSource",
    "DownloadPolicy",
    "EfficientNetLite0Provider",
    "Enriched",
    "EnrichedStream",
    "FileColumn",
    "ImageColumn",
    "ImageSpec",
    "LanceSource",
    "LlamaCppProvider",
    "MissingExtraError",
    "NotSupportedError",
    "ObjectStoreCache",
    "OpenAICompatibleProvider",
    "PostgresCache",
    "Prices",
    "PromptParams",
    "RateLimit",
    "ResultCache",
    "RetryPolicy",
    "RowFailedError",
    "RunOptions",
    "SentenceTransformersProvider",
    "Usage",
    "analyze_sentiment",
    "aprompt",
    "chunk_text",
    "classify_image",
    "classify_text",
    "decode_images",
    "download",
    "embed_image",
    "embed_text",
    "extract",
    "extract_text",
    "fix_grammar",
    "mask",
    "open_cache",
    "prompt",
    "read_source",
    "similarity",
    "stream_source",
    "summarize",
    "transcribe",
    "translate",
]
