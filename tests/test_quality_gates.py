"""Quality gates on enrichment assets: a golden set checked before a partition is sent (blocking the step and
its downstream when the prompt is wrong), an LLM judge over a stated sample, and an embedding drift check."""

import json
import sys
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest
from dagster import AssetExecutionContext

from ai_assets import OpenAICompatibleProvider, RunOptions, prompt
from ai_assets.dagster import (
    OpenAICompatibleResource,
    ParquetIOManager,
    ResultCacheResource,
    SentenceTransformersResource,
    embed_asset,
    prompt_asset,
)
from ai_assets.dagster.gates import DriftCheck, GoldenSet, JudgeCheck
from ai_assets.runtime.errors import ConfigError
from ai_assets.testing import FakeOpenAIServer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from definitions import REVIEW_SYSTEM, REVIEW_TEMPLATE, ReviewInsight  # noqa: E402  (the demo's own prompt)

GOLDEN = [("Phone X", "The battery lasts two days, I love it."), ("Buds", "Sound is tinny and one bud died."),
          ("Laptop", "Great screen but the hinge creaks."), ("Watch", "Strap broke within a week."),
          ("Speaker", "Loud, clear and the battery is fine.")]


def reviews_table(n: int = 40) -> pa.Table:
    return pa.table({"product": [f"P{i % 4}" for i in range(n)], "review": [f"review number {i}" for i in range(n)]})


@dg.asset
def reviews() -> pa.Table:
    return reviews_table()


def golden_file(server: FakeOpenAIServer, folder: Path) -> Path:
    """A golden set recorded from the demo's prompt (the fake server answers deterministically from the prompt):
    the sentiment each golden review is expected to get."""
    table = pa.table({"product": [g[0] for g in GOLDEN], "review": [g[1] for g in GOLDEN]})
    llm = OpenAICompatibleProvider("fake-model", base_url=server.base_url, api_key="k")
    answers = prompt(table, REVIEW_TEMPLATE, provider=llm, system_message=REVIEW_SYSTEM,
                     return_format=ReviewInsight).table.column("response").to_pylist()
    path = folder / "golden.jsonl"
    path.write_text("".join(json.dumps({"product": p, "review": r, "expected": {"sentiment": a["sentiment"]}}) + "\n"
                            for (p, r), a in zip(GOLDEN, answers, strict=True)))
    return path


def resources(server: FakeOpenAIServer, tmp_path: Path) -> dict[str, object]:
    return {"llm": OpenAICompatibleResource(model="fake-model", base_url=server.base_url, api_key="k"),
            "io_manager": ParquetIOManager(root=str(tmp_path / "out")),
            "ai_cache": ResultCacheResource(path=str(tmp_path / "journal.sqlite"))}


def test_a_golden_set_passes_with_the_demo_prompt_and_a_wrong_prompt_blocks_before_paying(
        server: FakeOpenAIServer, tmp_path: Path) -> None:
    golden = GoldenSet(path=str(golden_file(server, tmp_path)), min_score=0.8)

    def pipeline(template: str) -> list[dg.AssetsDefinition]:
        insights = prompt_asset("insights", reviews, template=template, system_message=REVIEW_SYSTEM,
                                return_format=ReviewInsight, golden_set=golden,
                                options=RunOptions(on_error="null"))

        @dg.asset(deps=[insights])
        def downstream() -> None:
            return None

        return [reviews, insights, downstream]

    server.reset()
    good = dg.materialize(pipeline(REVIEW_TEMPLATE), resources=resources(server, tmp_path))
    assert good.success
    check = next(e for e in good.get_asset_check_evaluations() if e.check_name == "golden_set")
    assert check.passed and check.metadata["score"].value == 1.0 and check.metadata["golden_rows"].value == 5
    assert server.stats().chat_requests == len(GOLDEN) + 40  # the golden rows, then the partition
    server.reset()
    assert dg.materialize(pipeline(REVIEW_TEMPLATE), resources=resources(server, tmp_path)).success
    assert server.stats().chat_requests == 0  # unchanged prompt: the golden set and the rows from the journal

    server.reset()
    wrong = dg.materialize(pipeline("Summarize the weather: {product}"), resources=resources(server, tmp_path),
                           raise_on_error=False)
    assert not wrong.success
    check = next(e for e in wrong.get_asset_check_evaluations() if e.check_name == "golden_set")
    assert not check.passed and check.metadata["score"].value < 0.8
    assert server.stats().chat_requests == len(GOLDEN)  # only the golden rows were paid for, no partition row
    materialized = {m.asset_key.to_user_string() for m in wrong.get_asset_materialization_events()}
    assert "insights" not in materialized and "downstream" not in materialized
    with pytest.raises(ConfigError, match="no column 'label'"):
        GoldenSet(rows=pa.table({"review": ["x"]}), expected_column="label").table()


def test_a_judge_grades_a_sample_of_the_stated_size(server: FakeOpenAIServer, tmp_path: Path) -> None:
    judge = JudgeCheck("The summary must describe the review.", sample=10, min_score=0.0, model="judge-model")
    insights = prompt_asset("insights", reviews, template=REVIEW_TEMPLATE, return_format=ReviewInsight,
                            judge=judge)
    result = dg.materialize([reviews, insights], resources=resources(server, tmp_path))
    check = next(e for e in result.get_asset_check_evaluations() if e.check_name == "llm_judge")
    assert check.metadata["sample_size"].value == 10 and check.metadata["answers_seen"].value == 40
    assert check.metadata["judged"].value == 10 and 0.0 <= check.metadata["score"].value <= 1.0
    assert server.stats().models["judge-model"] == 10  # the judge saw exactly the sample
    with pytest.raises(ConfigError, match="sample >= 1"):
        JudgeCheck("x", sample=0)


TEXTS = {
    "ref": [f"The battery of this phone lasts {d} days and charges quickly." for d in range(2, 12)]
    + [f"Battery life is great, about {h} hours of video." for h in range(5, 15)],
    "same": [f"My phone's battery easily lasts {d} days on one charge." for d in range(2, 12)]
    + [f"Charging takes {m} minutes and the battery holds up well." for m in range(20, 30)],
    "shifted": [f"The stock market fell {d} percent after the central bank raised rates." for d in range(2, 12)]
    + [f"Bond yields rose to {y} percent as inflation worries grew." for y in range(3, 13)],
}
DAYS = dg.StaticPartitionsDefinition(list(TEXTS))


@dg.asset(partitions_def=DAYS)
def notes(context: AssetExecutionContext) -> pa.Table:
    return pa.table({"text": TEXTS[context.partition_key]})


def test_a_drift_check_flags_a_shifted_partition(tmp_path: Path) -> None:
    vectors = embed_asset("vectors", notes, column="text", partitions_def=DAYS, cache_key=None,
                          drift=DriftCheck("ref", max_distance=0.5))
    instance = dg.DagsterInstance.ephemeral()
    res = {"embedder": SentenceTransformersResource(device="cpu"),
           "io_manager": ParquetIOManager(root=str(tmp_path / "out"))}
    verdicts = {}
    for day in ("same", "ref", "same", "shifted"):  # "same" first: no reference yet
        result = dg.materialize([notes, vectors], partition_key=day, resources=res, instance=instance)
        check = next(e for e in result.get_asset_check_evaluations() if e.check_name == "embedding_drift")
        verdicts.setdefault(day, []).append(check)
    first_same, second_same = verdicts["same"]
    assert not first_same.passed and first_same.severity == dg.AssetCheckSeverity.WARN  # nothing to compare to
    assert verdicts["ref"][0].passed and verdicts["ref"][0].metadata["max_distance_seen"].value == 0.0
    assert second_same.passed and second_same.metadata["max_distance_seen"].value < 0.5
    shifted = verdicts["shifted"][0]
    assert not shifted.passed and shifted.metadata["max_distance_seen"].value > 0.5
