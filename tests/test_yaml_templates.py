"""Templates in a ResourcesComponent's nested settings are resolved, as Dagster's component docs promise for every
string attribute (``{{ env('NAME') }}``): a provider's ``model`` or ``base_url`` written as a template used to reach
the resource, and the wire, as the literal template text."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.mark.filterwarnings("ignore::pydantic.PydanticDeprecatedSince20")  # dagster's own YAML parsing
def test_env_templates_inside_providers_and_io_managers_are_resolved(monkeypatch: pytest.MonkeyPatch,
                                                                      tmp_path: Any) -> None:
    from dagster.components.testing import create_defs_folder_sandbox

    monkeypatch.setenv("AI_TEST_MODEL", "model-from-env")
    monkeypatch.setenv("AI_TEST_ROOT", str(tmp_path / "parquet"))
    yaml = """type: ai_assets.dagster.components.ResourcesComponent
attributes:
  providers:
    llm:
      kind: openai
      model: "{{ env('AI_TEST_MODEL') }}"
      base_url: "http://127.0.0.1:9/v1"
  io_managers:
    io_manager:
      kind: parquet
      root: "{{ env('AI_TEST_ROOT') }}"
"""
    with create_defs_folder_sandbox() as sandbox:
        folder = sandbox.defs_folder_path / "resources"
        folder.mkdir()
        (folder / "defs.yaml").write_text(yaml)
        with sandbox.build_component_tree() as tree:
            defs = tree.build_defs()
    resources = defs.resources or {}
    assert resources["llm"].model == "model-from-env"
    assert str(resources["io_manager"].root) == str(tmp_path / "parquet")
