"""Components of the semantic operators over a whole partition: top-k and aggregate (``semantic_filter`` is a
task: ``TaskComponent`` with ``task: semantic_filter``).

    # defs/best_reviews/defs.yaml
    type: ai_assets.dagster.components.semantic_rows.SemanticTopKComponent
    attributes:
      name: best_reviews
      upstream: clean_reviews
      column: text
      query: Which review is the most useful to a buyer?
      k: 5
"""

import dagster as dg
from pydantic import Field, ValidationInfo, field_validator

from ai_assets.dagster.components.common import EnrichComponentBase, Params
from ai_assets.dagster.semantic_rows import semantic_aggregate_asset, semantic_top_k_asset
from ai_assets.functions.semantic._rows_ask import MAX_CHARS
from ai_assets.functions.semantic.aggregate import MAX_INPUT_TOKENS, MAX_LEVELS
from ai_assets.functions.semantic.top_k import MAX_CANDIDATES

LEAST = {"k": 0, "candidates": 1, "max_candidates": 1, "max_chars": 16, "max_input_tokens": 64, "max_levels": 1}
"""Each bounded field's least value, not as ``Field(ge=...)``: Dagster's YAML model also takes a template string
for an int, and pydantic applying ``ge`` to a string (``k: five``) raises a bare TypeError naming neither the field
nor the file. The JSON schema's ``minimum`` (which ``dg check defs`` reports with the file and line, and which a
string ignores) and a validator (naming the field, for Python and templates) hold the bound instead."""


def _at_least(value: int, info: ValidationInfo) -> int:
    least = LEAST[info.field_name or ""]
    if isinstance(value, int) and value < least:
        raise ValueError(f"{info.field_name} must be >= {least}, got {value}")
    return value


class SemanticTopKComponent(EnrichComponentBase):
    """The ``k`` rows per partition whose ``column`` best answers ``query``, ranked by pairwise LLM comparisons
    (LOTUS's quickselect), each journalled by both rows' content."""

    column: str
    query: str
    k: int = Field(json_schema_extra={"minimum": 0},
                   description="How many rows per partition (0 to the partition's size)")
    embedder: str | None = Field(default=None, description="An embedding model of the same resource, to keep only "
                                 "the `candidates` rows nearest the query before comparing")
    candidates: int = Field(default=100, json_schema_extra={"minimum": 1},
                            description="With embedder: the rows compared")
    max_candidates: int = Field(default=MAX_CANDIDATES, json_schema_extra={"minimum": 1},
                                description="Without embedder: the most rows ranked")
    max_chars: int = Field(default=MAX_CHARS, json_schema_extra={"minimum": 16},
                           description="A longer text is compared cut (`<out>_cut`)")
    seed: int = Field(default=0, description="Picks the pivots (the same seed asks the same questions)")
    params: Params | None = None
    provider_key: str = "llm"
    llm_model: str | None = Field(default=None, description="The chat model (default: the resource's)")

    _bounds = field_validator("k", "candidates", "max_candidates", "max_chars")(_at_least)

    def asset(self) -> dg.AssetsDefinition:
        return semantic_top_k_asset(
            self.name, self.upstream, column=self.column, query=self.query, k=self.k, embedder=self.embedder,
            candidates=self.candidates, max_candidates=self.max_candidates, max_chars=self.max_chars,
            seed=self.seed, output_column=self.output_column, params=self.params.build() if self.params else None,
            **self.enrich_args(self.provider_key, self.llm_model))


class SemanticAggregateComponent(EnrichComponentBase):
    """One answer per partition to ``instruction`` over every row's ``column``, folded hierarchically under a
    token budget per request; groups are journalled by content."""

    column: str
    instruction: str
    max_input_tokens: int = Field(default=MAX_INPUT_TOKENS, json_schema_extra={"minimum": 64},
                                  description="The documents in one request")
    max_levels: int = Field(default=MAX_LEVELS, json_schema_extra={"minimum": 1}, description="The most fold levels")
    max_chars: int = Field(default=MAX_CHARS, json_schema_extra={"minimum": 16},
                           description="A longer row is cut (`<out>_cut_rows`)")
    params: Params | None = None
    provider_key: str = "llm"
    llm_model: str | None = Field(default=None, description="The chat model (default: the resource's)")

    _bounds = field_validator("max_input_tokens", "max_levels", "max_chars")(_at_least)

    def asset(self) -> dg.AssetsDefinition:
        return semantic_aggregate_asset(
            self.name, self.upstream, column=self.column, instruction=self.instruction,
            max_input_tokens=self.max_input_tokens, max_levels=self.max_levels, max_chars=self.max_chars,
            output_column=self.output_column, params=self.params.build() if self.params else None,
            **self.enrich_args(self.provider_key, self.llm_model))
