"""The Dagster UI in a real browser: `dagster dev` on the demo (its LLM pointed at the fake server), Debian's
chromium driven by Playwright. The graph shows every asset with its store, an enrichment asset's page shows what it
does and what it cost, a partition is materialized from the Materialize button and a 2-partition backfill from the
launch dialog.

Screenshots go to $AI_ASSETS_ARTIFACTS (default: the test's tmp dir); the README's graph is
``AI_ASSETS_ARTIFACTS=docs/images .venv/bin/python -m pytest tests/test_ui.py -k every_asset``."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ai_assets.testing import FakeOpenAIServer
from tests.services import guard

pytestmark = [pytest.mark.slow, pytest.mark.long]
playwright = pytest.importorskip("playwright.sync_api")

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _graphql(base: str, query: str) -> dict[str, Any]:
    request = urllib.request.Request(f"{base}/graphql", data=json.dumps({"query": query}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["data"]  # type: ignore[no-any-return]


RUNS = "{ runsOrError { ... on Runs { results { runId status tags { key value } } } } }"
BACKFILLS = "{ partitionBackfillsOrError { ... on PartitionBackfills { results { id status partitionNames } } } }"


def _runs(base: str) -> list[dict[str, Any]]:
    return list(_graphql(base, RUNS)["runsOrError"]["results"])


def _wait(what: str, check: Any, timeout: float, log: Path) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}; dagster dev log:\n{log.read_text()[-4000:]}")


@pytest.fixture(scope="module")
def webserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (scripts/setup installs it)")
    home = tmp_path_factory.mktemp("dagster_home")
    out = tmp_path_factory.mktemp("out")
    log = home / "dagster-dev.log"
    port = _free_port()
    with FakeOpenAIServer(latency=0.01) as llm:
        env = os.environ | {"DAGSTER_HOME": str(home), "AI_ASSETS_OUT": str(out), "OPENAI_BASE_URL": llm.base_url,
                            "OPENAI_MODEL": "gpt-4o-mini", "DAGSTER_DISABLE_TELEMETRY": "1"}
        env.pop("OPENAI_API_KEY", None)
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        # `dagster dev` ignores SIGINT/SIGTERM when started in the background: give it its own process group and
        # kill the group.
        with log.open("w") as sink:
            proc = subprocess.Popen(
                [sys.executable, "-m", "dagster", "dev", "-w", str(ROOT / "workspace.yaml"), "-h", "127.0.0.1",
                 "-p", str(port)], cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT,
                start_new_session=True)
        guard(proc.pid, signal.SIGKILL, group=True)  # also when this test run is killed and no teardown runs
        base = f"http://127.0.0.1:{port}"
        try:
            _wait("the webserver", lambda: _ready(base), 180, log)
            yield base, home
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def _ready(base: str) -> bool:
    try:
        data = _graphql(base, "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } } }")
    except OSError:
        return False
    entries = data["workspaceOrError"]["locationEntries"]
    return bool(entries) and all(e["loadStatus"] == "LOADED" for e in entries)


@pytest.fixture(scope="module")
def browser(webserver: tuple[str, Path]) -> Iterator[Any]:
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ.get("AI_ASSETS_ARTIFACTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _open(browser: Any, url: str) -> Any:
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(url, wait_until="networkidle")
    skip = page.get_by_role("button", name="Skip")  # the first-run dialog
    try:
        skip.wait_for(timeout=3000)
        skip.click()
    except playwright.TimeoutError:
        pass
    return page


ASSETS = "{ assetNodes { assetKey { path } } }"
MINIMAL_SCALE = 0.6
"""Below this zoom the UI draws each asset as a bare name, without its kinds (dagster-ui ``AssetGraphExplorer``)."""


GRAPH_EXTENT = """() => {
  const rects = [...document.querySelectorAll("div[style*='transform-origin: left top'] *")]
    .map(e => e.getBoundingClientRect()).filter(r => r.width > 0 && r.height > 0);
  return [Math.max(...rects.map(r => r.right)), Math.max(...rects.map(r => r.bottom))];
}"""
"""The right and bottom edges, on screen, of everything the graph draws."""


def _graph_scale(page: Any) -> float:
    """The zoom of the graph's viewport: the scale of its CSS ``matrix(s, 0, 0, s, x, y)`` transform."""
    style = page.locator("div[style*='transform-origin: left top']").first.get_attribute("style") or ""
    found = re.search(r"matrix\(([\d.]+),", style)
    assert found, style
    return float(found.group(1))


def _skip_first_run_dialog(page: Any) -> None:
    skip = page.get_by_role("button", name="Skip")
    if skip.count():
        skip.click()


def test_graph_shows_every_asset_with_its_store(webserver: tuple[str, Path], browser: Any, shots: Path) -> None:
    """The README's picture: the whole graph with its groups expanded (the graph's own "Expand all groups", ⌥E),
    every asset box on screen at a zoom that draws its kinds, and each store's kind among them."""
    base, _ = webserver
    names = ["/".join(node["assetKey"]["path"]) for node in _graphql(base, ASSETS)["assetNodes"]]
    page = _open(browser, f"{base}/asset-groups")
    page.set_viewport_size({"width": 1800, "height": 1500})
    for group in ("reviews", "images", "documents", "landing"):
        page.get_by_text(group, exact=True).first.wait_for(timeout=30_000)
    _skip_first_run_dialog(page)
    page.get_by_role("button", name="Hide navigation").click()
    page.keyboard.press("Alt+e")
    page.get_by_text(names[0], exact=True).first.wait_for(timeout=30_000)
    page.reload(wait_until="networkidle")  # the expansion is kept; the graph is laid out and fitted afresh
    page.get_by_text(names[0], exact=True).first.wait_for(timeout=30_000)
    _skip_first_run_dialog(page)
    page.locator("button:has([aria-label=panel_show_right])").click()  # the asset list beside the graph
    page.wait_for_timeout(1000)
    assert _graph_scale(page) >= MINIMAL_SCALE
    for name in names:
        page.get_by_text(name, exact=True).first.wait_for(timeout=30_000)
    page.get_by_text(re.compile(r"^Loading")).first.wait_for(state="detached", timeout=60_000)  # each box's status
    right, bottom = page.evaluate(GRAPH_EXTENT)
    assert right <= 1800 and bottom <= 1500, (right, bottom)  # every box on screen
    for kind in ("Parquet", "Delta Lake", "lancedb"):  # the UI's labels for parquet, deltalake, lancedb
        assert page.get_by_text(kind, exact=True).count() >= 2, kind
    page.screenshot(path=str(shots / "lineage.png"), clip={"x": 0, "y": 0, "width": min(1800, right + 40),
                                                           "height": min(1500, bottom + 40)})
    page.close()


def _materialize_from_ui(base: str, browser: Any, partitions: list[str], launch: str, shot: Path) -> None:
    page = _open(browser, f"{base}/locations/ai_assets_demo/asset-groups/reviews")
    page.get_by_role("button", name="Materialize all").first.click()
    page.get_by_text(re.compile(r"Launch runs to materialize \d+ assets")).wait_for(timeout=30_000)
    page.get_by_role("button", name="Custom").click()
    field = page.get_by_placeholder("ex: 2024-11-01, 2024-11-02")
    field.fill(", ".join(partitions))
    field.press("Enter")
    page.get_by_text(f"{len(partitions)} partition", exact=False).first.wait_for()
    page.screenshot(path=str(shot))
    page.get_by_role("button", name=launch).click()
    page.get_by_text("Launch runs to materialize").wait_for(state="hidden", timeout=30_000)
    page.close()


def test_materialize_one_partition_from_the_ui(webserver: tuple[str, Path], browser: Any, shots: Path) -> None:
    base, home = webserver
    log = home / "dagster-dev.log"
    _materialize_from_ui(base, browser, ["2024-11-01"], "Launch 1 run", shots / "launch-dialog.png")

    def finished() -> dict[str, Any] | None:
        runs = [r for r in _runs(base)
                if {"key": "dagster/partition", "value": "2024-11-01"} in r["tags"]]
        done = [r for r in runs if r["status"] in ("SUCCESS", "FAILURE", "CANCELED")]
        return done[0] if done else None

    run = _wait("the run of 2024-11-01", finished, 300, log)
    assert run["status"] == "SUCCESS", run
    page = _open(browser, f"{base}/runs/{run['runId']}")
    page.get_by_text("Success", exact=False).first.wait_for(timeout=30_000)
    page.screenshot(path=str(shots / "run.png"))
    page.close()


def test_asset_page_shows_what_it_did(webserver: tuple[str, Path], browser: Any, shots: Path) -> None:
    base, _ = webserver
    page = _open(browser, f"{base}/assets/review_insights?partition=2024-11-01")
    body = page.locator("body")
    # The description the factory wrote: model, template, schema.
    page.get_by_text("Prompts model", exact=False).first.wait_for(timeout=30_000)
    text = body.inner_text()
    for expected in ("gpt-4o-mini", "ReviewInsight", "Product: {product}"):
        assert expected in text, expected
    # Columns and the materialization's metadata: rows, tokens, cost, a preview.
    for expected in ("aspects", "ai/rows_in", "ai/tokens_in", "ai/tokens_out", "ai/estimated_cost_usd", "preview"):
        page.get_by_text(expected, exact=False).first.wait_for(timeout=30_000)
    page.screenshot(path=str(shots / "asset.png"))
    page.get_by_text("ai/tokens_in", exact=False).first.scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "asset-metadata.png"))
    page.get_by_role("tab", name="Checks").first.click()
    page.get_by_text("error_rate", exact=False).first.wait_for(timeout=30_000)
    page.screenshot(path=str(shots / "checks.png"))
    page.close()


def test_backfill_two_partitions_from_the_ui(webserver: tuple[str, Path], browser: Any, shots: Path) -> None:
    base, home = webserver
    log = home / "dagster-dev.log"
    _materialize_from_ui(base, browser, ["2024-11-02", "2024-11-03"], "Launch backfill",
                         shots / "backfill-dialog.png")

    def finished() -> dict[str, Any] | None:
        backfills = _graphql(base, BACKFILLS)["partitionBackfillsOrError"]["results"]
        done = [b for b in backfills if b["status"] not in ("REQUESTED", "CANCELING", "FAILING")]
        return done[0] if done else None

    backfill = _wait("the backfill", finished, 420, log)
    assert backfill["status"] in ("COMPLETED", "COMPLETED_SUCCESS"), backfill
    assert sorted(backfill["partitionNames"]) == ["2024-11-02", "2024-11-03"]
    runs = [r for r in _runs(base) if {"key": "dagster/backfill", "value": backfill["id"]} in r["tags"]]
    assert runs and all(r["status"] == "SUCCESS" for r in runs), runs
    page = _open(browser, f"{base}/runs/b/{backfill['id']}")
    page.get_by_text("2024-11-03", exact=False).first.wait_for(timeout=30_000)
    page.screenshot(path=str(shots / "backfill.png"))
    page.close()
