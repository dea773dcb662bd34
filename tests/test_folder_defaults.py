"""``defaults.yaml``: a folder's shared settings merged under each component's own, deeply, and blamed by name.

The merge follows Helm's documented values merge (helm.sh/docs/chart_template_guide/values_files: a values file's
maps are merged into the chart's key by key, "the user-supplied value wins", and lists are replaced, not
appended), the layering a Dagster project's YAML is read with by the people who write it.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ai_assets import ConfigError
from ai_assets.dagster import DeltaIOManager, OpenAICompatibleResource, ResultCacheResource, ingest_asset
from ai_assets.dagster.components import EmbedComponent, PromptComponent
from ai_assets.dagster.components.defaults import deep_merge, merge
from ai_assets.testing import FakeOpenAIServer, Fault

ROOT = Path(__file__).resolve().parents[1]

keys = st.sampled_from(["a", "b", "c", "d"])
leaves = st.one_of(st.none(), st.integers(), st.floats(allow_nan=True), st.text(max_size=3),
                   st.lists(st.integers(), max_size=3))
trees = st.recursive(leaves, lambda inner: st.dictionaries(keys, inner, max_size=4), max_leaves=12)


def leaf_paths(tree: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    if not isinstance(tree, dict) or not tree:
        return {prefix: tree}
    return {path: leaf for key, value in tree.items() for path, leaf in leaf_paths(value, (*prefix, key)).items()}


def at(tree: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def same(a: Any, b: Any) -> bool:
    return a is b or a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


@settings(max_examples=300, deadline=None)
@given(base=st.dictionaries(keys, trees, max_size=4), own=st.dictionaries(keys, trees, max_size=4))
def test_deep_merge_keeps_every_own_leaf_and_every_default_the_component_does_not_touch(
        base: dict[str, Any], own: dict[str, Any]) -> None:
    """Helm's rule: every value the user gives wins (lists whole), every other default stays."""
    merged = deep_merge(base, own)
    for path, leaf in leaf_paths(own).items():
        if path and leaf != {}:  # an empty mapping adds nothing
            assert same(at(merged, path), leaf), path
    for path, leaf in leaf_paths(base).items():
        given_by_own = [_get(own, path[:i]) for i in range(1, len(path) + 1)]
        touched = any(value is not _MISSING and (i == len(path) or not isinstance(value, dict))
                      for i, value in enumerate(given_by_own, start=1))
        if path and not touched:
            assert same(at(merged, path), leaf), path


_MISSING = object()


def _get(tree: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return _MISSING
        tree = tree[key]
    return tree


def test_lists_are_replaced_and_partitions_and_shortcuts_follow_the_component() -> None:
    folder = {"options": {"max_attempts": 5, "on_error": "null", "retry": {"base_wait": 0.1}},
              "partitions": {"daily": {"start": "2024-01-01"}}, "prices": {"input_per_million": 1.0}}
    own = {"options": {"retry": {"max_attempts": 2}}, "partitions": {"static": ["a"]},
           "prices": {"output_per_million": 2.0}}
    merged = merge(folder, own)
    assert merged["options"] == {"on_error": "null", "retry": {"base_wait": 0.1, "max_attempts": 2}}
    assert merged["partitions"] == {"static": ["a"]}  # a choice of one kind, not daily and static at once
    assert merged["prices"] == {"input_per_million": 1.0, "output_per_million": 2.0}
    assert merge({"options": {"retry": {"max_attempts": 5}}}, {"options": {"max_attempts": 3}})["options"] == {
        "retry": {"max_attempts": 3}}
    assert deep_merge({"x": [1, 2]}, {"x": [3]}) == {"x": [3]}


def test_a_component_with_options_of_its_own_keeps_the_folder_s_on_error_and_one_bad_row_is_one_row(
        tmp_path: Path, server: FakeOpenAIServer) -> None:
    """The folder says ``on_error: "null"``; the component sets only its concurrency. One row the provider
    refuses (a 400, as OpenAI answers an invalid request: no retry helps) is that row's error, the step succeeds."""
    source = tmp_path / "reviews.jsonl"
    source.write_text("".join(json.dumps({"id": i, "text": f"review {i}"}) + "\n" for i in range(4)))
    folder = tmp_path / "defs"
    folder.mkdir()
    (folder / "defaults.yaml").write_text('options: {on_error: "null", max_attempts: 1}\n')
    component = PromptComponent(name="answers", upstream="raw", template="{text}", options={"concurrency": 2},
                                llm_model="fake")  # type: ignore[arg-type]
    asset = component.with_folder_defaults(folder).asset()
    server.set_faults(Fault(kind=400, match="review 2", attempts=None))
    raw = ingest_asset("raw", path=str(source))
    resources = {"io_manager": DeltaIOManager(root=str(tmp_path / "delta")),
                 "llm": OpenAICompatibleResource(model="fake", base_url=server.base_url, api_key="sk-test"),
                 "ai_cache": ResultCacheResource(path=str(tmp_path / "cache.sqlite"))}
    result = dg.materialize([raw, asset], resources=resources, raise_on_error=False)
    assert result.success
    table = DeltaIOManager(root=str(tmp_path / "delta")).store(dg.AssetKey("answers"), {}).read()
    rows = {r["id"]: r for r in table.to_pylist()}
    assert rows[2]["answers"] is None and rows[2]["answers_error"]
    assert all(rows[i]["answers"] == f"Answer to: review {i}" for i in (0, 1, 3))


@pytest.mark.parametrize(("yaml_text", "named"), [
    ("options: {retry: {max_attempts: lots}}", "options.retry.max_attempts: Input should be a valid integer"),
    ("options: {retry: {max_attempts: 0}}", "options: RetryPolicy: max_attempts >= 1"),  # checked when built
    ("options: {rpm: -5}", "options: RunOptions.rpm must be > 0, got -5"),
    ("partitions: {}", "partitions: partitions: give exactly one of daily, static, dynamic"),
    ("prices: {output_per_million: 2}", "prices.input_per_million: Field required"),
])
def test_a_bad_value_in_defaults_yaml_names_the_file_and_key(tmp_path: Path, yaml_text: str, named: str) -> None:
    (tmp_path / "defaults.yaml").write_text(yaml_text + "\n")
    component = EmbedComponent(name="vectors", upstream="raw", column="text", options={"concurrency": 2})  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as caught:
        component.with_folder_defaults(tmp_path)
    assert f"{tmp_path / 'defaults.yaml'}: {named}" in str(caught.value)


def test_a_component_s_own_bad_value_is_not_blamed_on_defaults_yaml(tmp_path: Path) -> None:
    (tmp_path / "defaults.yaml").write_text('options: {on_error: "null"}\n')
    component = EmbedComponent(name="vectors", upstream="raw", column="text", options={"concurrency": 0})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"RunOptions\.concurrency must be >= 1") as caught:
        component.with_folder_defaults(tmp_path)
    assert "defaults.yaml" not in str(caught.value)


@pytest.mark.slow
def test_dg_check_names_defaults_yaml_for_its_bad_value(tmp_path: Path) -> None:
    """Through the dg CLI, where the error is reported under the component of defs.yaml that loaded it."""
    project = tmp_path / "demo"
    shutil.copytree(ROOT / "demo", project)
    (tmp_path / "data").symlink_to(ROOT / "data")
    automation = project / "src" / "ai_assets_demo" / "defs" / "automation" / "defs.py"
    automation.write_text(automation.read_text().replace("parents[5]", f"parents[0] / {str(ROOT)!r}"))
    defaults = project / "src" / "ai_assets_demo" / "defs" / "reviews" / "defaults.yaml"
    defaults.write_text(defaults.read_text() + "options: {retry: {max_attempts: -1}}\n")
    environment = {**os.environ, "PYTHONPATH": str(project / "src")}
    result = subprocess.run([str(Path(sys.executable).with_name("dg")), "check", "defs"], cwd=project, env=environment,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode != 0
    assert f"{defaults}: options: RetryPolicy: max_attempts >= 1" in result.stdout + result.stderr
