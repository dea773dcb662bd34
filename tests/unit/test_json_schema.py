"""Answer models from YAML (``return_format``): an inline JSON schema becomes a Pydantic model, an import path
names one; the plain layer below the components, tested without Dagster."""

from __future__ import annotations

from typing import get_args

import pyarrow as pa
import pytest

from ai_assets.functions.arrow_types import model_struct
from ai_assets.functions.json_schema import answer_model
from ai_assets.providers.wire_shapes import WireUsage


def test_inline_json_schemas_become_pydantic_models() -> None:
    model = answer_model({"type": "object", "properties": {
        "sentiment": {"enum": ["positive", "negative"]}, "aspects": {"type": "array", "items": {"type": "string"},
                                                                    "maxItems": 2},
        "detail": {"type": "object", "properties": {"stars": {"type": "integer"}}}},
        "required": ["sentiment", "aspects"]}, "review_insights")
    assert model is not None and model.__name__ == "ReviewInsights"
    assert model_struct(model) == pa.struct([("sentiment", pa.string()), ("aspects", pa.list_(pa.string())),
                                             ("detail", pa.struct([("stars", pa.int64())]))])
    assert get_args(model.model_fields["sentiment"].annotation) == ("positive", "negative")
    with pytest.raises(Exception, match="at most 2 items"):
        model(sentiment="positive", aspects=["a", "b", "c"])
    imported = answer_model("ai_assets.providers.wire_shapes:WireUsage", "x")
    assert imported is WireUsage  # 'module:Class' import paths resolve
    with pytest.raises(ValueError, match="not a Pydantic model"):
        answer_model("ai_assets.testing.faults:ServerStats", "x")
