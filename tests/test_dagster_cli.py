"""The demo definitions through the real ``dagster`` CLI (subprocesses, SQLite instance in a temp DAGSTER_HOME),
the landing-folder sensor, and the public API guard."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

import ai_assets
import ai_assets.dagster
from ai_assets.testing import FakeOpenAIServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]
DAGSTER = str(Path(sys.executable).with_name("dagster"))


def cli_env(tmp_path: Path, server: FakeOpenAIServer) -> dict[str, str]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    return {**os.environ, "DAGSTER_HOME": str(home), "AI_ASSETS_OUT": str(tmp_path / "out"),
            "OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "sk-cli-secret", "OPENAI_MODEL": "fake"}


def test_definitions_validate(tmp_path: Path, server: FakeOpenAIServer) -> None:
    result = subprocess.run([DAGSTER, "definitions", "validate", "-w", "workspace.yaml"], cwd=ROOT,
                            env=cli_env(tmp_path, server), capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.long  # a minute or more alone: started first under pytest-xdist
def test_cli_single_run_backfill_of_the_demo(tmp_path: Path, server: FakeOpenAIServer) -> None:
    env = cli_env(tmp_path, server)
    result = subprocess.run(
        [DAGSTER, "asset", "materialize", "-f", "definitions.py", "--select", "group:reviews",
         "--partition-range", "2024-11-01...2024-11-03"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "sk-cli-secret" not in result.stdout + result.stderr
    assert server.stats().chat_requests == 19  # 21 reviews, one with null text, one blank

    from ai_assets.storage.delta import DeltaStore
    from ai_assets.storage.lance import LanceStore

    topics = DeltaStore(str(tmp_path / "out" / "delta" / "review_topics")).read()
    assert sorted(set(topics.column("_partition").to_pylist())) == ["2024-11-01", "2024-11-02", "2024-11-03"]
    assert topics.num_rows == 19
    vectors = LanceStore(str(tmp_path / "out" / "lancedb"), "review_embeddings").read(["2024-11-02"])
    assert vectors.num_rows == 6

    again = subprocess.run(
        [DAGSTER, "asset", "materialize", "-f", "definitions.py", "--select", "review_insights",
         "--partition", "2024-11-02"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert again.returncode == 0, again.stderr[-3000:]
    assert server.stats().chat_requests == 19  # a re-run pays for nothing


def test_landing_sensor_adds_each_file_once_and_the_partition_materializes(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "b1.jsonl").write_text('{"text": "battery died"}\n')
    (landing / "ignored.txt").write_text("not matched")
    files = dg.DynamicPartitionsDefinition(name="files")
    raw = ai_assets.dagster.ingest_asset("landed", path=str(landing / "{partition}"), format="jsonl",
                                         partitions_def=files)
    sensor = ai_assets.dagster.landing_folder_sensor("watch", folder=landing, pattern="*.jsonl",
                                                     partitions_def=files, assets=[raw])
    instance = dg.DagsterInstance.ephemeral()
    defs = dg.Definitions(assets=[raw], sensors=[sensor], resources={
        "io_manager": ai_assets.dagster.ParquetIOManager(root=str(tmp_path / "out"))})

    def tick() -> dg.SensorResult:
        context = dg.build_sensor_context(instance=instance, definitions=defs)
        result = sensor(context)
        assert isinstance(result, dg.SensorResult)
        for request in result.dynamic_partitions_requests or []:
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys or []))
        return result

    first = tick()
    assert [r.partition_key for r in first.run_requests or []] == ["b1.jsonl"]
    assert tick().run_requests == []  # idempotent
    (landing / "b2.jsonl").write_text('{"text": "screen cracked"}\n')
    assert [r.partition_key for r in tick().run_requests or []] == ["b2.jsonl"]

    result = dg.materialize([raw], partition_key="b1.jsonl", instance=instance,
                            resources={"io_manager": ai_assets.dagster.ParquetIOManager(root=str(tmp_path / "out"))})
    assert result.success


@pytest.mark.parametrize(("module", "call", "extra"), [
    ("deltalake", "from ai_assets.storage.delta import DeltaStore; DeltaStore('x').read()", "delta"),
    ("lancedb", "from ai_assets.storage.lance import LanceStore; LanceStore('x', 't')", "lancedb"),
    ("xllamacpp", "from ai_assets import LlamaCppProvider; LlamaCppProvider().start()", "llamacpp"),
    ("sentence_transformers", "from ai_assets import SentenceTransformersProvider as S; S(device='cpu').model",
     "local"),
])
def test_a_missing_backend_names_the_extra_to_install(module: str, call: str, extra: str) -> None:
    code = (f"import sys; sys.modules[{module!r}] = None\n"
            f"from ai_assets import MissingExtraError\n"
            f"try:\n    {call}\nexcept MissingExtraError as exc:\n    print(exc)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert f"pip install 'ai_assets[{extra}]'" in result.stdout, result.stdout + result.stderr
