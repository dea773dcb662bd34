"""ai_assets: AI batch inference over multimodal data as partitioned, incremental, retryable Dagster assets.

The plain-Python layers (functions, providers, runtime, storage) import no Dagster; the Dagster layer lives in
``ai_assets.dagster``.
"""

from typing import TYPE_CHECKING

from ai_assets.lazy import lazy_exports

if TYPE_CHECKING:
    from ai_assets.functions.audio import transcribe
    from ai_assets.functions.cascade import Cascade
    from ai_assets.functions.chunks import chunk_text
    from ai_assets.functions.classify import classify_text
    from ai_assets.functions.download import DownloadPolicy, download
    from ai_assets.functions.embed import embed_text
    from ai_assets.functions.embedding_proxy import EmbeddingProxy
    from ai_assets.functions.files import extract_text
    from ai_assets.functions.images import ImageSpec, decode_images
    from ai_assets.functions.ingest import read_source, stream_source
    from ai_assets.functions.prompt import PromptParams, aprompt, prompt
    from ai_assets.functions.semantic.aggregate import semantic_aggregate
    from ai_assets.functions.semantic.dedup import semantic_dedup
    from ai_assets.functions.semantic.filter import semantic_filter
    from ai_assets.functions.semantic.join import semantic_join
    from ai_assets.functions.semantic.top_k import semantic_top_k
    from ai_assets.functions.table_sources import DeltaSource, IcebergSource, LanceSource
    from ai_assets.functions.tasks import (
        analyze_sentiment,
        extract,
        fix_grammar,
        mask,
        similarity,
        summarize,
        translate,
    )
    from ai_assets.functions.templates import FileColumn, ImageColumn
    from ai_assets.functions.vision import classify_image, embed_image
    from ai_assets.providers.anthropic import AnthropicProvider
    from ai_assets.providers.efficientnet import EfficientNetLite0Provider
    from ai_assets.providers.failover import EmbeddingFailover, Failover
    from ai_assets.providers.llama_cpp import LlamaCppProvider
    from ai_assets.providers.messages import AudioPart, FilePart, ImagePart, Message, TextPart
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
    from ai_assets.runtime.guarantees import Accuracy, Precision, Recall
    from ai_assets.runtime.options import BatchOptions
    from ai_assets.runtime.ratelimit import RateLimit
    from ai_assets.runtime.results import Enriched, EnrichedStream
    from ai_assets.runtime.retry import RetryPolicy
    from ai_assets.runtime.run import RunArgs
    from ai_assets.runtime.usage import Prices, Usage

# Where each public name lives, imported on first use (ai_assets.lazy): `import ai_assets` costs no backend; the
# block above is the same list, for type checkers (tests/unit/test_lazy_imports.py keeps the two equal).
_SOURCES = {
    "ai_assets.functions.audio": ("transcribe",),
    "ai_assets.functions.cascade": ("Cascade",),
    "ai_assets.functions.chunks": ("chunk_text",),
    "ai_assets.functions.classify": ("classify_text",),
    "ai_assets.functions.download": ("DownloadPolicy", "download"),
    "ai_assets.functions.embed": ("embed_text",),
    "ai_assets.functions.embedding_proxy": ("EmbeddingProxy",),
    "ai_assets.functions.files": ("extract_text",),
    "ai_assets.functions.images": ("ImageSpec", "decode_images"),
    "ai_assets.functions.ingest": ("read_source", "stream_source"),
    "ai_assets.functions.prompt": ("PromptParams", "aprompt", "prompt"),
    "ai_assets.functions.semantic.aggregate": ("semantic_aggregate",),
    "ai_assets.functions.semantic.dedup": ("semantic_dedup",),
    "ai_assets.functions.semantic.filter": ("semantic_filter",),
    "ai_assets.functions.semantic.join": ("semantic_join",),
    "ai_assets.functions.semantic.top_k": ("semantic_top_k",),
    "ai_assets.functions.table_sources": ("DeltaSource", "IcebergSource", "LanceSource"),
    "ai_assets.functions.tasks": ("analyze_sentiment", "extract", "fix_grammar", "mask", "similarity", "summarize",
                                  "translate"),
    "ai_assets.functions.templates": ("FileColumn", "ImageColumn"),
    "ai_assets.functions.vision": ("classify_image", "embed_image"),
    "ai_assets.providers.anthropic": ("AnthropicProvider",),
    "ai_assets.providers.efficientnet": ("EfficientNetLite0Provider",),
    "ai_assets.providers.llama_cpp": ("LlamaCppProvider",),
    "ai_assets.providers.messages": ("AudioPart", "FilePart", "ImagePart", "Message", "TextPart"),
    "ai_assets.providers.openai_compatible": ("OpenAICompatibleProvider",),
    "ai_assets.providers.failover": ("EmbeddingFailover", "Failover"),
    "ai_assets.providers.sentence_transformers": ("SentenceTransformersProvider",),
    "ai_assets.runtime.budget": ("BudgetExceededError",),
    "ai_assets.runtime.cache": ("Cache", "open_cache"),
    "ai_assets.runtime.cache.object_store": ("ObjectStoreCache",),
    "ai_assets.runtime.cache.postgres": ("PostgresCache",),
    "ai_assets.runtime.cache.sqlite": ("ResultCache",),
    "ai_assets.runtime.engine": ("RunOptions",),
    "ai_assets.runtime.guarantees": ("Accuracy", "Precision", "Recall"),
    "ai_assets.runtime.errors": ("AIAssetsError", "ConfigError", "MissingExtraError", "NotSupportedError",
                                 "RowFailedError"),
    "ai_assets.runtime.options": ("BatchOptions",),
    "ai_assets.runtime.ratelimit": ("RateLimit",),
    "ai_assets.runtime.results": ("Enriched", "EnrichedStream"),
    "ai_assets.runtime.retry": ("RetryPolicy",),
    "ai_assets.runtime.run": ("RunArgs",),
    "ai_assets.runtime.usage": ("Prices", "Usage"),
}

__getattr__, __dir__ = lazy_exports(__name__, globals(), _SOURCES)

__all__ = [
    "AIAssetsError",
    "Accuracy",
    "AnthropicProvider",
    "AudioPart",
    "BatchOptions",
    "BudgetExceededError",
    "Cache",
    "Cascade",
    "ConfigError",
    "DeltaSource",
    "DownloadPolicy",
    "EfficientNetLite0Provider",
    "EmbeddingFailover",
    "EmbeddingProxy",
    "Enriched",
    "EnrichedStream",
    "Failover",
    "FileColumn",
    "FilePart",
    "IcebergSource",
    "ImageColumn",
    "ImagePart",
    "ImageSpec",
    "LanceSource",
    "LlamaCppProvider",
    "Message",
    "MissingExtraError",
    "NotSupportedError",
    "ObjectStoreCache",
    "OpenAICompatibleProvider",
    "PostgresCache",
    "Precision",
    "Prices",
    "PromptParams",
    "RateLimit",
    "Recall",
    "ResultCache",
    "RetryPolicy",
    "RowFailedError",
    "RunArgs",
    "RunOptions",
    "SentenceTransformersProvider",
    "TextPart",
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
    "semantic_aggregate",
    "semantic_dedup",
    "semantic_filter",
    "semantic_join",
    "semantic_top_k",
    "similarity",
    "stream_source",
    "summarize",
    "transcribe",
    "translate",
]
