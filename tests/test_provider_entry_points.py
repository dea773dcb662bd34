"""Third-party providers register through an entry point and are used by name, from plain Python and from YAML.

Documented behaviour modelled: the Python packaging spec, "Entry points specification" (packaging.python.org): an
installed distribution's ``<name>-<version>.dist-info/entry_points.txt`` is an INI file whose sections are groups and
whose lines are ``name = module:attribute``; ``importlib.metadata.entry_points(group=...)`` lists them for every
distribution on ``sys.path``, and ``EntryPoint.load()`` imports the module and returns the attribute. Here the
group is ``ai_assets.providers``. The tiny package is installed as pip would lay it out (a module plus a dist-info
with METADATA and entry_points.txt; "Recording installed projects" spec), into a temp folder put on ``sys.path``
of a fresh interpreter: no pip, no network.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from ai_assets.testing import FakeOpenAIServer

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-myprov-" + "Tq7Wz3Lp" * 4

PLUGIN = '''
from ai_assets.providers.openai_compatible import OpenAICompatibleProvider


class MyProvider:
    """A Prompter of its own package: it has (does not inherit) an OpenAI-compatible client."""

    default_api_key_env = "MYPROV_KEY"

    def __init__(self, model: str, base_url: str, api_key: str | None = None, shout: bool = False) -> None:
        self.model, self.shout = model, shout
        self._inner = OpenAICompatibleProvider(model, base_url=base_url, api_key=api_key)

    def identity(self):
        return {**self._inner.identity(), "provider": "myprov", "shout": self.shout}

    def chat_request(self, messages, response_model, params):
        return self._inner.chat_request(messages, response_model, params)

    def connect(self, response_model, concurrency, timeout_s):
        return self._inner.connect(response_model, concurrency, timeout_s)
'''


def install(folder: Path, entry_points: str, module: str = PLUGIN, name: str = "myprov") -> Path:
    """A distribution laid out as an installer lays it out: ``myprov_pkg.py`` and ``myprov-0.1.dist-info``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "myprov_pkg.py").write_text(module)
    info = folder / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    return folder


def run(folder: Path, code: str, **env: str) -> dict[str, Any]:
    """``code`` in a fresh interpreter with ``folder`` on ``sys.path``; its last line of output, as JSON."""
    environment = {**os.environ, "PYTHONPATH": str(folder), **env}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_a_registered_provider_is_used_by_name_from_plain_python(tmp_path: Path, server: FakeOpenAIServer) -> None:
    folder = install(tmp_path / "site", """
        [ai_assets.providers]
        myprov = myprov_pkg:MyProvider
    """)
    out = run(folder, f"""
        import json
        import pyarrow as pa
        from ai_assets import prompt
        from ai_assets.providers.registry import load_provider, provider_names

        provider = load_provider("myprov", "gpt-4o-mini", base_url={server.base_url!r}, api_key={KEY!r})
        result = prompt(pa.table({{"text": ["a", "b", "c"]}}), "Say {{text}}", provider=provider)
        print(json.dumps({{"type": type(provider).__module__, "names": provider_names(),
                          "answers": result.table.column("response").null_count,
                          "requests": result.usage.requests}}))
    """)
    assert out["type"] == "myprov_pkg" and out["names"][-1] == "myprov" and out["names"][0] == "openai"
    assert out["answers"] == 0 and out["requests"] == 3
    assert server.stats().chat_requests == 3


def test_a_registered_provider_is_a_yaml_kind_and_materializes(tmp_path: Path, server: FakeOpenAIServer) -> None:
    """``kind: myprov`` in a ResourcesComponent: its fields are the class's keyword parameters (a field it does not
    have is refused, as for the built-in kinds), the key comes from ``api_key_env`` (the class's
    ``default_api_key_env``) through ``dg.EnvVar``, and a real partition is enriched through it."""
    folder = install(tmp_path / "site", """
        [ai_assets.providers]
        myprov = myprov_pkg:MyProvider
    """)
    out = run(folder, f"""
        import json
        import dagster as dg
        import pydantic
        import pyarrow as pa
        import yaml
        from ai_assets.dagster import ParquetIOManager, ResultCacheResource, prompt_asset
        from ai_assets.dagster.components import ResourcesComponent
        from ai_assets.dagster.registry import PluginProviderResource, build_resource

        attributes = yaml.safe_load('''
        providers:
          llm:
            kind: myprov
            model: gpt-4o-mini
            base_url: {server.base_url}
            shout: true
        ''')
        component = ResourcesComponent.model_validate(attributes)
        resource = build_resource(component.providers["llm"])
        try:
            ResourcesComponent.model_validate({{"providers": {{"x": {{"kind": "myprov", "model": "m",
                                                                    "base_url": "http://h", "rpm": 5}}}}}})
            refused = None
        except pydantic.ValidationError as error:
            refused = str(error)

        days = dg.StaticPartitionsDefinition(["d1"])

        @dg.asset(partitions_def=days)
        def raw() -> pa.Table:
            return pa.table({{"text": [f"review {{i}}" for i in range(6)]}})

        answers = prompt_asset("answers", raw, template="Say {{text}}", partitions_def=days, provider_key="llm")
        io = ParquetIOManager(root={str(tmp_path / "out")!r})
        result = dg.materialize([raw, answers], partition_key="d1", raise_on_error=True, resources={{
            "llm": resource, "io_manager": io, "ai_cache": ResultCacheResource(path={str(tmp_path / "j.sqlite")!r})}})
        table = io.store(dg.AssetKey("answers"), {{}}).read(["d1"])
        metadata = result.asset_materializations_for_node("answers")[0].metadata
        print(json.dumps({{"resource": isinstance(resource, PluginProviderResource), "settings": resource.settings,
                          "key_env": resource.api_key.env_var_name, "refused": refused,
                          "rows": table.num_rows, "errors": table.column("answers_error").null_count,
                          "cost": metadata["ai/estimated_cost_usd"].value}}))
    """, MYPROV_KEY=KEY)
    assert out["resource"] and out["key_env"] == "MYPROV_KEY"
    assert out["settings"] == {"model": "gpt-4o-mini", "base_url": server.base_url, "shout": True}
    assert out["refused"] is not None and "rpm" in out["refused"] and "Extra inputs" in out["refused"]
    assert out["rows"] == 6 and out["errors"] == 6 and out["cost"] > 0
    stats = server.stats()
    assert stats.chat_requests == 6 and stats.headers["authorization"] == f"Bearer {KEY}"


def test_a_plugin_that_takes_a_built_in_name_is_ignored_with_a_warning_naming_its_package(tmp_path: Path) -> None:
    folder = install(tmp_path / "site", """
        [ai_assets.providers]
        openai = myprov_pkg:MyProvider
        myprov = myprov_pkg:MyProvider
    """, name="clashing_dist")
    out = run(folder, """
        import json, warnings
        warnings.simplefilter("always")
        with warnings.catch_warnings(record=True) as caught:
            from ai_assets.providers.registry import provider_class
            chosen = provider_class("openai")
            mine = provider_class("myprov")
        print(json.dumps({"openai": chosen.__module__, "myprov": mine.__module__,
                          "warnings": [str(w.message) for w in caught]}))
    """)
    assert out["openai"] == "ai_assets.providers.openai_compatible" and out["myprov"] == "myprov_pkg"
    assert len(out["warnings"]) == 1 and "clashing_dist" in out["warnings"][0] and "'openai'" in out["warnings"][0]


def test_a_plugin_that_does_not_import_is_an_error_naming_its_package(tmp_path: Path) -> None:
    """Not "no provider 'broken'": the entry point is there, its module is what fails, so the error names the
    distribution and the entry point; an unknown name lists every registered one."""
    folder = install(tmp_path / "site", """
        [ai_assets.providers]
        broken = myprov_pkg:MyProvider
        myprov = myprov_pkg:Missing
    """, module="import no_such_module_here\n")
    out = run(folder, """
        import json
        from ai_assets.providers.registry import provider_class
        from ai_assets.runtime.errors import ConfigError
        messages = []
        for name in ("broken", "nope"):
            try:
                provider_class(name)
            except ConfigError as error:
                messages.append(str(error))
        print(json.dumps(messages))
    """)
    broken, unknown = out
    assert "myprov 0.1" in broken and "myprov_pkg:MyProvider" in broken and "no_such_module_here" in broken
    assert "'nope'" in unknown and "'broken'" in unknown and "'myprov'" in unknown


def test_with_no_plugin_installed_the_built_in_names_are_all(tmp_path: Path) -> None:
    from ai_assets.providers.registry import PROVIDERS, provider_names

    assert provider_names()[:len(PROVIDERS)] == list(PROVIDERS)


@pytest.mark.parametrize("clash", ["anthropic", "llama_cpp"])
def test_a_yaml_built_in_kind_is_never_the_plugin_s(tmp_path: Path, clash: str) -> None:
    folder = install(tmp_path / "site", f"""
        [ai_assets.providers]
        {clash} = myprov_pkg:MyProvider
    """)
    out = run(folder, f"""
        import json, warnings
        warnings.simplefilter("ignore")
        from ai_assets.dagster.registry import PROVIDERS, Provider
        from pydantic import TypeAdapter
        entry = TypeAdapter(Provider).validate_python({{"kind": {clash!r}, "model": "m"}} if {clash!r} == "anthropic"
                                                     else {{"kind": {clash!r}, "model_path": "/m.gguf"}})
        print(json.dumps(type(entry).__name__))
    """)
    assert out in ("AnthropicResourceYaml", "LlamaCppResourceYaml")
