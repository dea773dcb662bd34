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
"""

import datetime as dt
import importlib
from pathlib import Path
from typing import Annotated, Any, Literal

import dagster as dg
from pydantic import AfterValidator, BaseModel, Field, create_model, field_validator

from ai_assets.dagster.common import AssetArgs
from ai_assets.dagster.derived import build, yaml_model
from ai_assets.dagster.enrich import classify_asset, classify_image_asset, embed_asset, embed_image_asset, prompt_asset
from ai_assets.dagster.placement import gpu_tags
from ai_assets.dagster.registry import Provider, Store
from ai_assets.dagster.registry import build as build_resource
from ai_assets.dagster.resources import (
    ResultCacheResource,
)
from ai_assets.dagster.sources import (
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
    summarize_asset,
    translate_asset,
)
from ai_assets.functions.download import DownloadPolicy
from ai_assets.functions.images import ImageSpec
from ai_assets.functions.ingest_spec import IngestSpec
from ai_assets.functions.preprocess import Extract
from ai_assets.functions.prompt import PromptParams
from ai_assets.functions.table_sources import DeltaSource, LanceSource
from ai_assets.functions.templates import FileColumn, ImageColumn, Part, check_template
from ai_assets.runtime.engine import RunOptions
from ai_assets.runtime.errors import ConfigError
from ai_assets.runtime.usage import Prices


class Daily(dg.Model):
    """Daily partitions from ``start`` (YYYY-MM-DD), up to ``end`` or today."""

    start: str
    end: str | None = None

    @field_validator("start", "end")
    @classmethod
    def _is_a_date(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                dt.date.fromisoformat(value)
            except ValueError as exc:
                raise ConfigError(f"partitions.daily: {value!r} is not a date (YYYY-MM-DD): {exc}") from exc
        return value


class Partitions(dg.Model):
    """One of: ``daily: {start, end}``, ``static: [keys]``, ``dynamic: name``."""

    daily: Daily | None = None
    static: list[str] | None = None
    dynamic: str | None = None

    def build(self) -> dg.PartitionsDefinition[Any]:
        chosen = [k for k in ("daily", "static", "dynamic") if getattr(self, k) is not None]
        if len(chosen) != 1:
            raise ConfigError(f"partitions: give exactly one of daily, static, dynamic; got {chosen or 'none'}")
        if self.daily is not None:
            return dg.DailyPartitionsDefinition(start_date=self.daily.start, end_date=self.daily.end)
        if self.static is not None:
            return dg.StaticPartitionsDefinition(self.static)
        return dg.DynamicPartitionsDefinition(name=self.dynamic)


# ``RunOptions`` in YAML: every field (``retry`` and ``batch`` nested), none of its defaults copied, plus
# ``max_attempts`` as a shortcut for ``retry.max_attempts``.
Options = yaml_model(RunOptions, name="Options", aliases={"max_attempts": "retry.max_attempts"})


class _AssetComponent(dg.Component, dg.Model, dg.Resolvable):
    """What every asset component takes besides its own attributes."""

    name: str = Field(description="The asset's name")
    partitions: Partitions | None = Field(default=None, description="daily / static / dynamic partitions")
    group_name: str | None = None
    io_manager_key: str | None = None
    pool: str | None = Field(default=None, description="The Dagster pool that caps concurrent steps")
    retries: int | None = Field(default=None, description="Dagster retries of a failed step")
    single_run_backfill: bool = Field(default=False, description="Backfill a range of partitions in one run")
    description: str | None = None
    gpus: int = Field(default=0, description="GPUs the step needs: Kubernetes resource tags and the Celery 'gpu' "
                      "queue (see gpu_tags)")

    def asset_args(self) -> AssetArgs:
        args: AssetArgs = {}
        if self.partitions is not None:
            args["partitions_def"] = self.partitions.build()
        if self.group_name:
            args["group_name"] = self.group_name
        if self.io_manager_key:
            args["io_manager_key"] = self.io_manager_key
        if self.pool:
            args["pool"] = self.pool
        if self.retries:
            args["retry_policy"] = dg.RetryPolicy(max_retries=self.retries)
        if self.single_run_backfill:
            args["backfill_policy"] = dg.BackfillPolicy.single_run()
        if self.description:
            args["description"] = self.description
        if self.gpus:
            args["op_tags"] = gpu_tags(self.gpus)
        return args

    def asset(self) -> dg.AssetsDefinition:
        raise NotImplementedError

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        return dg.Definitions(assets=[self.asset()])


class IngestComponent(_AssetComponent):
    """Files at ``path`` (``{partition}`` in it), or a partition of a Delta / LanceDB table."""

    path: str | None = None
    delta_table: str | None = Field(default=None, description="A Delta table's URI to read instead of files")
    lance_table: str | None = Field(default=None, description="'<database folder>/<table name>' to read instead")
    partition_column: str | None = Field(default=None, description="The source table's partition column")
    format: Literal["parquet", "csv", "json", "jsonl", "files"] | None = None
    columns: list[str] | None = None
    limit: int | None = None
    bad_rows: Literal["raise", "null"] = "raise"
    min_rows: int = 0

    def spec(self) -> IngestSpec:
        source: DeltaSource | LanceSource | None = None
        if self.delta_table:
            source = DeltaSource(self.delta_table, self.partition_column)
        elif self.lance_table:
            folder, _, table = self.lance_table.rpartition("/")
            source = LanceSource(folder, table, self.partition_column)
        return IngestSpec(path=self.path, source=source, format=self.format, columns=self.columns,
                          limit=self.limit, bad_rows=self.bad_rows, min_rows=self.min_rows)

    def asset(self) -> dg.AssetsDefinition:
        return ingest_asset(self.name, spec=self.spec(), **self.asset_args())


class Extraction(dg.Model):
    """A regex extraction: the ``group`` (number or name) of ``pattern`` matched in ``column``."""

    column: str
    pattern: str
    group: int | str = 1


class PreprocessComponent(_AssetComponent):
    """Row-wise cleaning: drop rows missing a column, regex extractions, SQL-free derived columns."""

    upstream: str
    drop_missing: list[str] = Field(default_factory=list)
    extract: dict[str, Extraction] = Field(default_factory=dict)
    derive: dict[str, str] = Field(default_factory=dict)

    def asset(self) -> dg.AssetsDefinition:
        extract = {out: Extract(e.column, e.pattern, e.group) for out, e in self.extract.items()}
        return preprocess_asset(self.name, self.upstream, drop_missing=self.drop_missing, extract=extract,
                                derive=self.derive, **self.asset_args())


class MessagePart(dg.Model):
    """A template part: ``text``, an ``image`` column (``as_url`` for URLs) or a ``file`` column."""

    text: str | None = None
    image: str | None = None
    as_url: bool = False
    file: str | None = None
    filename_column: str | None = None

    def build(self) -> Part:
        if self.image:
            return ImageColumn(self.image, as_url=self.as_url)
        if self.file:
            return FileColumn(self.file, filename_column=self.filename_column)
        if self.text is None:
            raise ConfigError("a template part needs text, image or file")
        return self.text


class Params(dg.Model):
    """``PromptParams``: sampling and API settings sent with every request."""

    temperature: float | None = None
    max_output_tokens: int | None = None
    api: Literal["chat", "responses"] | None = None
    reasoning: dict[str, Any] | None = None
    extra_body: dict[str, Any] | None = None

    def build(self) -> PromptParams:
        return PromptParams(**self.model_dump())


class Pricing(dg.Model):
    """Prices in dollars per million tokens, overriding the built-in table."""

    input_per_million: float
    output_per_million: float = 0.0


class _EnrichComponent(_AssetComponent):
    """What the enrichment components share: upstream, provider, journal, options, prices."""

    upstream: str
    output_column: str | None = None
    options: Options | None = None  # type: ignore[valid-type]
    cache_key: str | None = "ai_cache"
    prices: Pricing | None = None

    def run_options(self) -> RunOptions | None:
        return build(self.options) if self.options else None

    def pricing(self) -> Prices | None:
        return Prices(self.prices.input_per_million, self.prices.output_per_million) if self.prices else None


def _renders(template: Any) -> Any:
    """A template ``prompt`` would refuse at run time is refused when the YAML is loaded. As a validator in the
    field's annotation it also runs on the model Dagster derives to read the YAML, so ``dg check defs`` points at
    the file and line."""
    if isinstance(template, str):
        check_template(template)
    elif isinstance(template, list) and all(isinstance(p, MessagePart) for p in template):
        check_template([p.build() for p in template])
    return template


class PromptComponent(_EnrichComponent):
    """An LLM prompt per row, free text or structured by ``return_format``, from an OpenAI-compatible endpoint
    or a local model."""

    template: Annotated[str | list[MessagePart], AfterValidator(_renders)]
    return_format: str | dict[str, Any] | None = Field(
        default=None, description="A Pydantic model as 'module:Class', or a JSON schema inline")
    system_message: str | None = None
    params: Params | None = None
    provider_key: str = "llm"
    llm_model: str | None = Field(default=None, description="The chat model (default: the resource's)")

    def asset(self) -> dg.AssetsDefinition:
        template = self.template if isinstance(self.template, str) else [p.build() for p in self.template]
        return prompt_asset(self.name, self.upstream, template=template, return_format=answer_model(
            self.return_format, self.name), system_message=self.system_message, output_column=self.output_column,
            params=self.params.build() if self.params else None, options=self.run_options(),
            provider_key=self.provider_key, cache_key=self.cache_key, model=self.llm_model, prices=self.pricing(),
            **self.asset_args())


class EmbedComponent(_EnrichComponent):
    """Text embeddings of ``column``, from a local sentence-transformers model or an embeddings endpoint."""

    column: str
    provider_key: str = "embedder"
    embedding_model: str | None = None

    def asset(self) -> dg.AssetsDefinition:
        return embed_asset(self.name, self.upstream, column=self.column, output_column=self.output_column,
                           options=self.run_options(), provider_key=self.provider_key, cache_key=self.cache_key,
                           model=self.embedding_model, prices=self.pricing(), **self.asset_args())


class ClassifyComponent(_EnrichComponent):
    """Text classification into ``labels``, by embedding similarity or by an LLM; ``top_k`` / ``threshold``
    for several labels."""

    column: str
    labels: list[str] | dict[str, str]
    method: Literal["embedding", "llm"] | None = None
    top_k: int | None = None
    threshold: float | None = None
    params: Params | None = Field(default=None, description="method llm: the sampling settings")
    provider_key: str = "embedder"
    embedding_model: str | None = None

    def asset(self) -> dg.AssetsDefinition:
        return classify_asset(self.name, self.upstream, column=self.column, labels=self.labels, method=self.method,
                              output_column=self.output_column, options=self.run_options(),
                              provider_key=self.provider_key, cache_key=self.cache_key, model=self.embedding_model,
                              prices=self.pricing(), top_k=self.top_k, threshold=self.threshold,
                              params=self.params.build() if self.params else None, **self.asset_args())


class TaskComponent(_EnrichComponent):
    """A task function as an asset: summarize, translate, sentiment, mask, fix_grammar or extract."""

    task: Literal["summarize", "translate", "sentiment", "mask", "fix_grammar", "extract"]
    column: str
    max_words: int = 50
    to: str | None = Field(default=None, description="translate: the target language")
    entities: list[str] | None = Field(default=None, description="mask: the kinds of entity")
    fields: list[str] | dict[str, str] | None = Field(default=None, description="extract: the fields")
    params: Params | None = None
    provider_key: str = "llm"
    llm_model: str | None = None

    def asset(self) -> dg.AssetsDefinition:
        common: dict[str, Any] = {"column": self.column, "output_column": self.output_column,
                                  "params": self.params.build() if self.params else None,
                                  "options": self.run_options(), "provider_key": self.provider_key,
                                  "cache_key": self.cache_key, "model": self.llm_model, "prices": self.pricing(),
                                  **self.asset_args()}
        if self.task == "summarize":
            return summarize_asset(self.name, self.upstream, max_words=self.max_words, **common)
        if self.task == "translate":
            if not self.to:
                raise ConfigError(f"{self.name}: task translate needs 'to' (the target language)")
            return translate_asset(self.name, self.upstream, to=self.to, **common)
        if self.task == "mask":
            if self.entities:
                common["entities"] = self.entities
            return mask_asset(self.name, self.upstream, **common)
        if self.task == "extract":
            if not self.fields:
                raise ConfigError(f"{self.name}: task extract needs 'fields'")
            return extract_asset(self.name, self.upstream, fields=self.fields, **common)
        factory = sentiment_asset if self.task == "sentiment" else fix_grammar_asset
        return factory(self.name, self.upstream, **common)


class DownloadComponent(_AssetComponent):
    """Bytes of the URLs in ``column``, behind the download guard (protocol allow-list, no metadata addresses,
    size cap)."""

    upstream: str
    column: str
    output_column: str = "bytes"
    max_bytes: int = DownloadPolicy.max_bytes
    allow_files: bool = DownloadPolicy.allow_files
    allow_private: bool = Field(default=DownloadPolicy.allow_private, description=(
        "Reach private, loopback, shared and reserved addresses (refused by default; link-local and metadata "
        "addresses are refused regardless)."))
    protocols: list[str] = Field(default_factory=lambda: sorted(DownloadPolicy().protocols))

    def asset(self) -> dg.AssetsDefinition:
        policy = DownloadPolicy(max_bytes=self.max_bytes, allow_files=self.allow_files,
                                allow_private=self.allow_private, protocols=frozenset(self.protocols))
        return download_asset(self.name, self.upstream, column=self.column, output_column=self.output_column,
                              policy=policy, **self.asset_args())


class DecodeImagesComponent(_AssetComponent):
    """Decoded, converted and resized images from bytes, as PNG/JPEG bytes."""

    upstream: str
    column: str = "bytes"
    output_column: str = "image"
    mode: str | None = "RGB"
    size: list[int] | None = Field(default=None, description="[width, height] to fit into")
    resize: Literal["thumbnail", "exact"] = "thumbnail"
    format: str = "PNG"

    def asset(self) -> dg.AssetsDefinition:
        if self.size is not None and len(self.size) != 2:
            raise ConfigError(f"{self.name}: size is [width, height], got {self.size}")
        size = (self.size[0], self.size[1]) if self.size else None
        spec = ImageSpec(mode=self.mode, size=size, resize=self.resize, format=self.format)
        return decode_images_asset(self.name, self.upstream, column=self.column, output_column=self.output_column,
                                   spec=spec, **self.asset_args())


class ExtractTextComponent(_AssetComponent):
    """Text from PDF, HTML or plain-text bytes, with page and character caps."""

    upstream: str
    column: str = "bytes"
    output_column: str = "text"
    max_pages: int = 50
    max_chars: int = 100_000

    def asset(self) -> dg.AssetsDefinition:
        return extract_text_asset(self.name, self.upstream, column=self.column, output_column=self.output_column,
                                  max_pages=self.max_pages, max_chars=self.max_chars, **self.asset_args())


class EmbedImageComponent(_EnrichComponent):
    """Image embeddings (CLIP-class or EfficientNet models), on GPU when there is one."""

    column: str = "image"
    provider_key: str = "image_embedder"

    def asset(self) -> dg.AssetsDefinition:
        return embed_image_asset(self.name, self.upstream, column=self.column, output_column=self.output_column,
                                 options=self.run_options(), provider_key=self.provider_key,
                                 cache_key=self.cache_key, **self.asset_args())


class Examples(dg.Model):
    """Example images of a label: ``glob`` (relative to the working folder) and/or ``files``."""

    glob: str | None = None
    files: list[str] = Field(default_factory=list)

    def paths(self) -> list[Path]:
        found = sorted(Path().glob(self.glob)) if self.glob else []
        return found + [Path(p) for p in self.files]


class ClassifyImageComponent(_EnrichComponent):
    """Labels described by a prompt (a string: CLIP-class models), or by example image files (a list of files,
    or ``{glob: ..., files: [...]}``). A string is always a prompt, whatever characters it holds."""

    column: str = "image"
    labels: dict[str, str | list[str] | Examples]
    provider_key: str = "image_embedder"

    def asset(self) -> dg.AssetsDefinition:
        labels: dict[str, str | list[bytes]] = {}
        for label, spec in self.labels.items():
            if isinstance(spec, str):
                labels[label] = spec
                continue
            paths = spec.paths() if isinstance(spec, Examples) else [Path(p) for p in spec]
            if not paths:
                raise ConfigError(f"{self.name}: no example image for label {label!r} ({spec!r})")
            missing = [str(p) for p in paths if not p.is_file()]
            if missing:
                raise ConfigError(f"{self.name}: label {label!r}: no example image file {missing}")
            labels[label] = [p.read_bytes() for p in paths]
        return classify_image_asset(self.name, self.upstream, labels=labels, column=self.column,
                                    output_column=self.output_column, options=self.run_options(),
                                    provider_key=self.provider_key, cache_key=self.cache_key, **self.asset_args())


def _under(out: str | None, path: str) -> str:
    if out is None or "://" in path or Path(path).is_absolute():
        return path
    return f"{out.rstrip('/')}/{path}"


class ResourcesComponent(dg.Component, dg.Model, dg.Resolvable):
    """Providers, IO managers and the journal, by key."""

    out: str | None = Field(default=None, description="The folder or URI relative roots are under")
    providers: dict[str, Provider] = Field(default_factory=dict,
                                           description="By resource key: kind plus that resource's own fields")
    io_managers: dict[str, Store] = Field(default_factory=dict,
                                          description="By IO manager key: kind plus that IO manager's own fields")
    journal: str | None = Field(default=None, description="A SQLite file, object-store URI or Postgres URL")

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        resources: dict[str, Any] = {key: build_resource(p) for key, p in self.providers.items()}
        resources.update({key: build_resource(s, root=_under(self.out, s.root))
                          for key, s in self.io_managers.items()})
        resources["ai_cache"] = ResultCacheResource(path=_under(self.out, self.journal) if self.journal else None)
        return dg.Definitions(resources=resources)


def answer_model(spec: str | dict[str, Any] | None, name: str) -> type[BaseModel] | None:
    """A ``return_format`` from YAML: a Pydantic model by import path ('pkg.module:Class' or 'pkg.module.Class'),
    or a JSON schema (objects, arrays, strings, numbers, booleans, enums) turned into a model."""
    if spec is None:
        return None
    if isinstance(spec, dict):
        return _model_from_schema(spec, "".join(part.title() for part in name.split("_")) or "Answer")
    module, _, attribute = spec.partition(":") if ":" in spec else spec.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"return_format {spec!r}: cannot import it ({exc})") from exc
    if not (isinstance(found, type) and issubclass(found, BaseModel)):
        raise ConfigError(f"return_format {spec!r} is not a Pydantic model")
    return found


_JSON_TYPES: dict[str, Any] = {"string": str, "integer": int, "number": float, "boolean": bool}


def _model_from_schema(schema: dict[str, Any], name: str) -> type[BaseModel]:
    if schema.get("type", "object") != "object" or not schema.get("properties"):
        raise ConfigError(f"return_format: an inline JSON schema must be an object with properties, got {schema}")
    required = set(schema.get("required", schema["properties"]))
    fields: dict[str, Any] = {}
    for field, sub in schema["properties"].items():
        kind = _python_type(sub, f"{name}{field.title()}")
        default = ... if field in required else None
        bound = sub.get("maxItems", sub.get("maxLength"))  # enforced by grammar-constrained decoding too
        fields[field] = (kind if field in required else kind | None,
                         Field(default, description=sub.get("description"), max_length=bound))
    model: type[BaseModel] = create_model(name, **fields)
    return model


def _python_type(schema: dict[str, Any], name: str) -> Any:
    if "enum" in schema:
        return Literal[tuple(schema["enum"])]
    kind = schema.get("type", "string")
    if kind == "array":
        return list[_python_type(schema.get("items", {"type": "string"}), name)]  # type: ignore[misc]
    if kind == "object":
        return _model_from_schema(schema, name)
    if kind not in _JSON_TYPES:
        raise ConfigError(f"return_format: JSON type {kind!r} is not supported (use {sorted(_JSON_TYPES)})")
    return _JSON_TYPES[kind]
