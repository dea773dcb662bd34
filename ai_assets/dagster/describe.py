"""Default descriptions for enrichment assets, so an asset's page says what it does: model, template, schema,
labels."""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg
from pydantic import BaseModel

from ai_assets.functions.templates import ImageColumn, Part

MAX_SHOWN_CHARS = 2000
"""The longest template or system message an asset's description shows (the asset graph carries the description
to the webserver, the daemon and every run's snapshot); a longer one is cut there, saying how long it is."""


def _shown(text: str) -> str:
    if len(text) <= MAX_SHOWN_CHARS:
        return text
    return f"{text[:MAX_SHOWN_CHARS]}\n[... cut: {len(text):,} characters in all, the first {MAX_SHOWN_CHARS:,} shown]"


def _model(provider_key: str, model: str | None) -> str:
    return f"model `{model}` of resource `{provider_key}`" if model else f"the model of resource `{provider_key}`"


def _template(template: str | Sequence[Part]) -> str:
    if isinstance(template, str):
        return template
    return " ".join(f"<image from {p.column}>" if isinstance(p, ImageColumn) else str(p) for p in template)


def describe_prompt(upstream: dg.AssetKey, template: str | Sequence[Part], return_format: type[BaseModel] | None,
                    system_message: str | None, output_column: str, provider_key: str, model: str | None) -> str:
    lines = [f"Prompts {_model(provider_key, model)} once per row of `{upstream.to_user_string()}` with the "
             "template:", "", "```", _shown(_template(template)), "```"]
    if system_message:
        lines += ["", f"System message: {_shown(system_message)}"]
    if return_format is not None:
        fields = ", ".join(f"`{name}`" for name in return_format.model_fields)
        lines += ["", f"`{output_column}` is a struct from `{return_format.__name__}`: {fields}."]
    else:
        lines += ["", f"`{output_column}` is the answer's text."]
    lines.append(f"Failures and skipped rows are explained in `{output_column}_error`; answers are kept in the "
                 "journal, so a re-run pays only for new or failed rows.")
    return "\n".join(lines)


def describe_embed(upstream: dg.AssetKey, column: str, output_column: str, provider_key: str, model: str | None,
                   *, images: bool = False) -> str:
    what = "the images" if images else "the text"
    return (f"Embeds {what} in `{column}` of `{upstream.to_user_string()}` with {_model(provider_key, model)}: "
            f"`{output_column}` is `fixed_size_list<float32>[d]` (null with a reason in `{output_column}_error` "
            "where a row has no input or fails).")


def describe_classify(upstream: dg.AssetKey, column: str, labels: Sequence[str], output_column: str,
                      provider_key: str, model: str | None, method: str | None) -> str:
    how = {"llm": "by asking the LLM for one label and its confidence",
           "embedding": "by embedding similarity to each label's description",
           "image": "by image-embedding similarity to each label's prompt or example images"}.get(
        method or "", "by embedding similarity (embedders) or by asking the LLM (chat models)")
    return (f"Labels `{column}` of `{upstream.to_user_string()}` with one of {', '.join(map(repr, labels))}, {how}, "
            f"with {_model(provider_key, model)}. `{output_column}` is a `{{label, score}}` struct.")
