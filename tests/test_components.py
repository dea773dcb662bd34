"""Components: the demo as a dg project (demo/), checked, listed and launched through the dg CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from ai_assets.dagster import components
from ai_assets.storage.delta import DeltaStore

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
DG = str(Path(sys.executable).with_name("dg"))


def dg_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHONPATH": str(cwd / "src"), **(env or {})}
    return subprocess.run([DG, *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=600,
                          check=False)


def test_dg_lists_the_components() -> None:
    result = dg_cli("list", "components", "--json", cwd=ROOT / "demo")
    assert result.returncode == 0, result.stderr[-2000:]
    keys = {item["key"] for item in json.loads(result.stdout)["items"]}
    expected = {f"ai_assets.dagster.components.{name}" for name in (
        "IngestComponent", "PreprocessComponent", "PromptComponent", "EmbedComponent", "ClassifyComponent",
        "TaskComponent", "DownloadComponent", "DecodeImagesComponent", "ExtractTextComponent", "ChunkTextComponent",
        "EmbedImageComponent", "ClassifyImageComponent", "ResourcesComponent")}
    assert expected <= keys


def test_the_yaml_demo_checks_and_lists_the_same_assets_as_definitions_py() -> None:
    checked = dg_cli("check", "defs", cwd=ROOT / "demo")
    assert checked.returncode == 0, checked.stdout[-3000:] + checked.stderr[-3000:]
    listed = dg_cli("list", "defs", "--json", cwd=ROOT / "demo")
    assert listed.returncode == 0, listed.stderr[-2000:]
    defs = json.loads(listed.stdout)
    sys.path.insert(0, str(ROOT))
    import definitions

    python_keys = {key.to_user_string() for key in definitions.defs.resolve_asset_graph().get_all_asset_keys()}
    assert {a["asset_key"] for a in defs["assets"]} == python_keys
    assert len(defs["schedules"]) == 1 and len(defs["sensors"]) == 1
    assert all(a["description"] for a in defs["assets"])


@pytest.mark.parametrize(("line_text", "broken", "message"), [
    ("  drop_missing: [text]", "  drop_mising: [text]", "'drop_mising' was unexpected"),  # a typo in a key
    ('  template: "Product: {product}\\nReview: {review}"', '  template: "Product: {product}\\nReview: {review"',
     "expected '}' before end of string"),  # a template prompt() would refuse
])
def test_a_bad_yaml_value_fails_dg_check_with_the_file_and_line(tmp_path: Path, line_text: str, broken: str,
                                                                message: str) -> None:
    project = tmp_path / "demo"
    shutil.copytree(ROOT / "demo", project)
    reviews = project / "src" / "ai_assets_demo" / "defs" / "reviews" / "defs.yaml"
    text = reviews.read_text()
    line = text.splitlines().index(line_text) + 1
    reviews.write_text(text.replace(line_text, broken))
    (project / "src" / "ai_assets_demo" / "defs" / "automation" / "defs.py").write_text(
        (ROOT / "demo" / "src" / "ai_assets_demo" / "defs" / "automation" / "defs.py").read_text().replace(
            "parents[5]", f"parents[0] / {str(ROOT)!r}"))
    result = dg_cli("check", "defs", cwd=project)
    assert result.returncode != 0
    assert f"defs/reviews/defs.yaml:{line}" in result.stdout + result.stderr
    assert message in result.stdout + result.stderr


@pytest.mark.long  # a minute or more alone: started first under pytest-xdist
def test_dg_launch_materializes_a_partition(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    env = {"DAGSTER_HOME": str(home), "AI_ASSETS_OUT": str(tmp_path / "out")}
    result = dg_cli("launch", "--assets", "group:reviews", "--partition", "2024-11-02", cwd=ROOT / "demo", env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    topics = DeltaStore(str(tmp_path / "out" / "delta" / "review_topics")).read()
    assert set(topics.column("_partition").to_pylist()) == {"2024-11-02"} and topics.num_rows == 6
    insights = topics.schema.field("review_insights").type
    assert [insights.field(i).name for i in range(insights.num_fields)] == ["aspects"]


def test_component_fields_never_shadow_the_base_classes() -> None:
    reserved = set(dir(dg.Component)) | set(dir(dg.Model))
    for value in vars(components).values():
        if isinstance(value, type) and issubclass(value, dg.Model):
            clashes = set(value.model_fields) & reserved
            assert not clashes, f"{value.__name__}: {clashes}"
