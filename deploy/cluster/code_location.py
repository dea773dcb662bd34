"""The code location of a deployment: the reviews pipeline for many partitions, many workers and one API account.

Everything a deployment decides comes from the environment (compose file, Helm values, scripts/cluster):

    AI_ASSETS_INPUT            where a day's reviews are: s3://lake/reviews/{partition}.jsonl
    AI_ASSETS_TABLES           where the tables go: s3://lake/tables (Delta and LanceDB, one table per asset)
    AI_ASSETS_JOURNAL          the answer journal, shared by every worker: postgresql+psycopg2://.../ai_assets
    AI_ASSETS_RATE_LIMIT_STORE the account's shared limit: redis://... (or the Postgres URL)
    AI_ASSETS_START/END        the daily partitions (end exclusive; default: from 2024-11-01, open-ended)
    AI_ASSETS_CONCURRENCY      requests in flight per step (default 16)
    OPENAI_BASE_URL, OPENAI_API_KEY, OPENAI_MODEL, OPENAI_EMBEDDING_MODEL, OPENAI_RPM, OPENAI_TPM
    DAGSTER_CELERY_BROKER_URL  with it, steps run on Celery workers (DAGSTER_CELERY_BACKEND_URL for results)
    AI_ASSETS_EXECUTOR         celery | k8s | celery-k8s (default: celery when a broker is set)
    AWS_ENDPOINT_URL           an S3-compatible endpoint (MinIO, moto); credentials from the usual AWS_* variables

Secrets (the API key, database passwords) are read from the environment at run time through ``dg.EnvVar`` and
never written into the definitions, the UI or the run config.
"""

from __future__ import annotations

import os
from typing import Any, Literal, cast

import dagster as dg
from pydantic import BaseModel, Field

from ai_assets import RunOptions
from ai_assets.dagster import (
    AssetArgs,
    DeltaIOManager,
    LanceDBIOManager,
    OpenAICompatibleResource,
    ParquetIOManager,
    ResultCacheResource,
    SentenceTransformersResource,
    embed_asset,
    gpu_tags,
    ingest_asset,
    prompt_asset,
    provider_versions,
)

LOCATION = "ai_assets_cluster"
LLM_POOL = "llm"
INPUT = os.environ.get("AI_ASSETS_INPUT", "s3://lake/reviews/{partition}.jsonl")
TABLES = os.environ.get("AI_ASSETS_TABLES", "s3://lake/tables").rstrip("/")
ENDPOINT = os.environ.get("AWS_ENDPOINT_URL")


def _optional_float(name: str) -> float | None:
    value = os.environ.get(name)
    return float(value) if value else None


class ReviewInsight(BaseModel):
    sentiment: Literal["positive", "negative", "mixed"] = Field(description="overall sentiment of the review")
    aspects: list[str] = Field(max_length=3, description="product aspects mentioned, e.g. battery, screen")
    summary: str = Field(max_length=80, description="the review in at most ten words")


daily = dg.DailyPartitionsDefinition(start_date=os.environ.get("AI_ASSETS_START", "2024-11-01"),
                                     end_date=os.environ.get("AI_ASSETS_END") or None)
# One run per partition (the default backfill policy): a failure, a retry or a killed worker touches one day only.
common: AssetArgs = {"partitions_def": daily, "group_name": "reviews", "retry_policy": dg.RetryPolicy(max_retries=1)}
options = RunOptions(concurrency=int(os.environ.get("AI_ASSETS_CONCURRENCY", "16")), on_error="null")

reviews = ingest_asset("reviews", path=INPUT, storage_options={"endpoint_url": ENDPOINT} if ENDPOINT else None,
                       **common)
review_insights = prompt_asset(
    "review_insights", reviews, template="Product: {product}\nReview: {text}", return_format=ReviewInsight,
    system_message="Extract the sentiment, the aspects mentioned and a short summary of the product review.",
    options=options, provider_key="llm", **common | {"io_manager_key": "delta", "pool": LLM_POOL})
review_embeddings = embed_asset("review_embeddings", review_insights, column="text", provider_key="embedder",
                                options=options, **common | {"io_manager_key": "lancedb"})
# The same embeddings from a local model, on a GPU node: the step asks Kubernetes for one GPU (and goes to the
# Celery queue "gpu"). Not part of the default selection; materialize it where GPU workers exist.
review_embeddings_gpu = embed_asset(
    "review_embeddings_gpu", review_insights, column="text", provider_key="local_embedder",
    **common | {"group_name": "gpu", "io_manager_key": "lancedb", "op_tags": gpu_tags()})


def _executor() -> dg.ExecutorDefinition | None:
    """AI_ASSETS_EXECUTOR: celery (steps on Celery workers; the local cluster and compose), k8s (a pod per step:
    what makes a step's GPU tags place it on a GPU node under K8sRunLauncher), celery-k8s (the Helm chart's
    CeleryK8sRunLauncher), or unset: Dagster's default, steps in subprocesses of the run."""
    kind = os.environ.get("AI_ASSETS_EXECUTOR", "celery" if os.environ.get("DAGSTER_CELERY_BROKER_URL") else "")
    if kind == "celery":
        from ai_assets.dagster.celery import watched_celery_executor

        backend = "DAGSTER_CELERY_BACKEND_URL" if os.environ.get("DAGSTER_CELERY_BACKEND_URL") else \
            "DAGSTER_CELERY_BROKER_URL"
        lost_after_s = float(os.environ.get("AI_ASSETS_CELERY_LOST_AFTER_S", "60"))
        return watched_celery_executor().configured({"broker": {"env": "DAGSTER_CELERY_BROKER_URL"},
                                                     "backend": {"env": backend}, "lost_after_s": lost_after_s})
    if kind == "k8s":
        from dagster_k8s import k8s_job_executor  # type: ignore[import-not-found]  # in the image only

        return cast(dg.ExecutorDefinition, k8s_job_executor)
    if kind == "celery-k8s":
        from dagster_celery_k8s import celery_k8s_job_executor  # type: ignore[import-not-found]

        return cast(dg.ExecutorDefinition, celery_k8s_job_executor)
    if kind:
        raise ValueError(f"AI_ASSETS_EXECUTOR={kind!r}: use celery, k8s, celery-k8s or leave it unset")
    return None


def _s3(delta: bool) -> dict[str, str]:
    if not ENDPOINT:
        return {}
    if delta:
        return {"AWS_ENDPOINT_URL": ENDPOINT, "AWS_ALLOW_HTTP": str(ENDPOINT.startswith("http://")).lower()}
    return {"aws_endpoint": ENDPOINT, "allow_http": str(ENDPOINT.startswith("http://")).lower()}


def _llm(embeddings: bool) -> OpenAICompatibleResource:
    return OpenAICompatibleResource(
        model=os.environ.get("OPENAI_MODEL", "gpt-4o-mini"),
        embedding_model=os.environ.get("OPENAI_EMBEDDING_MODEL", "text-embedding-3-small") if embeddings else None,
        base_url=os.environ.get("OPENAI_BASE_URL", "https://api.openai.com/v1"), api_key=dg.EnvVar("OPENAI_API_KEY"),
        rpm=_optional_float("OPENAI_RPM"), tpm=_optional_float("OPENAI_TPM"),
        rate_limit_store=dg.EnvVar("AI_ASSETS_RATE_LIMIT_STORE") if os.environ.get("AI_ASSETS_RATE_LIMIT_STORE")
        else None)


resources: dict[str, Any] = {
    "llm": _llm(embeddings=False),
    "embedder": _llm(embeddings=True),
    "local_embedder": SentenceTransformersResource(),
    "ai_cache": ResultCacheResource(path=dg.EnvVar("AI_ASSETS_JOURNAL")),
    "io_manager": ParquetIOManager(root=f"{TABLES}/parquet",
                                   storage_options={"endpoint_url": ENDPOINT} if ENDPOINT else {}),
    "delta": DeltaIOManager(root=f"{TABLES}/delta", storage_options=_s3(delta=True)),
    "lancedb": LanceDBIOManager(root=f"{TABLES}/lancedb", storage_options=_s3(delta=False)),
}

defs = provider_versions(dg.Definitions(
    assets=[reviews, review_insights, review_embeddings, review_embeddings_gpu],
    jobs=[dg.define_asset_job("reviews_job", selection=dg.AssetSelection.groups("reviews"),
                              tags={"ai_assets/pool": LLM_POOL})],
    resources=resources,
    executor=_executor(),
))
