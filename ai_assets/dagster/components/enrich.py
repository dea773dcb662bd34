"""Components of the enrichment steps: prompt, embed, classify, tasks, image embeddings and labels."""

from pathlib import Path
from typing import Annotated, Any, Literal

import dagster as dg
from pydantic import AfterValidator, Field, model_validator

from ai_assets.dagster.components.common import (
    EnrichComponentBase,
    MessagePart,
    Params,
    Pricing,
    check_renders,
)
from ai_assets.dagster.enrich import classify_asset, classify_image_asset, embed_asset, embed_image_asset, prompt_asset
from ai_assets.dagster.gates import DriftCheck, GoldenSet, JudgeCheck
from ai_assets.dagster.registry import Provider, build_resource
from ai_assets.dagster.tasks import task_asset
from ai_assets.functions.cascade import Cascade
from ai_assets.functions.embedding_proxy import TEMPERATURE, EmbeddingProxy
from ai_assets.functions.images import MAX_PIXELS
from ai_assets.functions.json_schema import answer_model
from ai_assets.functions.tasks import TASKS
from ai_assets.runtime.errors import ConfigError
from ai_assets.runtime.guarantees import Accuracy, Precision, Recall


class TargetConfig(dg.Model):
    """What a certified cascade guarantees, with probability 1 - delta over a uniform sample the oracle labels."""

    measure: Literal["recall", "precision", "accuracy"] = Field(description="Recall and precision: of a bool label")
    value: float = Field(description="The target, in (0, 1)")
    label_field: str = Field(description="The return_format field whose label the target is about")
    delta: float = Field(0.05, description="The failure probability, in (0, 1)")
    label_budget: int = Field(200, description="How many rows the oracle labels to learn the threshold")
    seed: int = Field(0, description="Seeds the sample (the same seed draws the same rows)")

    def build(self) -> Recall | Precision | Accuracy:
        kinds: dict[str, type[Recall | Precision | Accuracy]] = {"recall": Recall, "precision": Precision,
                                                                 "accuracy": Accuracy}
        return kinds[self.measure](self.value)


class EmbeddingProxyConfig(dg.Model):
    """An embedding model as a certified cascade's proxy (see ``EmbeddingProxy``): each row's answer is the label
    whose text embeds nearest the row's ``column``."""

    provider: Provider = Field(description="The embedder, as in the resources block (e.g. kind: "
                               "sentence_transformers); an api_key is read from its api_key_env")
    column: str = Field(description="The text column each row embeds")
    labels: dict[bool | int | str, str] | list[str] = Field(
        description="The labels, two or more: a list of label strings, or label -> the text embedded for it")
    embedding_model: str | None = Field(None, description="The embedding model (default: the provider's)")
    temperature: float = Field(TEMPERATURE, description="Of the softmax over cosines that gives the confidence")

    def build(self) -> EmbeddingProxy:
        resource = build_resource(self.provider).process_config_and_initialize()
        return EmbeddingProxy(resource.build_provider(), self.column, self.labels, model=self.embedding_model,
                              temperature=self.temperature)


class CascadeConfig(dg.Model):
    """Models tried cheapest first: a row goes to the next one when the one before failed it, or when its
    ``confidence_field`` is under ``min_confidence`` (``escalate_when`` predicates are Python only). With
    ``target``, the threshold on ``confidence_field`` is learned instead (two models: the proxy, the oracle; or,
    with ``proxy``, an embedding model as the proxy and ``models`` naming the oracle alone)."""

    models: list[str]
    confidence_field: str | None = None
    min_confidence: float = 0.5
    prices: dict[str, Pricing] = Field(default_factory=dict, description="Per model (default: built-in prices)")
    target: TargetConfig | None = Field(None, description="Certify the cascade (see Cascade(target=...))")
    proxy: EmbeddingProxyConfig | None = Field(None, description="An embedding model as the certified proxy")

    @model_validator(mode="after")
    def _two_or_more(self) -> "CascadeConfig":
        if len(self.models) < 2 and self.proxy is None:
            raise ValueError(f"a cascade needs at least 2 models, cheapest first; got {self.models}")
        return self

    def build(self) -> Cascade:
        target = self.target
        certified: dict[str, Any] = {} if target is None else {
            "target": target.build(), "delta": target.delta, "label_budget": target.label_budget,
            "label_field": target.label_field, "seed": target.seed}
        return Cascade(self.models, confidence_field=self.confidence_field, min_confidence=self.min_confidence,
                       prices={name: p.build() for name, p in self.prices.items()},
                       proxy=self.proxy.build() if self.proxy else None, **certified)


class GoldenSetConfig(dg.Model):
    """A golden set file (.jsonl, .parquet, .csv; relative to the project) the prompt must answer as expected."""

    path: str
    expected_column: str = "expected"
    min_score: float = 0.9
    blocking: bool = True
    max_rows: int = 1000

    def build(self) -> GoldenSet:
        return GoldenSet(path=self.path, expected_column=self.expected_column, min_score=self.min_score,
                         blocking=self.blocking, max_rows=self.max_rows)


class JudgeConfig(dg.Model):
    """An LLM judge over a sample of the answers."""

    rubric: str
    sample: int = 20
    min_score: float = 0.8
    model: str | None = None
    blocking: bool = False

    def build(self) -> JudgeCheck:
        return JudgeCheck(self.rubric, sample=self.sample, min_score=self.min_score, model=self.model,
                          blocking=self.blocking)


class DriftConfig(dg.Model):
    """Embedding drift from a reference partition."""

    reference_partition: str
    max_distance: float = 0.2
    blocking: bool = False

    def build(self) -> DriftCheck:
        return DriftCheck(self.reference_partition, max_distance=self.max_distance, blocking=self.blocking)


class PromptComponent(EnrichComponentBase):
    """An LLM prompt per row, free text or structured by ``return_format``, from an OpenAI-compatible endpoint
    or a local model."""

    template: Annotated[str | list[MessagePart], AfterValidator(check_renders)]
    return_format: str | dict[str, Any] | None = Field(
        default=None, description="A Pydantic model as 'module:Class', or a JSON schema inline")
    system_message: str | None = None
    params: Params | None = None
    provider_key: str = "llm"
    llm_model: str | None = Field(default=None, description="The chat model (default: the resource's)")
    cascade: CascadeConfig | None = None
    golden_set: GoldenSetConfig | None = None
    judge: JudgeConfig | None = None

    def asset(self) -> dg.AssetsDefinition:
        template = self.template if isinstance(self.template, str) else [p.build() for p in self.template]
        return prompt_asset(self.name, self.upstream, template=template, return_format=answer_model(
            self.return_format, self.name), system_message=self.system_message, output_column=self.output_column,
            params=self.params.build() if self.params else None,
            cascade=self.cascade.build() if self.cascade else None,
            golden_set=self.golden_set.build() if self.golden_set else None,
            judge=self.judge.build() if self.judge else None, **self.enrich_args(self.provider_key, self.llm_model))


class EmbedComponent(EnrichComponentBase):
    """Text embeddings of ``column``, from a local sentence-transformers model or an embeddings endpoint."""

    column: str
    provider_key: str = "embedder"
    embedding_model: str | None = None
    drift: DriftConfig | None = None

    def asset(self) -> dg.AssetsDefinition:
        return embed_asset(self.name, self.upstream, column=self.column, output_column=self.output_column,
                           drift=self.drift.build() if self.drift else None,
                           **self.enrich_args(self.provider_key, self.embedding_model))


class ClassifyComponent(EnrichComponentBase):
    """Text classification into ``labels``, by embedding similarity or by an LLM; ``top_k`` / ``threshold``
    for several labels."""

    column: str
    labels: list[str] | dict[str, str]
    method: Literal["embedding", "llm"] | None = None
    top_k: int | None = None
    threshold: float | None = None
    params: Params | None = Field(default=None, description="method llm: the sampling settings")
    temperature: float = Field(default=0.05, description="method embedding: the softmax temperature of the scores")
    provider_key: str = "embedder"
    embedding_model: str | None = None

    def asset(self) -> dg.AssetsDefinition:
        return classify_asset(self.name, self.upstream, column=self.column, labels=self.labels, method=self.method,
                              output_column=self.output_column, top_k=self.top_k, threshold=self.threshold,
                              params=self.params.build() if self.params else None, temperature=self.temperature,
                              **self.enrich_args(self.provider_key, self.embedding_model))


TASK_SETTINGS = ("column", "left", "right", "max_words", "to", "entities", "fields", "params", "language", "prompt",
                 "filename_column", "max_bytes", "condition", "cascade", "drop")


class TaskComponent(EnrichComponentBase):
    """A task function as an asset (``task``: a name in ``ai_assets.functions.tasks.TASKS``): summarize,
    translate, sentiment, mask, fix_grammar and extract prompt a chat model; transcribe sends audio to
    ``/audio/transcriptions``; similarity compares the embeddings of ``left`` and ``right``. A setting the task
    does not take is an error, not ignored."""

    task: Literal[tuple(TASKS)]  # type: ignore[valid-type]
    column: str | None = Field(default=None, description="The text column (every task but similarity)")
    left: str | None = Field(default=None, description="similarity: the first text column")
    right: str | None = Field(default=None, description="similarity: the second text column")
    max_words: int | None = Field(default=None, description="summarize: the length bound (default 50)")
    to: str | None = Field(default=None, description="translate: the target language")
    entities: list[str] | None = Field(default=None, description="mask: the kinds of entity")
    fields: list[str] | dict[str, str] | None = Field(default=None, description="extract: the fields")
    params: Params | None = Field(default=None, description="Prompting tasks: the sampling settings")
    language: str | None = Field(default=None, description="transcribe: the spoken language (ISO-639-1)")
    prompt: str | None = Field(default=None, description="transcribe: text that guides the model (names, spelling)")
    filename_column: str | None = Field(default=None, description="transcribe: the file names (default: path)")
    max_bytes: int | None = Field(default=None, description="transcribe: the largest recording sent (default 25 MB)")
    condition: str | None = Field(default=None, description="semantic_filter: what a kept row satisfies")
    cascade: CascadeConfig | None = Field(default=None, description="semantic_filter: a cheap model first")
    drop: bool | None = Field(default=None, description="semantic_filter: leave out rows that fail (default true)")
    provider_key: str | None = Field(default=None, description="Default: llm, or embedder for similarity")
    llm_model: str | None = Field(default=None, description="Prompting tasks: the chat model")
    embedding_model: str | None = Field(default=None, description="similarity: the embedding model")

    def asset(self) -> dg.AssetsDefinition:
        entry = TASKS[self.task]
        takes = (*entry.inputs, *entry.settings)
        stray = [name for name in TASK_SETTINGS if name in self.model_fields_set and name not in takes]
        stray += [name for name in ("llm_model", "embedding_model") if name in self.model_fields_set
                  and name != ("llm_model" if entry.prompts else "embedding_model")]
        if stray:
            raise ConfigError(f"{self.name}: task {self.task} takes no {stray} (it takes {list(takes)})")
        arguments = {name: getattr(self, name) for name in takes}
        if self.params is not None:
            arguments["params"] = self.params.build()
        if self.cascade is not None:
            arguments["cascade"] = self.cascade.build()
        return task_asset(self.name, self.upstream, self.task, arguments, output_column=self.output_column,
                          **self.enrich_args(self.provider_key or ("llm" if entry.prompts else "embedder"),
                                             self.llm_model if entry.prompts else self.embedding_model))


class EmbedImageComponent(EnrichComponentBase):
    """Image embeddings (CLIP-class or EfficientNet models), on GPU when there is one."""

    column: str = "image"
    provider_key: str = "image_embedder"
    embedding_model: str | None = Field(default=None, description="The image model (default: the resource's)")
    max_pixels: int = Field(default=MAX_PIXELS, description="Larger images are refused (decompression bombs)")

    def asset(self) -> dg.AssetsDefinition:
        return embed_image_asset(self.name, self.upstream, column=self.column, output_column=self.output_column,
                                 max_pixels=self.max_pixels, **self.enrich_args(self.provider_key,
                                                                                self.embedding_model))


class Examples(dg.Model):
    """Example images of a label: ``glob`` (relative to the working folder) and/or ``files``."""

    glob: str | None = None
    files: list[str] = Field(default_factory=list)

    def paths(self) -> list[Path]:
        found = sorted(Path().glob(self.glob)) if self.glob else []
        return found + [Path(p) for p in self.files]


class ClassifyImageComponent(EnrichComponentBase):
    """Labels described by a prompt (a string: CLIP-class models), or by example image files (a list of files,
    or ``{glob: ..., files: [...]}``). A string is always a prompt, whatever characters it holds."""

    column: str = "image"
    labels: dict[str, str | list[str] | Examples]
    provider_key: str = "image_embedder"
    embedding_model: str | None = Field(default=None, description="The image model (default: the resource's)")
    temperature: float = Field(default=0.05, description="The softmax temperature of the scores")
    max_pixels: int = Field(default=MAX_PIXELS, description="Larger images are refused (decompression bombs)")
    method: Literal["embedding", "llm"] | None = Field(
        default=None, description="llm: a vision LLM picks the label (provider_key: a chat resource)")
    params: Params | None = Field(default=None, description="method llm: the sampling settings")
    llm_model: str | None = Field(default=None, description="method llm: the vision model (default: the resource's)")

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
                                    method=self.method, output_column=self.output_column,
                                    temperature=self.temperature, max_pixels=self.max_pixels,
                                    params=self.params.build() if self.params else None,
                                    **self.enrich_args(self.provider_key, self.llm_model or self.embedding_model))
