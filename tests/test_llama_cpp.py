"""The embedded SmolLM2 via xllamacpp: a real model, so assert shape and validity, not accuracy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pytest
from pydantic import BaseModel

from ai_assets import LlamaCppProvider, PromptParams, ResultCache, RunOptions, classify_text, prompt

pytestmark = pytest.mark.slow


class Extraction(BaseModel):
    sentiment: Literal["positive", "negative", "neutral"]
    aspects: list[str]


@pytest.fixture(scope="module")
def smollm() -> Iterator[LlamaCppProvider]:
    with LlamaCppProvider(parallel=2) as provider:
        yield provider


def test_structured_extraction_is_valid(smollm: LlamaCppProvider) -> None:
    table = pa.table({"text": ["Great camera, but the battery died fast.", "Arrived broken.", None]})
    out = prompt(table, "Review: {text}", provider=smollm, return_format=Extraction,
                 system_message="Extract the sentiment and the product aspects mentioned.",
                 params=PromptParams(max_output_tokens=80, temperature=0.0), options=RunOptions(concurrency=2))
    values = out.table.column("response").to_pylist()
    for value in values[:2]:  # grammar-constrained decoding: every answer parses and validates
        parsed = Extraction.model_validate(value)
        assert parsed.sentiment in ("positive", "negative", "neutral")
        assert all(isinstance(aspect, str) for aspect in parsed.aspects)
    assert out.table.column("response_error").to_pylist()[:2] == [None, None]
    assert values[2] is None
    assert out.usage.prompt_tokens > 0 and out.usage.completion_tokens > 0


def test_plain_prompt_and_llm_classification(smollm: LlamaCppProvider) -> None:
    table = pa.table({"text": ["I love it"]})
    plain = prompt(table, "{text}", provider=smollm, params=PromptParams(max_output_tokens=16))
    assert isinstance(plain.table.column("response")[0].as_py(), str)
    labelled = classify_text(table, "text", ["positive", "negative"], provider=smollm)
    value = labelled.table.column("classification")[0].as_py()
    assert value["label"] in {"positive", "negative"} and 0 <= value["score"] <= 1


def test_answers_survive_a_restart_on_another_port(smollm: LlamaCppProvider, tmp_path: Path) -> None:
    """The journal keys hold the weights, not where they were served: a restarted server (a new ephemeral port)
    finds every answer of the first one."""
    cache = ResultCache(tmp_path / "journal.sqlite")
    table = pa.table({"text": ["Loud but comfortable.", "Battery died."]})
    params = PromptParams(max_output_tokens=12, temperature=0.0)
    first = prompt(table, "{text}", provider=smollm, params=params, cache=cache)
    port = smollm.base_url
    smollm.stop()
    smollm.start()
    assert smollm.base_url != port
    again = prompt(table, "{text}", provider=smollm, params=params, cache=cache)
    assert first.usage.requests == 2
    assert again.usage.requests == 0 and again.usage.cache_hits == 2
    assert again.table.equals(first.table)


def test_llama_cpp_serves_chat_only(smollm: LlamaCppProvider) -> None:
    from ai_assets import NotSupportedError, embed_text
    from ai_assets.providers.protocols import RemoteTextEmbedder

    assert not isinstance(smollm, RemoteTextEmbedder)
    with pytest.raises(NotSupportedError, match="embed_text is not supported by provider LlamaCppProvider"):
        embed_text(pa.table({"text": ["x"]}), "text", provider=smollm)  # type: ignore[arg-type]
