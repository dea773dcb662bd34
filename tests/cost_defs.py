"""Definitions for the cost tests: three partitions of reviews through a structured prompt priced as gpt-4o-mini."""

import os

import dagster as dg
from pydantic import BaseModel, Field

from ai_assets import RunOptions
from ai_assets.dagster import (
    DeltaIOManager,
    OpenAICompatibleResource,
    ParquetIOManager,
    ResultCacheResource,
    ingest_asset,
    prompt_asset,
)

SOURCE = os.environ["COST_SOURCE"]
OUT = os.environ["AI_ASSETS_OUT"]


class Insight(BaseModel):
    sentiment: str = Field(description="positive, negative or mixed")
    aspects: list[str] = Field(max_length=3)
    stars: int


days = dg.StaticPartitionsDefinition(["d1", "d2", "d3"])
common = {"partitions_def": days, "backfill_policy": dg.BackfillPolicy.single_run()}
raw = ingest_asset("raw", path=SOURCE + "/{partition}.jsonl", **common)  # type: ignore[arg-type]
answers = prompt_asset("answers", raw, template="Review: {text}", return_format=Insight,
                       system_message="Extract the sentiment, the aspects and the stars of the review.",
                       options=RunOptions(concurrency=8), io_manager_key="delta", **common)  # type: ignore[arg-type]

defs = dg.Definitions(assets=[raw, answers], executor=dg.in_process_executor, resources={  # as definitions.py
    "llm": OpenAICompatibleResource(model="gpt-4o-mini", base_url=os.environ["OPENAI_BASE_URL"], api_key="sk-cost"),
    "ai_cache": ResultCacheResource(path=OUT + "/journal.sqlite"),
    "io_manager": ParquetIOManager(root=OUT + "/parquet"),
    "delta": DeltaIOManager(root=OUT + "/delta"),
})
