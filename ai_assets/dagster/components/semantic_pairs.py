"""Components of the pair operators: a semantic join of two assets and the entity resolution of one.

    type: ai_assets.dagster.components.SemanticJoinComponent
    attributes:
      name: order_matches
      upstream: orders          # the left side; the asset is partitioned like it
      right: catalog
      left_column: item
      right_column: title
      condition: the order is for this product
      k: 5
"""

from typing import Any

import dagster as dg
from pydantic import Field

from ai_assets.dagster.components.common import EnrichComponentBase
from ai_assets.dagster.components.enrich import CascadeConfig
from ai_assets.dagster.semantic_pairs import semantic_dedup_asset, semantic_join_asset
from ai_assets.functions.semantic.dedup import MAX_CLUSTER_SIZE, SAME_ENTITY
from ai_assets.functions.semantic.join import MAX_TEXT_CHARS


class _PairComponentBase(EnrichComponentBase):
    k: int = Field(default=5, description="Candidate pairs per row: the most similar rows of the other side")
    max_text_chars: int = Field(default=MAX_TEXT_CHARS, description="Characters of a text sent to the verifier; "
                                "a longer one is cut and the output says so")
    cascade: CascadeConfig | None = Field(default=None, description="Verify through a (certified) cascade; the "
                                          "verdict's fields are match and confidence")
    provider_key: str = Field(default="llm", description="The chat resource that verifies pairs")
    llm_model: str | None = Field(default=None, description="The chat model (default: the resource's)")
    embedder_key: str = Field(default="embedder", description="The embedding resource that blocks")

    def shared(self) -> dict[str, Any]:
        return {"k": self.k, "max_text_chars": self.max_text_chars, "embedder_key": self.embedder_key,
                "cascade": self.cascade.build() if self.cascade else None,
                **self.enrich_args(self.provider_key, self.llm_model)}


class SemanticJoinComponent(_PairComponentBase):
    """The pairs of ``upstream`` (the left side) and ``right`` rows for which ``condition`` holds, verified by an
    LLM among the ``k`` most similar right rows per left row."""

    right: str = Field(description="The right side's asset (all of its partitions are joined)")
    left_column: str
    right_column: str
    condition: str = Field(description="When a pair matches, in words")
    min_similarity: float | None = Field(default=None, description="Cosine floor of a candidate pair")
    left_vector: str | None = Field(default=None, description="Vectors already in the left side")
    right_vector: str | None = Field(default=None, description="Vectors already in the right side")
    keep_unmatched: bool = Field(default=False, description="Keep every candidate pair with its verdict")

    def asset(self) -> dg.AssetsDefinition:
        return semantic_join_asset(self.name, self.upstream, self.right, left_column=self.left_column,
                                   right_column=self.right_column, condition=self.condition,
                                   min_similarity=self.min_similarity, left_vector=self.left_vector,
                                   right_vector=self.right_vector, keep_unmatched=self.keep_unmatched,
                                   **self.shared())


class SemanticDedupComponent(_PairComponentBase):
    """The upstream rows with ``cluster_id`` and ``cluster_size``: rows an LLM judges to be one entity share an id."""

    column: str
    threshold: float | None = Field(default=0.5, description="Cosine floor of a candidate pair")
    vector_column: str | None = Field(default=None, description="Vectors already in the upstream")
    condition: str = Field(default=SAME_ENTITY, description="What makes two records the same entity")
    max_cluster_size: int = Field(default=MAX_CLUSTER_SIZE, description="Distinct texts a cluster may hold "
                                  "(bounds transitive chaining)")

    def asset(self) -> dg.AssetsDefinition:
        return semantic_dedup_asset(self.name, self.upstream, column=self.column, threshold=self.threshold,
                                    vector_column=self.vector_column, condition=self.condition,
                                    max_cluster_size=self.max_cluster_size, **self.shared())
