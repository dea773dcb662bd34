"""Asset factories for the task functions (``ai_assets.functions.tasks``): extract, summarize, translate,
sentiment, mask, fix_grammar, transcribe, similarity. Each is an enrichment asset like ``prompt_asset``: streamed,
journalled, with usage and cost per partition and an error-rate check. ``task_asset`` builds any task of the registry
(``tasks.TASKS``) by name; the named factories are its typed views."""

from collections.abc import Mapping, Sequence
from typing import Any, Unpack

import dagster as dg
import pyarrow as pa
from pydantic import BaseModel

from ai_assets.dagster.call import Call, Upstream
from ai_assets.dagster.checks import error_rate_check
from ai_assets.dagster.common import AssetArgs, fingerprint, upstream_key
from ai_assets.dagster.enrich import _embedding_prices, _enrich_asset
from ai_assets.functions import tasks
from ai_assets.functions.audio import MAX_AUDIO_BYTES
from ai_assets.functions.prompt import PromptParams
from ai_assets.runtime.engine import RunOptions
from ai_assets.runtime.errors import ConfigError
from ai_assets.runtime.prices import prices_for
from ai_assets.runtime.results import EnrichedStream
from ai_assets.runtime.usage import Prices


def _versioned(value: Any) -> Any:
    if isinstance(value, type) and issubclass(value, BaseModel):
        return value.model_json_schema()
    return value.as_request() if isinstance(value, PromptParams) else value


def task_asset(name: str, upstream: Upstream, task: str, arguments: Mapping[str, Any], *,
               output_column: str | None = None, options: RunOptions | None = None, provider_key: str | None = None,
               cache_key: str | None = "ai_cache", model: str | None = None, prices: Prices | None = None,
               max_error_rate: float | None = None, **asset_args: Unpack[AssetArgs]) -> dg.AssetsDefinition:
    """An asset running the task function ``task`` (a name in ``ai_assets.functions.tasks.TASKS``) with
    ``arguments`` (its input columns and settings, e.g. ``{"column": "text", "to": "French"}``) over the upstream
    rows. ``provider_key`` defaults to ``llm`` for prompting tasks and ``embedder`` for similarity."""
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
    output = output_column or name
    provider_key = provider_key or ("llm" if entry.prompts else "embedder")
    version = fingerprint(kind=entry.function.__name__, output=output, model=model,
                          **{k: _versioned(v) for k, v in arguments.items()})

    def run(data: pa.RecordBatchReader, call: Call) -> EnrichedStream:
        out = entry.function(data, provider=call.provider, output_column=output, prices=prices, **given,
                             **call.common(options))
        assert isinstance(out, EnrichedStream)
        return out

    description = (f"{entry.what(given)} in `{upstream_key(upstream).to_user_string()}` with "
                   f"{f'model `{model}` of ' if model else 'the model of '}resource `{provider_key}` into `{output}` "
                   f"(reasons for rows without a value in `{output}_error`).")
    price_of = (lambda provider: prices or prices_for(provider)) if entry.prompts else _embedding_prices(prices)
    limit = max_error_rate if max_error_rate is not None else (0.05 if entry.prompts else 0.0)
    return _enrich_asset(name, upstream, run, provider_key=provider_key, cache_key=cache_key, model=model,
                         price_of=price_of, code_version=version, checks=[error_rate_check(output, limit)],
                         vector_column=None, description=description, asset_args=asset_args, model_role=entry.role)


def extract_asset(name: str, upstream: Upstream, *, column: str,
                  fields: Sequence[str] | Mapping[str, str] | type[BaseModel], output_column: str | None = None,
                  options: RunOptions | None = None, provider_key: str = "llm", cache_key: str | None = "ai_cache",
                  model: str | None = None, prices: Prices | None = None, max_error_rate: float = 0.05,
                  params: PromptParams | None = None,
                  **asset_args: Unpack[AssetArgs]) -> dg.AssetsDefinition:
    """Extracts ``fields`` (names, ``{name: description}`` or a Pydantic model) from ``column`` as a struct."""
    return task_asset(name, upstream, "extract", {"column": column, "fields": fields, "params": params},
                      output_column=output_column, options=options, provider_key=provider_key, cache_key=cache_key,
                      model=model, prices=prices, max_error_rate=max_error_rate, **asset_args)


def summarize_asset(name: str, upstream: Upstream, *, column: str, max_words: int = 50,
                    output_column: str | None = None, options: RunOptions | None = None, provider_key: str = "llm",
                    cache_key: str | None = "ai_cache", model: str | None = None, prices: Prices | None = None,
                    max_error_rate: float = 0.05, params: PromptParams | None = None,
                    **asset_args: Unpack[AssetArgs]) -> dg.AssetsDefinition:
    """Summarizes ``column`` in at most ``max_words`` words."""
    return task_asset(name, upstream, "summarize", {"column": column, "max_words": max_words, "params": params},
                      output_column=output_column, options=options, provider_key=provider_key, cache_key=cache_key,
                      model=model, prices=prices, max_error_rate=max_error_rate, **asset_args)


def translate_asset(name: str, upstream: Upstream, *, column: str, to: str, output_column: str | None = None,
                    options: RunOptions | None = None, provider_key: str = "llm", cache_key: str | None = "ai_cache",
                    model: str | None = None, prices: Prices | None = None, max_error_rate: float = 0.05,
                    params: PromptParams | None = None,
                    **asset_args: Unpack[AssetArgs]) -> dg.AssetsDefinition:
    """Translates ``column`` into the language ``to``."""
    return task_asset(name, upstream, "translate", {"column": column, "to": to, "params": params},
                      output_column=output_column, options=options, provider_key=provider_key, cache_key=cache_key,
                      model=model, prices=prices, max_error_rate=max_error_rate, **asset_args)


def sentiment_asset(name: str, upstream: Upstream, *, column: str, output_column: str | None = None,
                    options: RunOptions | None = None, provider_key: str = "llm", cache_key: str | None = "ai_cache",
                    model: str | None = None, prices: Prices | None = None, max_error_rate: float = 0.05,
                    params: PromptParams | None = None,
                    **asset_args: Unpack[AssetArgs]) -> dg.AssetsDefinition:
    """The sentiment of ``column``: positive, negative, neutral or mixed."""
    return task_asset(name, upstream, "sentiment", {"column": column, "params": params},
                      output_column=output_column, options=options, provider_key=provider_key, cache_key=cache_key,
                      model=model, prices=prices, max_error_rate=max_error_rate, **asset_args)


def mask_asset(name: str, upstream: Upstream, *, column: str, entities: Sequence[str] = tasks.DEFAULT_ENTITIES,
               output_column: str | None = None, options: RunOptions | None = None, provider_key: str = "llm",
               cache_key: str | None = "ai_cache", model: str | None = None, prices: Prices | None = None,
               max_error_rate: float = 0.05, params: PromptParams | None = None,
               **asset_args: Unpack[AssetArgs]) -> dg.AssetsDefinition:
    """``column`` with every entity of the given kinds replaced by ``[MASKED]``."""
    return task_asset(name, upstream, "mask", {"column": column, "entities": list(entities), "params": params},
                      output_column=output_column, options=options, provider_key=provider_key, cache_key=cache_key,
                      model=model, prices=prices, max_error_rate=max_error_rate, **asset_args)


def fix_grammar_asset(name: str, upstream: Upstream, *, column: str, output_column: str | None = None,
                      options: RunOptions | None = None, provider_key: str = "llm",
                      cache_key: str | None = "ai_cache", model: str | None = None, prices: Prices | None = None,
                      max_error_rate: float = 0.05, params: PromptParams | None = None,
                      **asset_args: Unpack[AssetArgs]) -> dg.AssetsDefinition:
    """``column`` with its grammar and spelling corrected."""
    return task_asset(name, upstream, "fix_grammar", {"column": column, "params": params},
                      output_column=output_column, options=options, provider_key=provider_key, cache_key=cache_key,
                      model=model, prices=prices, max_error_rate=max_error_rate, **asset_args)


def similarity_asset(name: str, upstream: Upstream, *, left: str, right: str, output_column: str | None = None,
                     options: RunOptions | None = None, provider_key: str = "embedder",
                     cache_key: str | None = "ai_cache", model: str | None = None, prices: Prices | None = None,
                     max_error_rate: float = 0.0, **asset_args: Unpack[AssetArgs]) -> dg.AssetsDefinition:
    """The cosine similarity of the embeddings of ``left`` and ``right`` (float32)."""
    return task_asset(name, upstream, "similarity", {"left": left, "right": right}, output_column=output_column,
                      options=options, provider_key=provider_key, cache_key=cache_key, model=model, prices=prices,
                      max_error_rate=max_error_rate, **asset_args)


def transcribe_asset(name: str, upstream: Upstream, *, column: str = "bytes", language: str | None = None,
                     prompt: str | None = None, filename_column: str | None = "path",
                     max_bytes: int = MAX_AUDIO_BYTES, output_column: str | None = None,
                     options: RunOptions | None = None, provider_key: str = "llm", cache_key: str | None = "ai_cache",
                     model: str | None = None, prices: Prices | None = None, max_error_rate: float = 0.05,
                     **asset_args: Unpack[AssetArgs]) -> dg.AssetsDefinition:
    """The transcripts of the audio files in ``column`` (e.g. ``ingest_asset(..., format="files")``), from the
    resource's ``/audio/transcriptions`` (``transcription_model``, or ``model``)."""
    return task_asset(name, upstream, "transcribe", {"column": column, "language": language, "prompt": prompt,
                                                     "filename_column": filename_column, "max_bytes": max_bytes},
                      output_column=output_column, options=options, provider_key=provider_key, cache_key=cache_key,
                      model=model, prices=prices, max_error_rate=max_error_rate, **asset_args)
