"""Estimates before running, and cost metadata per partition, through the dagster CLI and the estimate CLI."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from ai_assets.testing import FakeOpenAIServer

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
DAGSTER = str(Path(sys.executable).with_name("dagster"))
WORDS = ["battery", "screen", "hinge", "speaker", "price", "delivery", "camera", "keyboard", "fan", "case"]


def write_reviews(folder: Path) -> None:
    rng = random.Random(3)
    folder.mkdir(parents=True)
    for day in ("d1", "d2", "d3"):
        with (folder / f"{day}.jsonl").open("w") as handle:
            for i in range(120):
                words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(12, 40)))
                handle.write(json.dumps({"id": i, "text": f"{day} review {i}: the {words} were fine."}) + "\n")


def environment(tmp_path: Path, server: FakeOpenAIServer) -> dict[str, str]:
    home = tmp_path / "home"
    if not home.exists():
        home.mkdir()
        shutil.copy(ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    return {**os.environ, "DAGSTER_HOME": str(home), "AI_ASSETS_OUT": str(tmp_path / "out"),
            "COST_SOURCE": str(tmp_path / "src"), "OPENAI_BASE_URL": server.base_url}


def run(command: list[str], env: dict[str, str]) -> str:
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def estimate(env: dict[str, str]) -> list[dict[str, object]]:
    out = run([sys.executable, "-m", "ai_assets.dagster.estimate", "-f", "tests/cost_defs.py", "--select", "answers",
               "--partition", "d1", "--partition", "d2", "--partition", "d3", "--json"], env)
    rows: list[dict[str, object]] = json.loads(out.strip().splitlines()[-1])
    return rows


@pytest.mark.long  # a minute or more alone: started first under pytest-xdist
def test_estimate_then_single_run_backfill_with_cost_per_partition(tmp_path: Path, server: FakeOpenAIServer) -> None:
    write_reviews(tmp_path / "src")
    env = environment(tmp_path, server)
    cold = estimate(env)
    assert server.stats().requests == 0  # an estimate calls no model
    assert [(r["partition"], r["to send"]) for r in cold] == [("d1", 120), ("d2", 120), ("d3", 120)]

    run([DAGSTER, "asset", "materialize", "-f", "tests/cost_defs.py", "--select", "*", "--partition", "d1"], env)
    warm = estimate(env)
    assert server.stats().chat_requests == 120
    by_partition = {r["partition"]: r for r in warm}
    assert by_partition["d1"]["to send"] == 0 and by_partition["d1"]["in journal"] == 120
    assert all(isinstance(r["live $"], float) and isinstance(r["batch $"], float) for r in warm)

    server.reset()
    run([DAGSTER, "asset", "materialize", "-f", "tests/cost_defs.py", "--select", "*",
         "--partition-range", "d1...d3"], env)
    measured = server.stats()
    assert measured.chat_requests == 240  # d1 came from the journal
    estimated = sum(int(r["tokens in"]) + int(r["tokens out"]) for r in warm)  # type: ignore[call-overload]
    actual = measured.prompt_tokens + measured.completion_tokens
    assert abs(estimated - actual) <= 0.15 * actual, (estimated, actual, cold)

    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        records = instance.fetch_materializations(dg.AssetKey("answers"), limit=10).records
        latest: dict[str, dict[str, object]] = {}
        for record in sorted(records, key=lambda r: r.timestamp):
            materialization = record.asset_materialization
            assert materialization is not None and materialization.partition is not None
            latest[materialization.partition] = {k: v.value for k, v in materialization.metadata.items()}
    assert sorted(latest) == ["d1", "d2", "d3"]
    for metadata in latest.values():  # every partition its own usage and cost, in one run
        assert "ai/estimated_cost_usd" in metadata and metadata["ai/rows_in"] == 120
    assert latest["d1"]["ai/tokens_in"] == 0 and latest["d1"]["ai/rows_from_cache"] == 120
    for sent in ("d2", "d3"):  # each partition's own pace and latencies, not zeros
        assert float(latest[sent]["ai/rows_per_s"]) > 0 and float(latest[sent]["ai/latency_p50_s"]) > 0  # type: ignore[arg-type]
    assert sum(int(latest[p]["ai/tokens_in"]) for p in ("d2", "d3")) == measured.prompt_tokens  # type: ignore[call-overload]
    assert sum(int(latest[p]["ai/tokens_out"]) for p in ("d2", "d3")) == measured.completion_tokens  # type: ignore[call-overload]
