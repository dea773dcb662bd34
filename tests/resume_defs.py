"""Definitions for the crash / resume tests, configured by environment variables (loaded by the dagster CLI)."""

import os

import dagster as dg

from ai_assets import RetryPolicy, RunOptions
from ai_assets.dagster import (
    DeltaIOManager,
    IcebergIOManager,
    LanceDBIOManager,
    OpenAICompatibleResource,
    ParquetIOManager,
    ResultCacheResource,
    ingest_asset,
    prompt_asset,
)

SOURCE = os.environ["RESUME_SOURCE"]
OUT = os.environ["AI_ASSETS_OUT"]
BACKEND = os.environ.get("RESUME_BACKEND", "parquet")

partitions = dg.StaticPartitionsDefinition(["p1", "p2"])
raw = ingest_asset("raw", path=SOURCE + "/{partition}.jsonl", partitions_def=partitions)
answers = prompt_asset(
    "answers", raw, template=os.environ.get("RESUME_TEMPLATE", "{text}"), provider_key="llm",
    options=RunOptions(concurrency=8, on_error="null", retry=RetryPolicy(max_attempts=2, base_wait=0.01)),
    partitions_def=partitions)
io_managers = {"parquet": ParquetIOManager, "delta": DeltaIOManager, "lancedb": LanceDBIOManager}
store = IcebergIOManager(root=f"file://{OUT}/iceberg", catalog_uri=f"sqlite:///{OUT}/iceberg.db") \
    if BACKEND == "iceberg" else io_managers[BACKEND](root=OUT + "/" + BACKEND)

defs = dg.Definitions(assets=[raw, answers], resources={
    "llm": OpenAICompatibleResource(model="fake", base_url=os.environ["OPENAI_BASE_URL"], api_key="sk-resume"),
    "ai_cache": ResultCacheResource(path=os.environ.get("RESUME_JOURNAL", OUT + "/cache.sqlite")),
    "io_manager": store,
})
