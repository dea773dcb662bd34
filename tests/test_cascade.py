"""Model cascades against the fake server: the cheap model answers 80 % of rows validly (the fake breaks the schema
for the other 20 % when the cheap model is asked), the strong model is sent exactly the rest."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from pydantic import BaseModel

from ai_assets import Cascade, OpenAICompatibleProvider, Prices, RetryPolicy, RunOptions, prompt
from ai_assets.runtime.cache.sqlite import ResultCache
from ai_assets.runtime.errors import ConfigError
from ai_assets.testing import FakeOpenAIServer, Fault

ROWS, HARD = 1000, 200
PRICES = {"cheap": Prices(0.1, 0.4), "strong": Prices(2.0, 8.0)}


class Verdict(BaseModel):
    label: str
    score: int


def rows() -> pa.Table:
    texts = [f"review {i} [hard]" if i % 5 == 0 else f"review {i}" for i in range(ROWS)]
    return pa.table({"id": list(range(ROWS)), "text": texts})


def test_the_strong_model_gets_exactly_the_rows_the_cheap_one_failed(server: FakeOpenAIServer,
                                                                      tmp_path: Path) -> None:
    server.set_faults(Fault("schema_violation", match="[hard]", model="cheap", attempts=None))
    llm = OpenAICompatibleProvider("unused", base_url=server.base_url, api_key="k")
    journal = ResultCache(tmp_path / "journal.sqlite")
    cascade = Cascade(["cheap", "strong"], prices=PRICES)
    options = RunOptions(retry=RetryPolicy(max_attempts=2, base_wait=0.01), on_error="null")
    out = prompt(rows(), "Judge: {text}", provider=llm, return_format=Verdict, cascade=cascade, cache=journal,
                 options=options)
    table = out.table
    answered_by = table.column("response_model").to_pylist()
    hard = [i for i in range(ROWS) if i % 5 == 0]
    assert [i for i, m in enumerate(answered_by) if m == "strong"] == hard
    assert answered_by.count("cheap") == ROWS - HARD
    assert table.column("response_error").null_count == ROWS  # every row answered, by one model or the other
    assert table.column("id").to_pylist() == list(range(ROWS))  # input order kept
    stats = server.stats()
    assert stats.models["strong"] == HARD  # exactly the escalated rows, once each
    assert stats.models["cheap"] == ROWS + HARD  # 2 attempts (a re-ask) for each row it got wrong
    usage = out.usage
    assert set(usage.models) == {"cheap", "strong"} and usage.models["strong"].sent_rows == HARD
    assert usage.prompt_tokens == stats.prompt_tokens and usage.answered == ROWS and usage.errors == 0
    cost = usage.models["cheap"].cost(PRICES["cheap"]) + usage.models["strong"].cost(PRICES["strong"])
    assert usage.cost(None) == pytest.approx(cost) and cost > 0

    server.reset()  # a re-run: both models' answers come from the journal
    again = prompt(rows(), "Judge: {text}", provider=llm, return_format=Verdict, cascade=cascade, cache=journal,
                   options=options)
    assert server.stats().chat_requests == 0
    assert again.table.equals(table) and again.usage.cost(None) == 0.0


def test_an_unsure_answer_escalates_and_a_stream_stays_a_stream(server: FakeOpenAIServer) -> None:
    """``escalate_when`` on a valid answer; a stream in gives a stream out, window by window."""
    llm = OpenAICompatibleProvider("unused", base_url=server.base_url, api_key="k")
    table = pa.table({"text": [f"t{i}" for i in range(60)] + [None]})
    cascade = Cascade(["a", "b", "c"], escalate_when=lambda v: v["score"] % 2 == 1)
    stream = prompt(pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=16)),
                    "{text}", provider=llm, return_format=Verdict, cascade=cascade,
                    options=RunOptions(window_rows=16))
    out = stream.read_all()
    models, scores = out.column("response_model").to_pylist(), [r and r["score"] for r in
                                                                   out.column("response").to_pylist()]
    assert models[-1] is None and scores[-1] is None  # a null input is skipped, by no model
    # The fake's score hashes the prompt, not the model: an odd score stays odd, so it escalates to the last model.
    odd = [i for i, s in enumerate(scores[:-1]) if s % 2 == 1]
    assert 0 < len(odd) < 60
    assert [m for m in models[:-1]] == ["c" if i in odd else "a" for i in range(60)]
    stats = server.stats()
    assert (stats.models["a"], stats.models["b"], stats.models["c"]) == (60, len(odd), len(odd))
    assert stream.usage.rows == 61 and stream.usage.skipped == 1
    assert sum(u.sent_rows for u in stream.usage.models.values()) == sum(stats.models.values())


def test_a_cascade_is_checked_when_built() -> None:
    for models in (["one"], ["a", "a"], ["a", ""]):
        with pytest.raises(ConfigError, match="two or more distinct"):
            Cascade(models)
    with pytest.raises(ConfigError, match="model= or cascade="):
        prompt(pa.table({"t": ["x"]}), "{t}", provider=OpenAICompatibleProvider("m", api_key="k"), model="m",
               cascade=Cascade(["a", "b"]))


def test_a_cascading_asset_says_which_model_answered_and_what_each_cost(server: FakeOpenAIServer,
                                                                         tmp_path: Path) -> None:
    import dagster as dg

    from ai_assets.dagster import OpenAICompatibleResource, ParquetIOManager, ResultCacheResource, prompt_asset

    server.set_faults(Fault("schema_violation", match="[hard]", model="cheap", attempts=None))

    @dg.asset
    def reviews() -> pa.Table:
        return rows().slice(0, 50)

    verdicts = prompt_asset("verdicts", reviews, template="Judge: {text}", return_format=Verdict,
                            cascade=Cascade(["cheap", "strong"], prices=PRICES),
                            options=RunOptions(retry=RetryPolicy(max_attempts=1), on_error="null"))
    result = dg.materialize([reviews, verdicts], resources={
        "llm": OpenAICompatibleResource(model="unused", base_url=server.base_url, api_key="k"),
        "io_manager": ParquetIOManager(root=str(tmp_path / "out")),
        "ai_cache": ResultCacheResource(path=str(tmp_path / "journal.sqlite"))}, raise_on_error=False)
    assert result.success
    stored = ParquetIOManager(root=str(tmp_path / "out")).store(dg.AssetKey("verdicts"), {}).read()
    assert stored.column("verdicts_model").to_pylist() == ["strong" if i % 5 == 0 else "cheap" for i in range(50)]
    metadata = result.asset_materializations_for_node("verdicts")[0].metadata
    models = metadata["ai/models"].value
    assert models["strong"]["rows_sent"] == 10 and models["cheap"]["rows_sent"] == 50
    assert metadata["ai/estimated_cost_usd"].value == pytest.approx(
        models["cheap"]["cost_usd"] + models["strong"]["cost_usd"], abs=1e-6)
    assert all(check.passed for check in result.get_asset_check_evaluations())


def test_a_yaml_prompt_component_takes_a_cascade(server: FakeOpenAIServer, tmp_path: Path) -> None:
    import dagster as dg

    from ai_assets.dagster import OpenAICompatibleResource, ParquetIOManager
    from ai_assets.dagster.components import PromptComponent

    server.set_faults(Fault("400", match="[hard]", model="cheap", attempts=None))

    @dg.asset
    def reviews() -> pa.Table:
        return rows().slice(0, 20)

    component = PromptComponent.model_validate({
        "name": "verdicts", "upstream": "reviews", "template": "Judge: {text}", "cache_key": None,
        "options": {"on_error": "null"},
        "cascade": {"models": ["cheap", "strong"], "prices": {"strong": {"input_per_million": 2.0}}}})
    result = dg.materialize([reviews, component.asset()], resources={
        "llm": OpenAICompatibleResource(model="unused", base_url=server.base_url, api_key="k"),
        "io_manager": ParquetIOManager(root=str(tmp_path / "out"))})
    stored = ParquetIOManager(root=str(tmp_path / "out")).store(dg.AssetKey("verdicts"), {}).read()
    assert stored.column("verdicts_model").to_pylist() == ["strong" if i % 5 == 0 else "cheap" for i in range(20)]
    assert server.stats().models == {"cheap": 20, "strong": 4}
    models = result.asset_materializations_for_node("verdicts")[0].metadata["ai/models"].value
    assert models["strong"]["cost_usd"] > 0 and models["cheap"]["cost_usd"] == 0  # unpriced fake model: free
    with pytest.raises(Exception, match="at least 2"):
        PromptComponent.model_validate({"name": "v", "upstream": "reviews", "template": "{text}",
                                        "cascade": {"models": ["one"]}})
