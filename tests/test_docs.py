"""The README and the docs/ pages, run as tests: every code block of the README is executed here (Python against
the fake OpenAI server, the YAML loaded as dg components and materialized) or is one of the two commands that CI
and the demo test run; every Python block of docs/ is run, or says in its marker why it is not.

A docs page marks each Python block on the line before its fence (an HTML comment, invisible on the site):
``<!-- test: run -->`` to run it here, or ``<!-- test: skip (why) -->``; a block with no marker fails
``test_a_docs_python_block_runs_or_says_why_not``, so a new example is never silently left unrun.

``mkdocs build --strict`` (broken links, pages left out of the nav, griffe docstring warnings) runs in
scripts/test after mypy, as CI runs it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ai_assets import Enriched
from ai_assets.testing import FakeOpenAIServer

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
SECRET = "sk-docs-secret-key"
PARTITION = "2024-11-01"
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})(?P<lang>[\w-]*)\s*$")
RUN = "<!-- test: run -->"
SKIP = re.compile(r"^<!-- test: skip \((?P<why>.+)\) -->$")

# Every command line of the README's bash blocks, and what runs it. A new command must be added here with the
# test that runs it, or the README test fails.
COMMANDS = {
    "./scripts/demo": "test_the_readme_s_demo_command_runs_as_written (below), against the fake server",
    "./scripts/test": "CI: .ci/run is exactly this command",
}


@dataclass(frozen=True)
class Block:
    """One fenced code block of a Markdown file (CommonMark 0.31, 4.5: fenced code blocks)."""

    path: Path
    line: int  # the file's line of the block's first line of code, 1-based
    lang: str
    code: str
    marker: str  # the last non-blank line before the fence

    def __str__(self) -> str:
        return f"{self.path.name}:{self.line}"


def parse_blocks(path: Path, text: str | None = None) -> list[Block]:
    """The fenced code blocks of a Markdown file. A block indented inside a list item loses that indent; a fence
    closes only with the same fence character, at least as long (CommonMark 4.5)."""
    lines = (path.read_text() if text is None else text).splitlines()
    found: list[Block] = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        indent, fence = len(opening["indent"]), opening["fence"]
        end = index + 1
        while end < len(lines) and not re.match(rf"^\s*{re.escape(fence[0])}{{{len(fence)},}}\s*$", lines[end]):
            end += 1
        assert end < len(lines), f"{path.name}:{index + 1}: a code block that is never closed"
        code = "\n".join(line[indent:] if not line[:indent].strip() else line.lstrip() for line in lines[index + 1:end])
        before = next((line.strip() for line in reversed(lines[:index]) if line.strip()), "")
        found.append(Block(path, index + 2, opening["lang"], code, before))
        index = end + 1
    return found


def run_python(block: Block) -> dict[str, Any]:
    """Execute a block as a module of its own; a traceback names the Markdown file and line."""
    namespace: dict[str, Any] = {"__name__": f"docs_example_{block.line}"}
    exec(compile("\n" * (block.line - 1) + block.code, str(block.path), "exec"), namespace)
    return namespace


@pytest.fixture
def example_env(server: FakeOpenAIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeOpenAIServer:
    """What a user of the examples has: a working folder with the demo's data/reviews, OPENAI_API_KEY and
    OPENAI_BASE_URL (read by the provider as the openai SDK reads them: github.com/openai/openai-python, "Usage"),
    here pointing at the fake server, and a DAGSTER_HOME."""
    shutil.copytree(ROOT / "data" / "reviews", tmp_path / "data" / "reviews")
    (tmp_path / "dagster_home").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.delenv("OPENAI_MODEL", raising=False)
    return server


def materialize_one_partition(defs: dg.Definitions) -> dg.ExecuteInProcessResult:
    job = defs.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(partition_key=PARTITION, instance=dg.DagsterInstance.ephemeral(),
                                    raise_on_error=False)
    assert result.success, [str(e.message) for e in result.all_events if e.is_failure]
    assert not [e for e in result.all_events if SECRET in repr(e)]  # the key never reaches an event or metadata
    return result


def readme_blocks() -> list[Block]:
    return parse_blocks(README)


def docs_python_blocks() -> list[Block]:
    return [block for page in sorted(DOCS.glob("*.md")) for block in parse_blocks(page) if block.lang == "python"]


# The README

def test_the_readme_is_read_in_five_minutes() -> None:
    """Issue 27: under 200 lines, the examples first: a paragraph, the two commands, one example each of plain
    Python, Dagster and YAML, the asset graph, then links."""
    text = README.read_text()
    assert len(text.splitlines()) < 200
    assert sorted(b.lang for b in readme_blocks()) == ["bash", "bash", "python", "python", "yaml"]
    assert "docs/images/lineage.png" in text


def test_every_readme_link_points_at_a_file_that_exists() -> None:
    """GitHub renders relative links of a README against the repository; each must name a file in it."""
    targets = re.findall(r"\]\((?!https?://)([^)#\s]+)", README.read_text())
    assert targets
    assert [t for t in targets if not (ROOT / t).is_file()] == []


@pytest.mark.parametrize("block", [b for b in readme_blocks() if b.lang == "python"], ids=str)
def test_a_readme_python_block_runs_against_the_fake_server(block: Block, example_env: FakeOpenAIServer) -> None:
    """Each Python example as a user would paste it: its provider reads the key and endpoint from the environment
    (the openai SDK's documented OPENAI_API_KEY / OPENAI_BASE_URL), pointing here at the fake server. A block that
    builds ``defs`` must load and materialize one partition for real (Delta, LanceDB, Parquet in a temp folder)."""
    namespace = run_python(block)
    ran = False
    if isinstance(out := namespace.get("out"), Enriched):
        assert out.table.num_rows > 0 and out.usage.requests > 0
        errors = [c for c in out.table.column_names if c.endswith("_error")]
        assert errors and all(out.table.column(c).null_count == out.table.num_rows for c in errors)
        ran = True
    if isinstance(defs := namespace.get("defs"), dg.Definitions):
        result = materialize_one_partition(defs)
        assert len(result.get_asset_materialization_events()) == len(list(defs.resolve_asset_graph()
                                                                             .get_all_asset_keys()))
        ran = True
    assert ran, f"{block}: the test knows no check for this example: give it an `out` or a `defs`"
    models = example_env.stats().models
    assert models and set(models) == {"gpt-4o-mini"}  # the model the example names reached the wire
    assert example_env.stats().headers["authorization"] == f"Bearer {SECRET}"


@pytest.mark.parametrize("block", [b for b in readme_blocks() if b.lang == "yaml"], ids=str)
@pytest.mark.filterwarnings("ignore::pydantic.PydanticDeprecatedSince20")  # dagster's own YAML parsing
def test_a_readme_yaml_block_loads_as_components_and_materializes(block: Block,
                                                                  example_env: FakeOpenAIServer) -> None:
    """A ``defs.yaml`` with several components separated by ``---``, loaded as ``dg`` loads a project's defs
    folder (Dagster's docs on testing components: ``create_defs_folder_sandbox`` builds the same tree), then
    one partition materialized against the fake server."""
    from dagster.components.testing import create_defs_folder_sandbox

    with create_defs_folder_sandbox() as sandbox:
        folder = sandbox.defs_folder_path / "readme"
        folder.mkdir()
        (folder / "defs.yaml").write_text(block.code)
        with sandbox.build_all_defs() as defs:
            keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
            assert keys >= {"raw_reviews", "review_insights"}
            materialize_one_partition(defs)
    assert set(example_env.stats().models) == {"gpt-4o-mini"}
    assert example_env.stats().chat_requests > 0


def test_every_readme_command_is_one_that_ci_or_a_test_runs() -> None:
    """A bash line in the README that nothing runs would rot unseen: each must be in ``COMMANDS``."""
    lines = [line.strip() for b in readme_blocks() if b.lang == "bash" for line in b.code.splitlines()
             if line.strip() and not line.strip().startswith("#")]
    assert lines
    assert [line for line in lines if line not in COMMANDS] == []
    assert "./scripts/test" in (ROOT / ".ci" / "run").read_text().splitlines()


@pytest.mark.slow
@pytest.mark.long  # a minute or more alone: started first under pytest-xdist
def test_the_readme_s_demo_command_runs_as_written(server: FakeOpenAIServer, tmp_path: Path) -> None:
    """``./scripts/demo``, exactly as the README gives it, with its documented switch to an OpenAI-compatible
    endpoint (OPENAI_BASE_URL / OPENAI_API_KEY / OPENAI_MODEL) pointing at the fake server, outputs and instance in
    a temp folder: every step (reviews, images, documents) and the results summary succeed, and the documents'
    chunks are searchable in LanceDB (this run is also the documents branch's CLI test)."""
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home"), "AI_ASSETS_OUT": str(tmp_path / "out"),
           "OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": SECRET, "OPENAI_MODEL": "fake"}
    result = subprocess.run(["./scripts/demo"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
                            check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert SECRET not in output
    assert "RUN_FAILURE" not in output and "STEP_FAILURE" not in output
    assert server.stats().chat_requests > 0
    assert {p.name for p in (tmp_path / "out").iterdir()} >= {"delta", "lancedb", "parquet"}
    # The documents branch: PDFs -> pages -> token chunks -> MiniLM vectors in LanceDB, with a full-text index.
    import lancedb

    table = lancedb.connect(str(tmp_path / "out" / "lancedb")).open_table("product_doc_chunk_vectors")
    chunks = table.to_arrow()
    assert chunks.num_rows >= 3  # each PDF has a chunk
    assert chunks.column("chunk_tokens").null_count == 0 and max(chunks.column("chunk_tokens").to_pylist()) <= 256
    assert chunks.column("product_doc_chunk_vectors").null_count == 0
    assert {tuple(i.columns) for i in table.list_indices()} >= {("chunk",)}
    hit = table.search("warranty", query_type="fts").limit(1).to_arrow()
    assert "warranty" in hit.column("chunk")[0].as_py().lower()


# The docs pages

@pytest.mark.parametrize("block", docs_python_blocks(), ids=str)
def test_a_docs_python_block_runs_or_says_why_not(block: Block, example_env: FakeOpenAIServer) -> None:
    """Each Python block of docs/ runs here (needing no service but the fake OpenAI-compatible server), or its
    marker says why not; a block that builds ``defs`` must load (``Definitions.validate_loadable``)."""
    skipped = SKIP.match(block.marker)
    assert skipped or block.marker == RUN, (
        f"{block}: put {RUN!r} or '<!-- test: skip (why) -->' on the line before the fence")
    if skipped:
        pytest.skip(f"{block}: {skipped['why']}")
    namespace = run_python(block)
    if isinstance(defs := namespace.get("defs"), dg.Definitions):
        dg.Definitions.validate_loadable(defs)
    if isinstance(out := namespace.get("out"), Enriched):
        assert out.table.num_rows > 0


@pytest.mark.filterwarnings("ignore::pydantic.PydanticDeprecatedSince20")  # dagster's own YAML parsing
def test_a_docs_yaml_component_block_loads_as_its_component() -> None:
    """Each ``type:`` block of docs/ is a ``defs.yaml`` that ``dg check defs`` would accept: its attributes
    validate against the component's model (the component tree of Dagster's docs on testing components).
    Not built into definitions: a block alone lacks the resources its asset asks for."""
    from dagster.components.testing import create_defs_folder_sandbox

    blocks = [b for page in sorted(DOCS.glob("*.md")) for b in parse_blocks(page)
              if b.lang == "yaml" and re.search(r"^type: ", b.code, re.MULTILINE)]
    assert blocks
    with create_defs_folder_sandbox() as sandbox:
        for number, block in enumerate(blocks):
            folder = sandbox.defs_folder_path / f"block_{number}"
            folder.mkdir()
            (folder / "defs.yaml").write_text(block.code)
            with sandbox.build_component_tree() as tree:
                assert tree.load_component(folder) is not None, block


def test_every_docs_page_is_in_the_site_s_nav() -> None:
    """mkdocs --strict warns on a page left out of the nav (validation.omitted_files); this says which, fast."""
    import yaml

    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]
    listed = {page for entry in nav for page in entry.values()}
    assert {p.name for p in DOCS.glob("*.md")} <= listed


# The parser the tests above rely on

CODE_LINE = st.text(st.characters(codec="utf-8", exclude_characters="\n\r`~\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"),
                    max_size=40)


def blank_lines_emptied(code: str) -> str:
    return "\n".join(line if line.strip() else "" for line in code.split("\n"))


@given(bodies=st.lists(st.lists(CODE_LINE, max_size=5), max_size=5), indent=st.sampled_from(["", "  ", "   "]),
       lang=st.sampled_from(["python", "yaml", "bash", ""]))
def test_the_block_parser_finds_every_fenced_block_with_its_code_and_line(bodies: list[list[str]], indent: str,
                                                                          lang: str) -> None:
    """CommonMark 0.31, 4.5: a fenced block is the lines between an opening fence and a closing one; an indent
    of up to three spaces on the opening fence is removed from each content line."""
    parts: list[str] = ["# A page", ""]
    expected: list[tuple[int, str]] = []
    for body in bodies:
        parts += ["Some prose.", f"{indent}```{lang}"]
        expected.append((len(parts) + 1, "\n".join(body)))
        parts += [f"{indent}{line}" if line.strip() else line for line in body]
        parts += [f"{indent}```", ""]
    found = parse_blocks(Path("page.md"), "\n".join(parts))
    assert [(b.line, blank_lines_emptied(b.code)) for b in found] == [
        (line, blank_lines_emptied(code)) for line, code in expected]
    assert all(b.lang == lang and b.marker == "Some prose." for b in found)


def test_no_fence_of_the_readme_or_the_docs_escapes_the_parser() -> None:
    """Every fence line is one end of a parsed block, so no block (``~~~`` or four backticks included) goes unrun."""
    for page in [README, *DOCS.glob("*.md")]:
        fences = [line for line in page.read_text().splitlines() if FENCE.match(line)]
        assert len(fences) == 2 * len(parse_blocks(page)), page.name
