"""Asset factories for the task functions (``ai_assets.functions.tasks``): extract, summarize, translate,
sentiment, mask, fix_grammar, transcribe, similarity. Each is an enrichment asset like ``prompt_asset``: streamed,
journalled, with usage and cost per partition and an error-rate check. ``task_asset`` builds any task of the registry
(``tasks.TASKS``) by name; the named factories are its typed views, generated from the registry."""

import inspect
import numbers
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, Unpack

import dagster as dg
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from ai_assets.dagster.call import Call, Upstream
from ai_assets.dagster.checks import error_rate_check
from ai_assets.dagster.common import EnrichArgs, fingerprint, upstream_key
from ai_assets.dagster.enrich import _enrich_asset, embedding_prices, with_defaults
from ai_assets.functions import tasks
from ai_assets.functions.cascade import Cascade
from ai_assets.functions.prompt import PromptParams
from ai_assets.runtime.errors import ConfigError
from ai_assets.runtime.prices import prices_for
from ai_assets.runtime.results import EnrichedStream


def _versioned(value: Any) -> Any:
    if isinstance(value, type) and issubclass(value, BaseModel):
        return value.model_json_schema()
    if isinstance(value, Cascade):  # its settings, not a repr with a function's address
        return value.fingerprint()
    return value.as_request() if isinstance(value, PromptParams) else value


def task_asset(name: str, upstream: Upstream, task: str, arguments: Mapping[str, Any], *,
               output_column: str | None = None, **args: Unpack[EnrichArgs]) -> dg.AssetsDefinition:
    """An asset running the task function ``task`` (a name in ``ai_assets.functions.tasks.TASKS``) with
    ``arguments`` (its input columns and settings, e.g. ``{"column": "text", "to": "French"}``) over the upstream
    rows. ``args`` as for ``prompt_asset``; ``provider_key`` defaults to ``llm`` for prompting tasks and
    ``embedder`` for similarity."""
    if task not in tasks.TASKS:
        raise ConfigError(f"{name}: no task {task!r}; the tasks are {sorted(tasks.TASKS)}")
    entry = tasks.TASKS[task]
    known = (*entry.inputs, *entry.settings)
    given = {k: v for k, v in arguments.items() if v is not None}
    missing = [k for k in (*entry.inputs, *entry.required) if k not in given]
    unknown = sorted(set(given) - set(known))
    if missing or unknown:
        raise ConfigError(f"{name}: task {task} " + "; ".join(
            ([f"needs {missing}"] if missing else []) + ([f"takes no {unknown} (it takes {list(known)})"]
                                                         if unknown else [])))
    wrong = [problem for k, v in given.items() if (problem := _type_problem(entry.function, k, v))]
    if wrong:  # now, not when the daemon runs the asset (``max_words="50"`` from untyped code)
        raise ConfigError(f"{name}: task {task}: " + "; ".join(wrong))
    args = with_defaults(args, "llm" if entry.prompts else "embedder", 0.05 if entry.prompts else 0.0)
    output = output_column or name
    model, prices = args.get("model"), args.get("prices")
    version = fingerprint(kind=entry.function.__name__, output=output, model=model,
                          **{k: _versioned(v) for k, v in arguments.items()})

    def run(data: pa.RecordBatchReader, call: Call) -> EnrichedStream:
        out = entry.function(data, provider=call.provider, output_column=output, prices=prices, **given,
                             **call.common(args.get("options")))
        assert isinstance(out, EnrichedStream)
        return out

    description = (f"{entry.what(given)} in `{upstream_key(upstream).to_user_string()}` with "
                   f"{f'model `{model}` of ' if model else 'the model of '}resource `{args['provider_key']}` into "
                   f"`{output}` (reasons for rows without a value in `{output}_error`).")
    price_of = (lambda provider: prices or prices_for(provider)) if entry.prompts else embedding_prices(prices)
    return _enrich_asset(name, upstream, run, args, price_of=price_of, code_version=version,
                         checks=[error_rate_check(output, args["max_error_rate"])], vector_column=None,
                         description=description, model_role=entry.role)


def _type_problem(function: Callable[..., Any], setting: str, value: Any) -> str | None:
    """Why ``value`` is not of the type ``function`` declares for ``setting`` (strict: ``"50"`` is no int), or
    None. A numpy scalar counts as its Python value."""
    annotation = inspect.signature(function).parameters[setting].annotation
    try:
        hint = eval(annotation, vars(sys.modules[function.__module__])) if isinstance(annotation, str) else annotation
        adapter: TypeAdapter[Any] = TypeAdapter(hint, config=ConfigDict(strict=True, arbitrary_types_allowed=True))
    except Exception:  # an annotation we cannot resolve is not checked here; the function still checks its own
        return None
    plain = value.item() if isinstance(value, numbers.Number) and hasattr(value, "item") else value
    try:
        adapter.validate_python(plain)
    except ValidationError:
        return f"{setting} must be {_spelled(annotation)}, got {type(value).__name__} {value!r:.60}"
    return None


def _spelled(annotation: Any) -> str:
    return annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))


def _named(task: str) -> Any:
    """The factory ``<task>_asset``: ``task_asset`` of ``task`` with the task function's own settings as keywords
    (their defaults the function's), its signature built from the function's for ``help()``, the docs and the
    parity test."""
    entry = tasks.TASKS[task]
    function = inspect.signature(entry.function).parameters
    taken = {k: function[k] for k in (*entry.inputs, *entry.settings)}

    def factory(name: str, upstream: Upstream, *, output_column: str | None = None,
                **kwargs: Any) -> dg.AssetsDefinition:
        for own in ("task", "arguments"):  # task_asset's, not this factory's: named as Python would
            if own in kwargs:
                raise TypeError(f"{task}_asset() got an unexpected keyword argument {own!r}")
        arguments = {k: kwargs.pop(k) if k in kwargs else _default(p) for k, p in taken.items()}
        return task_asset(name, upstream, task, arguments, output_column=output_column, **kwargs)

    summary = (inspect.getdoc(entry.function) or "").split("\n\n")[0]
    factory.__name__ = factory.__qualname__ = f"{task}_asset"
    factory.__module__ = __name__
    factory.__doc__ = (f"An asset running ``{entry.function.__name__}`` over the upstream rows: {summary}\n\n"
                       "The other keywords are every enrichment factory's (``EnrichArgs``, as for ``prompt_asset``).")
    head = [inspect.Parameter("name", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=str),
            inspect.Parameter("upstream", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Upstream)]
    own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in taken.values()]
    tail = [inspect.Parameter("output_column", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=str | None),
            inspect.Parameter("args", inspect.Parameter.VAR_KEYWORD, annotation=Unpack[EnrichArgs])]
    factory.__signature__ = inspect.Signature([*head, *own, *tail],  # type: ignore[attr-defined]
                                              return_annotation=dg.AssetsDefinition)
    return factory


def _default(parameter: inspect.Parameter) -> Any:
    return None if parameter.default is inspect.Parameter.empty else parameter.default


class _Extract(Protocol):
    def __call__(self, name: str, upstream: Upstream, *, column: str,
                 fields: Sequence[str] | Mapping[str, str] | type[BaseModel], params: PromptParams | None = None,
                 output_column: str | None = None, **args: Unpack[EnrichArgs]) -> dg.AssetsDefinition: ...


class _Summarize(Protocol):
    def __call__(self, name: str, upstream: Upstream, *, column: str, max_words: int = 50,
                 params: PromptParams | None = None, output_column: str | None = None,
                 **args: Unpack[EnrichArgs]) -> dg.AssetsDefinition: ...


class _Translate(Protocol):
    def __call__(self, name: str, upstream: Upstream, *, column: str, to: str, params: PromptParams | None = None,
                 output_column: str | None = None, **args: Unpack[EnrichArgs]) -> dg.AssetsDefinition: ...


class _Text(Protocol):
    """A task of one text column and no other setting (sentiment, fix_grammar)."""

    def __call__(self, name: str, upstream: Upstream, *, column: str, params: PromptParams | None = None,
                 output_column: str | None = None, **args: Unpack[EnrichArgs]) -> dg.AssetsDefinition: ...


class _Mask(Protocol):
    def __call__(self, name: str, upstream: Upstream, *, column: str, entities: Sequence[str] = ...,
                 params: PromptParams | None = None, output_column: str | None = None,
                 **args: Unpack[EnrichArgs]) -> dg.AssetsDefinition: ...


class _Similarity(Protocol):
    def __call__(self, name: str, upstream: Upstream, *, left: str, right: str, output_column: str | None = None,
                 **args: Unpack[EnrichArgs]) -> dg.AssetsDefinition: ...


class _SemanticFilter(Protocol):
    def __call__(self, name: str, upstream: Upstream, *, column: str, condition: str, cascade: Cascade | None = None,
                 drop: bool = True, params: PromptParams | None = None, output_column: str | None = None,
                 **args: Unpack[EnrichArgs]) -> dg.AssetsDefinition: ...


class _Transcribe(Protocol):
    def __call__(self, name: str, upstream: Upstream, *, column: str = "bytes", language: str | None = None,
                 prompt: str | None = None, filename_column: str | None = "path", max_bytes: int = ...,
                 output_column: str | None = None, **args: Unpack[EnrichArgs]) -> dg.AssetsDefinition: ...


# The typed views of ``task_asset``, one per entry of ``tasks.TASKS`` (tests/unit/test_parity.py checks each
# Protocol against its function's signature).
extract_asset: _Extract = _named("extract")
"""Structured fields (``fields``: names, name -> description, or a pydantic model) from the text in ``column``,
one struct column (``ai_assets.functions.extract``); ``params`` as for ``prompt``. Other keywords: ``EnrichArgs``."""
summarize_asset: _Summarize = _named("summarize")
"""A summary of the text in ``column`` of at most ``max_words`` words (default 50; a longer answer keeps its last
whole sentence, or ends in "…"); ``params`` as for ``prompt``. Other keywords: ``EnrichArgs``."""
translate_asset: _Translate = _named("translate")
"""The text in ``column`` translated into ``to`` (a language name); ``params`` as for ``prompt``. Other keywords:
``EnrichArgs``."""
sentiment_asset: _Text = _named("sentiment")
"""The sentiment (positive, negative, neutral, mixed) of the text in ``column``; ``params`` as for ``prompt``.
Other keywords: ``EnrichArgs``."""
mask_asset: _Mask = _named("mask")
"""The text in ``column`` with each of ``entities`` (default: person, email, phone number, address) masked;
``params`` as for ``prompt``. Other keywords: ``EnrichArgs``."""
fix_grammar_asset: _Text = _named("fix_grammar")
"""The text in ``column`` with its grammar and spelling corrected; ``params`` as for ``prompt``. Other keywords:
``EnrichArgs``."""
similarity_asset: _Similarity = _named("similarity")
"""The cosine similarity (-1 to 1) of the embeddings of the texts in ``left`` and ``right`` (provider_key
default ``embedder``). Other keywords: ``EnrichArgs``."""
transcribe_asset: _Transcribe = _named("transcribe")
"""The transcript of the audio bytes in ``column`` (default ``bytes``); ``language`` (ISO-639-1) and ``prompt``
(spelling of names) go to the model, the file name from ``filename_column``; a recording over ``max_bytes`` (the
API takes 25 MB) is not sent and says so in that row's error. Other keywords: ``EnrichArgs``."""
semantic_filter_asset: _SemanticFilter = _named("semantic_filter")
"""The rows whose ``column`` (or a template over columns) satisfies ``condition``, by a yes/no verdict per row
(``ai_assets.functions.semantic.filter``); ``drop``: False keeps every row with its verdict; rows without a verdict
stay with their error. ``cascade``: a (certified) cascade, cheap model first; ``params`` as for ``prompt``. Other
keywords: ``EnrichArgs``."""
