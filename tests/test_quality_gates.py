"""Quality gates on enrichment assets: a golden set checked before a partition is sent (blocking the step and
its downstream when the prompt is wrong), an LLM judge over a stated sample, and an embedding drift check."""

import base64
import json
import sys
from pathlib import Path
from typing import Annotated, Literal

import dagster as dg
import numpy as np
import pyarrow as pa
import pytest
from dagster import AssetExecutionContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field, StringConstraints

from ai_assets import OpenAICompatibleProvider, RetryPolicy, RunOptions, prompt
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
from ai_assets.runtime.quality import VectorStats, matches
from ai_assets.testing import FakeOpenAIServer, Fault

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.hostile import Answer, hostile_server  # noqa: E402

REVIEW_TEMPLATE = "Product: {product}\nReview: {review}"
REVIEW_SYSTEM = "Extract the sentiment, the aspects mentioned and a short summary of the product review."


class ReviewInsight(BaseModel):
    """A review schema with a choice, a list and free text, for golden lines that name different fields (the
    demo's own extraction, definitions.py, now asks its small model for aspects only)."""

    sentiment: Literal["positive", "negative", "mixed"] = Field(description="overall sentiment of the review")
    aspects: list[Annotated[str, StringConstraints(max_length=24)]] = Field(max_length=3)
    summary: str = Field(max_length=80, description="the review in at most ten words")

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
        GoldenSet(rows=pa.table({"review": ["x"]}), expected_column="label").golden()


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


# --- Golden sets: each line constrains only what it names; a bad file is an error naming the file and line ----------


def recorded_answers(server: FakeOpenAIServer) -> list[dict[str, object]]:
    table = pa.table({"product": [g[0] for g in GOLDEN], "review": [g[1] for g in GOLDEN]})
    llm = OpenAICompatibleProvider("fake-model", base_url=server.base_url, api_key="k")
    answers: list[dict[str, object]] = prompt(table, REVIEW_TEMPLATE, provider=llm, system_message=REVIEW_SYSTEM,
                                              return_format=ReviewInsight).table.column("response").to_pylist()
    return answers


def golden_pipeline(golden: GoldenSet) -> list[dg.AssetsDefinition]:
    insights = prompt_asset("insights", reviews, template=REVIEW_TEMPLATE, system_message=REVIEW_SYSTEM,
                            return_format=ReviewInsight, golden_set=golden, options=RunOptions(on_error="null"))
    return [reviews, insights]


def test_golden_lines_that_name_different_fields_score_only_the_fields_they_name(
        server: FakeOpenAIServer, tmp_path: Path) -> None:
    """JSON Lines (jsonlines.org): each line is its own JSON value, so one line's ``expected`` may name
    ``sentiment`` and the next only ``summary``. A field a line does not name is not expected to be null; reading
    the file as one Arrow table (a struct of every field, absent ones null) made exact answers score 0.5."""
    answers = recorded_answers(server)
    path = tmp_path / "golden.jsonl"
    lines = []
    for i, ((product, review), answer) in enumerate(zip(GOLDEN, answers, strict=True)):
        expected = {"sentiment": answer["sentiment"]} if i % 2 else {"summary": answer["summary"]}
        lines.append(json.dumps({"product": product, "review": review, "expected": expected}))
    path.write_text("\n".join(lines) + "\n")
    result = dg.materialize(golden_pipeline(GoldenSet(path=str(path), min_score=1.0)),
                            resources=resources(server, tmp_path))
    assert result.success
    check = next(e for e in result.get_asset_check_evaluations() if e.check_name == "golden_set")
    assert check.passed and check.metadata["score"].value == 1.0


def test_a_golden_line_without_expected_is_an_error_naming_the_file_and_line(
        server: FakeOpenAIServer, tmp_path: Path) -> None:
    """A golden row with nothing expected cannot be scored: before, its expectation read as null, so a row that
    failed (a null answer) counted as a hit."""
    path = tmp_path / "golden.jsonl"
    path.write_text(json.dumps({"product": "A", "review": "fine", "expected": "x"}) + "\n"
                    + json.dumps({"product": "B", "review": "broken"}) + "\n")
    server.set_faults(Fault("400", match="broken"))
    result = dg.materialize(golden_pipeline(GoldenSet(path=str(path), min_score=0.5)),
                            resources=resources(server, tmp_path), raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    message = str(failure.step_failure_data.error)
    assert "golden.jsonl" in message and "line 2" in message and "'expected'" in message
    materialized = {m.asset_key.to_user_string() for m in result.get_asset_materialization_events()}
    assert "insights" not in materialized
    with pytest.raises(ConfigError, match=r"rows: row 2: no .expected. value"):
        GoldenSet(rows=pa.table({"review": ["x", "y"], "expected": ["a", None]})).golden()


def test_a_malformed_golden_file_is_an_error_naming_the_file_and_line(tmp_path: Path) -> None:
    """RFC 8259 JSON: a line that is not JSON, is not an object, or holds NaN (not JSON) is named by its line
    number; before, pyarrow's reader raised ``ArrowInvalid`` naming no file."""
    path = tmp_path / "golden.jsonl"
    good = json.dumps({"review": "ok", "expected": "positive"})
    cases = {"{not json": "line 3: not JSON", "[1, 2]": "line 3: not a JSON object",
             '{"review": "x", "expected": NaN}': "line 3: not JSON", "": None}
    for bad, message in cases.items():
        path.write_text(f"{good}\n\n{bad}\n{good}\n")
        if message is None:  # blank lines are skipped (JSON Lines readers do the same)
            assert len(GoldenSet(path=str(path)).golden()) == 2
            continue
        with pytest.raises(ConfigError, match=f"golden set {path}: {message}"):
            GoldenSet(path=str(path)).golden()
    path.write_text(good + "\n" + json.dumps({"review": "x" * 2_000_000, "expected": "y"}) + "\n")
    with pytest.raises(ConfigError, match="line 2: longer than"):
        GoldenSet(path=str(path)).golden()
    path.write_text((good + "\n") * 3)
    with pytest.raises(ConfigError, match="more than 2 rows"):
        GoldenSet(path=str(path), max_rows=2).golden()
    path.write_bytes(b"\xff\xfe" + good.encode())
    with pytest.raises(ConfigError, match="line 1: not UTF-8"):
        GoldenSet(path=str(path)).golden()
    broken = tmp_path / "golden.parquet"
    broken.write_bytes(b"PAR1 not really")
    with pytest.raises(ConfigError, match=f"golden set {broken}: cannot read"):
        GoldenSet(path=str(broken)).golden()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300))
def test_any_golden_bytes_give_rows_or_a_config_error_naming_the_file(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "fuzz.jsonl"
    path.write_bytes(data)
    try:
        rows = GoldenSet(path=str(path)).golden()
    except ConfigError as error:
        assert str(path) in str(error)
    else:
        assert all(row.expected is not None and isinstance(row.inputs, dict) for row in rows)


def test_matching_only_names_fields_and_a_failed_answer_never_matches() -> None:
    assert matches({"a": 1, "b": 2}, {"a": 1})
    assert not matches(None, "x") and not matches(None, {"a": 1})
    assert not matches({"a": float("nan")}, {"a": float("nan")})


# --- Drift: a non-finite vector is left out and counted; a partition with no usable vector does not pass --------------


def vector_body(*vectors: list[float]) -> bytes:
    data = [{"object": "embedding", "index": i, "embedding": base64.b64encode(np.asarray(v, np.float32).tobytes())
             .decode()} for i, v in enumerate(vectors)]
    return json.dumps({"object": "list", "data": data, "model": "m",
                       "usage": {"prompt_tokens": 1, "total_tokens": 1}}).encode()


DRIFT_DAYS = dg.StaticPartitionsDefinition(["ref", "far", "empty", "down"])
DRIFT_TEXTS = {"ref": [f"near {i}" for i in range(6)],
               "far": [f"far {i} [far]" for i in range(4)] + ["odd [nan]", "huge [inf]"],
               "empty": [], "down": [f"down {i} [down]" for i in range(4)]}


@dg.asset(partitions_def=DRIFT_DAYS)
def drift_notes(context: AssetExecutionContext) -> pa.Table:
    return pa.table({"text": pa.array(DRIFT_TEXTS[context.partition_key], pa.string())})


def test_a_non_finite_vector_or_no_usable_vector_does_not_blind_the_drift_check(tmp_path: Path) -> None:
    """A served embedding can hold NaN (base64 floats carry any IEEE-754 value; fp16 overflow in a self-hosted
    embedding server gives NaN vectors): one of them made the partition's centroid NaN, dropped it, and the check
    passed at distance 0.0 for a partition whose every other vector is orthogonal to the reference (distance 1.0).
    A partition without a usable vector (no rows, every row failed) passed the same way."""
    drift = DriftCheck("ref", max_distance=0.3)
    vectors = embed_asset("vectors", drift_notes, column="text", partitions_def=DRIFT_DAYS, cache_key=None,
                          max_error_rate=1.0, drift=drift,
                          options=RunOptions(batch_size=1, on_error="null",
                                             retry=RetryPolicy(max_attempts=1)))
    instance = dg.DagsterInstance.ephemeral()
    with hostile_server() as hostile:
        hostile.reset(**{"[far]": Answer(vector_body([1.0, -1.0, 1.0, -1.0])),
                         "[nan]": Answer(vector_body([float("nan"), 1.0, 1.0, 1.0])),
                         "[inf]": Answer(vector_body([float("inf"), 1.0, 1.0, 1.0])),
                         "[down]": Answer(b'{"error": {"message": "down"}}', status=500)})
        res = {"embedder": OpenAICompatibleResource(model="m", base_url=hostile.base_url, api_key="k"),
               "io_manager": ParquetIOManager(root=str(tmp_path / "out"))}
        checks = {}
        for day in ("ref", "far", "empty", "down"):
            result = dg.materialize([drift_notes, vectors], partition_key=day, resources=res, instance=instance,
                                    selection=[drift_notes, vectors], raise_on_error=True)
            checks[day] = next(e for e in result.get_asset_check_evaluations() if e.check_name == "embedding_drift")
    assert checks["ref"].passed
    far = checks["far"]
    assert not far.passed and far.metadata["max_distance_seen"].value == pytest.approx(1.0)
    assert far.metadata["non_finite_vectors"].value == 2 and far.metadata["vectors_used"].value == 4
    for day in ("empty", "down"):
        verdict = checks[day]
        assert not verdict.passed, day
        assert verdict.metadata["vectors_used"].value == 0 and "no usable vector" in verdict.metadata["reason"].value


def test_vector_stats_leave_non_finite_vectors_out_of_the_centroid() -> None:
    column = pa.FixedSizeListArray.from_arrays(pa.array([1, 0, float("inf"), 0, 0, 1], pa.float32()), 2)
    stats = VectorStats()
    stats.update(column)
    assert stats.non_finite_vectors == 1 and stats.usable_vectors == 2 and not stats.passed
    assert stats.centroid() == pytest.approx([2 ** -0.5, 2 ** -0.5])
