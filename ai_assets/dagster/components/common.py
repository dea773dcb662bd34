"""What every component shares: partitions, run options, the asset and enrichment bases, prompt parts."""

import datetime as dt
from pathlib import Path
from typing import Annotated, Any, Literal, cast

import dagster as dg
from pydantic import ConfigDict, Field, ValidationError, field_validator

from ai_assets.dagster.common import AssetArgs, EnrichArgs
from ai_assets.dagster.components.defaults import OPTION_ALIASES, Clash, folder_defaults, merge
from ai_assets.dagster.derived import build, yaml_model
from ai_assets.dagster.placement import gpu_tags
from ai_assets.functions.prompt import PromptParams
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
Options = yaml_model(RunOptions, name="Options", aliases=OPTION_ALIASES)


class AssetComponentBase(dg.Component, dg.Model, dg.Resolvable):
    """What every asset component takes besides its own attributes."""

    model_config = ConfigDict(arbitrary_types_allowed=True)  # the resolved automation_condition

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
    automation_condition: Annotated[dg.AutomationCondition[Any] | None, dg.Resolver.default(
        model_field_type=str | None,  # "{{ dg.AutomationCondition.eager() }}": Dagster's template scope
        description="Declarative Automation: when Dagster's daemon requests a run of this asset")] = None
    freshness_policy: Annotated[dg.FreshnessPolicy | None, dg.Resolver.default(
        model_field_type=str | None,  # "{{ dg.FreshnessPolicy.time_window(fail_window=datetime.timedelta(days=1)) }}"
        description="How fresh the asset should be: Dagster's freshness policy, as in its own components")] = None

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
        if self.automation_condition is not None:
            args["automation_condition"] = self.automation_condition
        if self.freshness_policy is not None:
            args["freshness_policy"] = self.freshness_policy
        return args

    def asset(self) -> dg.AssetsDefinition:
        raise NotImplementedError

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        return dg.Definitions(assets=[self.with_folder_defaults(Path(context.path)).asset()])

    def with_folder_defaults(self, folder: Path) -> "AssetComponentBase":
        """This component with the settings of ``defaults.yaml`` in its folder (or the folder above a ``defs.yaml``)
        for every setting its own YAML leaves out, nested mappings (``options``, ``prices``) merged key by key and
        lists replaced (see ``ai_assets.dagster.components.defaults``). A key that is no shared setting, or a value
        that is wrong, is an error naming the file and the key."""
        defaults = folder_defaults(folder if folder.is_dir() else folder.parent)
        if not defaults:
            return self
        shared = {k: v for k, v in defaults.values.items() if k in type(self).model_fields}
        given = self.model_dump(exclude_unset=True)
        try:
            component = type(self).model_validate(merge(shared, given))
        except Clash as exc:  # the component's value passed alone: the folder's has the wrong shape
            raise defaults.blame(exc.key, exc.problem) from exc
        except ValidationError as exc:  # the component's own values passed alone: the folder's are wrong
            raise ConfigError("; ".join(str(defaults.blame(".".join(map(str, e["loc"])), e["msg"]))
                                        for e in exc.errors())) from exc
        for key in shared:  # values checked only when built (RunOptions, partitions, prices) are checked now
            try:
                component._build_setting(key)
            except ConfigError as exc:
                if key in given:
                    self._build_setting(key)  # raises where the component's own value is the wrong one
                raise defaults.blame(key, exc) from exc
        return component

    def _build_setting(self, key: str) -> object:
        value = getattr(self, key)
        if type(value) is Options:
            return build(value)
        return value.build() if isinstance(value, (Partitions, Pricing)) else value


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
    cached_input_per_million: float | None = None
    cache_write_per_million: float | None = None

    def build(self) -> Prices:
        return Prices(self.input_per_million, self.output_per_million,
                      cached_input_per_million=self.cached_input_per_million,
                      cache_write_per_million=self.cache_write_per_million)


DEAD_LETTER = Field(default=False, description=(
    "Also write the rows that used up their attempts to <name>_dead_letter (every input column, then "
    "_dead_letter_error, _dead_letter_attempts, _dead_letter_model)"))


class EnrichComponentBase(AssetComponentBase):
    """What the enrichment components share: upstream, provider, journal, options, prices."""

    upstream: str
    output_column: str | None = None
    options: Options | None = None  # type: ignore[valid-type]
    cache_key: str | None = "ai_cache"
    prices: Pricing | None = None
    dead_letter: bool = DEAD_LETTER

    def run_options(self) -> RunOptions | None:
        return build(self.options) if self.options else None

    def pricing(self) -> Prices | None:
        return self.prices.build() if self.prices else None

    def enrich_args(self, provider_key: str, model: str | None) -> EnrichArgs:
        """What every enrichment factory takes (``EnrichArgs``), from this component's fields."""
        own = {"provider_key": provider_key, "model": model, "options": self.run_options(),
               "cache_key": self.cache_key, "prices": self.pricing(), "dead_letter": self.dead_letter}
        return cast(EnrichArgs, {**self.asset_args(), **own})


def check_renders(template: Any) -> Any:
    """A template ``prompt`` would refuse at run time is refused when the YAML is loaded. As a validator in the
    field's annotation it also runs on the model Dagster derives to read the YAML, so ``dg check defs`` points at
    the file and line."""
    if isinstance(template, str):
        check_template(template)
    elif isinstance(template, list) and all(isinstance(p, MessagePart) for p in template):
        check_template([p.build() for p in template])
    return template


def under_out(out: str | None, path: str) -> str:
    if out is None or "://" in path or Path(path).is_absolute():
        return path
    return f"{out.rstrip('/')}/{path}"
