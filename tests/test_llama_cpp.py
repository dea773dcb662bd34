"""The embedded SmolLM2 via xllamacpp: a real model, so assert shape and validity, not accuracy."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import pyarrow as pa
import pytest
from pydantic import BaseModel

from ai_assets import LlamaCppProvider, PromptParams, RunOptions, classify_text, prompt

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
    assert all(Extraction.model_validate(v) for v in values[:2])
    assert values[2] is None
    assert out.usage.prompt_tokens > 0 and out.usage.completion_tokens > 0


def test_plain_prompt_and_llm_classification(smollm: LlamaCppProvider) -> None:
    table = pa.table({"text": ["I love it"]})
    plain = prompt(table, "{text}", provider=smollm, params=PromptParams(max_output_tokens=16))
    assert isinstance(plain.table.column("response")[0].as_py(), str)
    labelled = classify_text(table, "text", ["positive", "negative"], provider=smollm)
    value = labelled.table.column("classification")[0].as_py()
    assert value["label"] in {"positive", "negative"} and 0 <= value["score"] <= 1


def test_identity_ignores_the_ephemeral_port(smollm: LlamaCppProvider) -> None:
    assert "127.0.0.1" not in str(smollm.identity())
