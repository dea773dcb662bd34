"""Asset factories for the task functions (``ai_assets.functions.tasks``): extract, summarize, translate,
sentiment, mask, fix_grammar, similarity. Each is an enrichment asset like ``prompt_asset``: streamed, journalled,
with usage and cost per partition and an error-rate check."""

from collections.abc import Mapping, Sequence
from typing import Any, Unpack

import dagster as dg
import pyarrow as pa
from pydantic import BaseModel

from ai_assets.dagster.checks import error_rate_check
from ai_assets.dagster.common import AssetArgs, fingerprint, upstream_key
from ai_assets.dagster.enrich import Call, PriceOf, Upstream, _embedding_prices, _enrich_asset
from ai_assets.functions import tasks
from ai_assets.functions.prompt import PromptParams
from ai_assets.runtime.engine import RunOptions
from ai_assets.runtime.prices import prices_for
from ai_assets.runtime.results import EnrichedStream
from ai_assets.runtime.usage import Prices


def _versioned(value: Any) -> Any:
    if isinstance(value, type) and issubclass(value, BaseModel):
        return value.model_json_schema()
    return value.as_request() if isinstance(value, PromptParams) else value


def _task_asset(name: str, upstream: Upstream, function: Any, arguments: dict[str, Any], *, what: str,
                output_column: str | None, options: RunOptions | None, provider_key: str, cache_key: str | None,
                model: str | None, prices: Prices | None, max_error_rate: float, price_of: PriceOf | None,
                asset_args: AssetArgs) -> dg.AssetsDefinition:
    output = output_column or name
    version = fingerprint(kind=function.__name__, output=output, model=model,
                          **{k: _versioned(v) for k, v in arguments.items()})

    def run(data: pa.RecordBatchReader, call: Call) -> EnrichedStream:
        common = call.common(options)
        extra = {} if function is tasks.similarity else {"prices": prices}
        out = function(data, provider=call.provider, output_column=output, **arguments, **extra, **common)
        assert isinstance(out, EnrichedStream)
        return out

    description = (f"{what} in `{upstream_key(upstream).to_user_string()}` with "
                   f"{f'model `{model}` of ' if model else 'the model of '}resource `{provider_key}` into `{output}` "
                   f"(reasons for rows without a value in `{output}_error`).")
    return _enrich_asset(name, upstream, run, provider_key=provider_key, cache_key=cache_key, model=model,
                         price_of=price_of or (lambda provider: prices or prices_for(provider)), code_version=version,
                         checks=[error_rate_check(output, max_error_rate)], vector_column=None,
                         description=description, asset_args=asset_args)


def extract_asset(name: str, upstream: Upstream, *, column: str,
                  fields: Sequence[str] | Mapping[str, str] | type[BaseModel], output_column: str | None = None,
                  options: RunOptions | None = None, provider_key: str = "llm", cache_key: str | None = "ai_cache",
                  model: str | None = None, prices: Prices | None = None, max_error_rate: float = 0.05,
                  params: PromptParams | None = None,
                  **asset_args: Unpack[AssetArgs]) -> dg.AssetsDefinition:
    """Extracts ``fields`` (names, ``{name: description}`` or a Pydantic model) from ``column`` as a struct."""
    shown = fields.__name__ if isinstance(fields, type) else ", ".join(fields)
    return _task_asset(name, upstream, tasks.extract, {"column": column, "fields": fields, "params": params},
                       what=f"Extracts {shown} from `{column}`", output_column=output_column, options=options,
                       provider_key=provider_key, cache_key=cache_key, model=model, prices=prices,
                       max_error_rate=max_error_rate, price_of=None, asset_args=asset_args)


def summarize_asset(name: str, upstream: Upstream, *, column: str, max_words: int = 50,
                    output_column: str | None = None, options: RunOptions | None = None, provider_key: str = "llm",
                    cache_key: str | None = "ai_cache", model: str | None = None, prices: Prices | None = None,
                    max_error_rate: float = 0.05, params: PromptParams | None = None,
                    **asset_args: Unpack[AssetArgs]) -> dg.AssetsDefinition:
    """Summarizes ``column`` in at most ``max_words`` words."""
    return _task_asset(name, upstream, tasks.summarize, {"column": column, "max_words": max_words, "params": params},
                       what=f"Summarizes `{column}` in at most {max_words} words", output_column=output_column,
                       options=options, provider_key=provider_key, cache_key=cache_key, model=model, prices=prices,
                       max_error_rate=max_error_rate, price_of=None, asset_args=asset_args)


def translate_asset(name: str, upstream: Upstream, *, column: str, to: str, output_column: str | None = None,
                    options: RunOptions | None = None, provider_key: str = "llm", cache_key: str | None = "ai_cache",
                    model: str | None = None, prices: Prices | None = None, max_error_rate: float = 0.05,
                    params: PromptParams | None = None,
                    **asset_args: Unpack[AssetArgs]) -> dg.AssetsDefinition:
    """Translates ``column`` into the language ``to``."""
    return _task_asset(name, upstream, tasks.translate, {"column": column, "to": to, "params": params},
                       what=f"Translates `{column}` into {to}", output_column=output_column, options=options,
                       provider_key=provider_key, cache_key=cache_key, model=model, prices=prices,
                       max_error_rate=max_error_rate, price_of=None, asset_args=asset_args)


def sentiment_asset(name: str, upstream: Upstream, *, column: str, output_column: str | None = None,
                    options: RunOptions | None = None, provider_key: str = "llm", cache_key: str | None = "ai_cache",
                    model: str | None = None, prices: Prices | None = None, max_error_rate: float = 0.05,
                    params: PromptParams | None = None,
                    **asset_args: Unpack[AssetArgs]) -> dg.AssetsDefinition:
    """The sentiment of ``column``: positive, negative, neutral or mixed."""
    return _task_asset(name, upstream, tasks.analyze_sentiment, {"column": column, "params": params},
                       what=f"Gives the sentiment (positive, negative, neutral, mixed) of `{column}`",
                       output_column=output_column, options=options, provider_key=provider_key, cache_key=cache_key,
                       model=model, prices=prices, max_error_rate=max_error_rate, price_of=None,
                       asset_args=asset_args)


def mask_asset(name: str, upstream: Upstream, *, column: str, entities: Sequence[str] = tasks.DEFAULT_ENTITIES,
               output_column: str | None = None, options: RunOptions | None = None, provider_key: str = "llm",
               cache_key: str | None = "ai_cache", model: str | None = None, prices: Prices | None = None,
               max_error_rate: float = 0.05, params: PromptParams | None = None,
               **asset_args: Unpack[AssetArgs]) -> dg.AssetsDefinition:
    """``column`` with every entity of the given kinds replaced by ``[MASKED]``."""
    return _task_asset(name, upstream, tasks.mask, {"column": column, "entities": list(entities), "params": params},
                       what=f"Masks every {', '.join(entities)} of `{column}`", output_column=output_column,
                       options=options, provider_key=provider_key, cache_key=cache_key, model=model, prices=prices,
                       max_error_rate=max_error_rate, price_of=None, asset_args=asset_args)


def fix_grammar_asset(name: str, upstream: Upstream, *, column: str, output_column: str | None = None,
                      options: RunOptions | None = None, provider_key: str = "llm",
                      cache_key: str | None = "ai_cache", model: str | None = None, prices: Prices | None = None,
                      max_error_rate: float = 0.05, params: PromptParams | None = None,
                      **asset_args: Unpack[AssetArgs]) -> dg.AssetsDefinition:
    """``column`` with its grammar and spelling corrected."""
    return _task_asset(name, upstream, tasks.fix_grammar, {"column": column, "params": params},
                       what=f"Corrects the grammar and spelling of `{column}`", output_column=output_column,
                       options=options, provider_key=provider_key, cache_key=cache_key, model=model, prices=prices,
                       max_error_rate=max_error_rate, price_of=None, asset_args=asset_args)


def similarity_asset(name: str, upstream: Upstream, *, left: str, right: str, output_column: str | None = None,
                     options: RunOptions | None = None, provider_key: str = "embedder",
                     cache_key: str | None = "ai_cache", model: str | None = None, prices: Prices | None = None,
                     max_error_rate: float = 0.0, **asset_args: Unpack[AssetArgs]) -> dg.AssetsDefinition:
    """The cosine similarity of the embeddings of ``left`` and ``right`` (float32)."""
    return _task_asset(name, upstream, tasks.similarity, {"left": left, "right": right},
                       what=f"Scores the cosine similarity of the embeddings of `{left}` and `{right}`",
                       output_column=output_column, options=options, provider_key=provider_key, cache_key=cache_key,
                       model=model, prices=prices, max_error_rate=max_error_rate,
                       price_of=_embedding_prices(prices), asset_args=asset_args)
