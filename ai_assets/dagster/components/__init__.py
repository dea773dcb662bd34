"""Dagster Components for every factory: a pipeline declared in ``defs.yaml`` files, checked by ``dg check defs``.

Each component's attributes mirror its factory's arguments; YAML mistakes are reported by ``dg`` with the file and
line. Registered through the ``dagster_dg_cli.registry_modules`` entry point, so ``dg list components`` shows them.

    # defs/review_insights/defs.yaml
    type: ai_assets.dagster.components.PromptComponent
    attributes:
      name: review_insights
      upstream: clean_reviews
      template: "Product: {product}\\nReview: {review}"
      return_format: ai_assets_demo.models:ReviewInsight     # or a JSON schema, inline
      partitions: {daily: {start: "2024-11-01"}}
      options: {concurrency: 4, on_error: "null"}

Field names avoid the component base classes' own names (``model``, ``load``, ``build_defs``): a chat model is
``llm_model``, an embedding model ``embedding_model``. Secrets never go into YAML: the providers read the key from
the environment variable named by ``api_key_env`` (through ``dg.EnvVar``).

An asset component names its IO manager by key only; the resources component binds the key to a store. The project's
``definitions.py`` sees both, so it passes the loaded folder through ``with_store_kinds`` (each asset shows its store
as a kind) and ``provider_versions``, as ``demo/src/ai_assets_demo/definitions.py`` does::

    defs = with_store_kinds(provider_versions(dg.load_from_defs_folder(project_root=...)))
"""

from ai_assets.dagster.components.common import Daily, MessagePart, Options, Params, Partitions, Pricing
from ai_assets.dagster.components.enrich import (
    ClassifyComponent,
    ClassifyImageComponent,
    EmbedComponent,
    EmbedImageComponent,
    Examples,
    PromptComponent,
    TaskComponent,
)
from ai_assets.dagster.components.resources import ResourcesComponent
from ai_assets.dagster.components.semantic_pairs import SemanticDedupComponent, SemanticJoinComponent
from ai_assets.dagster.components.semantic_rows import SemanticAggregateComponent, SemanticTopKComponent
from ai_assets.dagster.components.sources import (
    ChunkTextComponent,
    DecodeImagesComponent,
    DownloadComponent,
    Extraction,
    ExtractTextComponent,
    IngestComponent,
    PreprocessComponent,
)
from ai_assets.functions.json_schema import answer_model

__all__ = [
    "ChunkTextComponent",
    "ClassifyComponent",
    "ClassifyImageComponent",
    "Daily",
    "DecodeImagesComponent",
    "DownloadComponent",
    "EmbedComponent",
    "EmbedImageComponent",
    "Examples",
    "ExtractTextComponent",
    "Extraction",
    "IngestComponent",
    "MessagePart",
    "Options",
    "Params",
    "Partitions",
    "PreprocessComponent",
    "Pricing",
    "PromptComponent",
    "ResourcesComponent",
    "SemanticAggregateComponent",
    "SemanticDedupComponent",
    "SemanticJoinComponent",
    "SemanticTopKComponent",
    "TaskComponent",
    "answer_model",
]
