"""Cheap to start: ``import ai_assets``, ``import ai_assets.dagster`` and loading the demo's ``definitions.py`` import
no heavy dependency; each is imported by the code that uses it, when it runs.

Why it matters (documented behaviour, not our design): the ``dagster`` CLI loads the code location in the process it
starts (``dagster asset materialize -f``, ``dagster definitions validate``), and the default multiprocess executor
loads it again in a fresh subprocess for every step ("Each step runs in its own process", Dagster docs,
"Executors": ``multiprocess_executor``). Every module a definitions file imports is therefore paid at least twice
per run, and a run per partition pays it per partition. PEP 562 (module ``__getattr__``) is the documented way to
keep a package's public names while importing their modules on first use.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Heavy third-party packages, each imported only where it is used (measured with ``python -X importtime``: openai
# and instructor's response processing alone cost ~0.6-2.5 s here). pyarrow (and numpy, which pyarrow imports) stays:
# Arrow is every function's argument and result type.
HEAVY = ("instructor", "openai", "torch", "sentence_transformers", "transformers", "pypdfium2", "PIL", "lancedb",
         "deltalake", "semantic_text_splitter", "tokenizers", "rapidocr", "rapidocr_onnxruntime", "onnxruntime",
         "xllamacpp", "pandas", "aiohttp", "fsspec", "s3fs", "jinja2", "requests", "jsonschema", "psycopg2", "redis",
         "soundfile", "av", "anthropic", "pyiceberg")
# What no module behind a public name may pull in by being imported (a provider module is imported when a
# resource builds its provider, so these would cost every step that uses one, answered or not). instructor's
# package itself is allowed there (its Mode enum, ~15 ms); its response processing imports openai (~0.6-2.5 s).
HEAVY_FOR_ANY_MODULE = (*(name for name in HEAVY if name != "instructor"), "instructor.processing",
                        "instructor.v2.core.client")


def loaded_after(code: str) -> list[str]:
    """The HEAVY modules in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True, cwd=ROOT,
                         timeout=300)
    modules = set(json.loads(out.stdout.strip().splitlines()[-1]))
    return sorted(name for name in HEAVY + HEAVY_FOR_ANY_MODULE if name in modules)


def test_importing_the_packages_imports_no_heavy_dependency() -> None:
    assert loaded_after("import ai_assets, ai_assets.dagster") == []


def test_loading_the_demo_definitions_imports_no_heavy_dependency() -> None:
    """What ``dagster definitions validate -f definitions.py`` and every step process of the demo load."""
    code = ("import importlib.util, sys\n"
            "spec = importlib.util.spec_from_file_location('definitions', 'definitions.py')\n"
            "module = importlib.util.module_from_spec(spec)\n"
            "sys.modules['definitions'] = module\n"
            "spec.loader.exec_module(module)\n"
            "assert module.defs.resolve_asset_graph()")
    assert loaded_after(code) == []


def test_every_public_name_resolves_without_its_heavy_dependencies() -> None:
    """Not only the packages: each module behind a public name (providers, stores, functions) imports its backend
    when it is used, so ``from ai_assets import OpenAICompatibleProvider`` costs no openai / instructor response
    processing, and ``DeltaIOManager`` no deltalake."""
    code = ("import ai_assets, ai_assets.dagster\n"
            "for module in (ai_assets, ai_assets.dagster):\n"
            "    for name in module.__all__:\n"
            "        getattr(module, name)")
    assert [name for name in loaded_after(code) if name in HEAVY_FOR_ANY_MODULE] == []


def test_the_public_names_are_the_same_objects_as_in_their_modules() -> None:
    import ai_assets
    from ai_assets.functions.prompt import prompt
    from ai_assets.providers.openai_compatible import OpenAICompatibleProvider

    assert ai_assets.prompt is prompt
    assert ai_assets.OpenAICompatibleProvider is OpenAICompatibleProvider
    assert set(ai_assets.__all__) <= set(dir(ai_assets))


@pytest.mark.parametrize("package", ["ai_assets", "ai_assets.dagster"])
def test_an_unknown_name_is_an_attribute_error_naming_it(package: str) -> None:
    module = __import__(package, fromlist=["__all__"])
    with pytest.raises(AttributeError, match="no_such_name"):
        module.no_such_name  # noqa: B018


@pytest.mark.parametrize("package", ["ai_assets", "ai_assets.dagster"])
def test_the_lazy_names_and_the_type_checking_imports_agree(package: str) -> None:
    """Type checkers read the ``if TYPE_CHECKING:`` imports, the interpreter reads ``_SOURCES``: one list twice."""
    module = __import__(package, fromlist=["_SOURCES"])
    tree = ast.parse(Path(str(module.__file__)).read_text())
    block = next(node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING")
    imported = {alias.name: node.module for node in block.body if isinstance(node, ast.ImportFrom)
                for alias in node.names}
    lazy = {name: source for source, names in module._SOURCES.items() for name in names}
    assert imported == lazy
    assert sorted(lazy) == sorted(module.__all__)
