"""The package's shape: the public API, no Dagster below the Dagster layer, no import cycles (counting imports
inside functions and under TYPE_CHECKING, which only hide one), and no module much over 400 lines."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import ai_assets
import ai_assets.dagster

PACKAGE = Path(__file__).resolve().parents[2] / "ai_assets"
MAX_LINES = 410


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ai_assets"):
            out.add(node.module)
            out.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
    return {name for name in out if name in known}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_package_has_no_import_cycles() -> None:
    known = modules()
    # A package's __init__ re-exports its modules; importing it from one of them is not a cycle of design.
    graph = {name: {i for i in imports(path, known) if i != name and not name.startswith(i + ".")}
             for name, path in known.items()}
    assert cycles(graph) == []


def test_a_cycle_is_found() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_is_much_over_400_lines() -> None:
    sizes = {name: len(path.read_text().splitlines()) for name, path in modules().items()}
    assert {name: size for name, size in sizes.items() if size > MAX_LINES} == {}


def test_public_api_is_guarded() -> None:
    assert sorted(ai_assets.__all__) == [
        "AIAssetsError", "Accuracy", "AnthropicProvider", "AudioPart", "BatchOptions", "BudgetExceededError", "Cache",
        "Cascade", "ConfigError", "DeltaSource", "DownloadPolicy", "EfficientNetLite0Provider", "EmbeddingFailover",
        "EmbeddingProxy", "Enriched", "EnrichedStream", "Failover", "FileColumn", "FilePart", "IcebergSource",
        "ImageColumn", "ImagePart", "ImageSpec", "LanceSource", "LlamaCppProvider", "Message", "MissingExtraError",
        "NotSupportedError", "ObjectStoreCache", "OpenAICompatibleProvider", "PostgresCache", "Precision", "Prices",
        "PromptParams", "RateLimit", "Recall", "ResultCache", "RetryPolicy", "RowFailedError", "RunArgs", "RunOptions",
        "SentenceTransformersProvider", "TextPart", "Usage", "analyze_sentiment", "aprompt", "chunk_text",
        "classify_image", "classify_text", "decode_images", "download", "embed_image", "embed_text", "extract",
        "extract_text", "fix_grammar", "mask", "open_cache", "prompt", "read_source", "semantic_aggregate",
        "semantic_dedup", "semantic_filter", "semantic_join", "semantic_top_k", "similarity", "stream_source",
        "summarize", "transcribe", "translate"]
    assert sorted(ai_assets.dagster.__all__) == [
        "AnthropicResource", "AssetArgs", "DeltaIOManager", "DriftCheck", "EfficientNetResource", "EnrichArgs",
        "FailoverResource", "GoldenSet", "IcebergIOManager", "JudgeCheck", "LanceDBIOManager", "LlamaCppResource",
        "OpenAICompatibleResource", "ParquetIOManager", "ResultCacheResource", "SentenceTransformersResource",
        "SpendCap", "chunk_text_asset", "classify_asset", "classify_image_asset", "decode_images_asset",
        "download_asset", "embed_asset", "embed_image_asset", "extract_asset", "extract_text_asset",
        "fix_grammar_asset", "gpu_tags", "ingest_asset", "landing_folder_sensor", "mask_asset", "partitioned_schedule",
        "preprocess_asset", "prompt_asset", "provider_versions", "semantic_aggregate_asset", "semantic_dedup_asset",
        "semantic_filter_asset", "semantic_join_asset", "semantic_top_k_asset", "sentiment_asset", "similarity_asset",
        "summarize_asset", "task_asset", "transcribe_asset", "translate_asset", "with_store_kinds"]
    for module in (ai_assets, ai_assets.dagster):
        assert all(hasattr(module, name) for name in module.__all__)


def test_plain_layers_do_not_import_dagster() -> None:
    """Every module outside ai_assets/dagster imports without Dagster (the lint rule bans the import statement;
    this catches one that comes in through another package)."""
    plain = sorted(name for name in modules() if not name.startswith("ai_assets.dagster")
                   and not name.endswith("__main__"))  # a __main__ runs its program when imported
    code = f"import importlib, sys\nfor m in {plain!r}:\n    importlib.import_module(m)\n" \
           "assert 'dagster' not in sys.modules, [m for m in sys.modules if m.startswith('dagster')][:5]"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def test_the_registries_name_the_same_kinds_and_each_provider_serves_a_capability() -> None:
    from ai_assets.dagster.registry import PROVIDERS as RESOURCES
    from ai_assets.providers import protocols
    from ai_assets.providers.registry import PROVIDERS, provider_class

    assert set(PROVIDERS) == set(RESOURCES)  # a plain provider for every resource kind, and back
    capabilities = (protocols.Prompter, protocols.TextEmbedder, protocols.RemoteTextEmbedder,
                    protocols.ImageEmbedder)
    for name in PROVIDERS:
        cls = provider_class(name)
        assert any(all(hasattr(cls, m) for m in vars(c) if not m.startswith("_")) for c in capabilities), name
