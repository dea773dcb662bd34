"""The README's chart: the latest figures of every benchmark (``bench/figures.json``, written by the benchmarks)
as one SVG of horizontal bars, each panel with its target line. Plain SVG, so no plotting library is needed.

    python bench/chart.py [--out docs/images/benchmarks.svg]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import results

ROOT = Path(__file__).resolve().parents[1]
WIDTH, LABEL_W, BAR_H, GAP, PANEL_GAP = 860, 330, 18, 6, 34
COLOURS = {"ours": "#4f46e5", "reference": "#9ca3af"}


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    text: str
    ours: bool = True


@dataclass(frozen=True)
class Panel:
    title: str
    bars: list[Bar]
    scale: float  # the value at the right edge
    target: float | None = None
    target_text: str = ""


def panels(figures: dict[str, Any]) -> list[Panel]:
    out: list[Panel] = []
    prompt = figures.get("prompt", {}).get("figures")
    if prompt:
        limit = prompt["limit_rows_per_s"]
        bars = [Bar(label, prompt[key] / limit, f"{prompt[key] / limit:.2f}", ours) for key, label, ours in (
            ("sdk", "raw openai SDK + semaphore", False), ("plain", "prompt (plain)", True),
            ("structured", "prompt (structured)", True), ("dagster", "Dagster ingest -> prompt -> Delta", True))]
        out.append(Panel("Prompts, 100 ms latency, 64 in flight: share of the latency limit", bars, 1.0, 0.85,
                         "target 0.85 (Dagster)"))
    ratios: list[Bar] = []
    if prompt:
        ratios.append(Bar("prompt at 20 ms / bare aiohttp client", prompt["plain 20ms"] / prompt["bare 20ms"],
                          f"{prompt['plain 20ms'] / prompt['bare 20ms']:.2f}"))
    api = figures.get("embed_api", {}).get("figures")
    if api:
        ratios.append(Bar("API embeddings / bare aiohttp client", api["ai_assets"] / api["bare"],
                          f"{api['ai_assets'] / api['bare']:.2f}"))
    local = figures.get("embed_local", {}).get("figures")
    if local:
        ratios.append(Bar("local MiniLM embed_text / raw encode", local["ai_assets"] / local["raw_best"],
                          f"{local['ai_assets'] / local['raw_best']:.2f}"))
    if ratios:
        out.append(Panel("Against a bare client, same load (1.0 = no overhead)", ratios, 1.1, 0.9, "target 0.90"))
    memory = figures.get("memory", {}).get("figures")
    if memory:
        bars = [Bar(f"{name.split()[0]}, {int(name.split()[-1]):,} rows", value["peak_mb"],
                    f"{value['peak_mb']:.0f} MB", not name.startswith("baseline"))
                for name, value in sorted(memory.items(), key=lambda item: (item[0].split()[0],
                                                                            int(item[0].split()[-1])))]
        out.append(Panel("Peak RSS of a text partition (5 ms, 64 in flight)", bars, 1200, 1024, "target 1 GB"))
    images = figures.get("images", {}).get("figures")
    if images:
        bars = [Bar(f"{int(count):,} images, ingest -> decode -> embed", value["peak_mb"],
                    f"{value['peak_mb']:.0f} MB") for count, value in sorted(images.items(), key=lambda i: int(i[0]))]
        out.append(Panel("Peak RSS of an image partition (~300 KB JPEGs)", bars, 1700, 1536, "target 1.5 GB"))
    storage = figures.get("storage", {}).get("figures")
    if storage:
        bars = [Bar(name, value, f"{value:,.0f} B") for name, value in storage.items() if name != "rows"]
        out.append(Panel("Bytes per row on disk (a review, its answer, a 1,536-d vector)", bars,
                         max(bar.value for bar in bars) * 1.15))
    return out


def svg(chart: list[Panel]) -> str:
    height = sum(30 + len(p.bars) * (BAR_H + GAP) + PANEL_GAP for p in chart) + 10
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
             f'font-family="Helvetica, Arial, sans-serif" font-size="12">',
             f'<rect width="{WIDTH}" height="{height}" fill="white"/>']
    span = WIDTH - LABEL_W - 80
    y = 10
    for panel in chart:
        parts.append(f'<text x="10" y="{y + 14}" font-size="14" font-weight="bold">{escape(panel.title)}</text>')
        y += 26
        top = y
        for bar in panel.bars:
            width = max(1.0, min(bar.value / panel.scale, 1.0) * span)
            colour = COLOURS["ours" if bar.ours else "reference"]
            parts.append(f'<text x="{LABEL_W - 8}" y="{y + 13}" text-anchor="end">{escape(bar.label)}</text>')
            parts.append(f'<rect x="{LABEL_W}" y="{y}" width="{width:.1f}" height="{BAR_H}" fill="{colour}"/>')
            parts.append(f'<text x="{LABEL_W + width + 6:.1f}" y="{y + 13}">{escape(bar.text)}</text>')
            y += BAR_H + GAP
        if panel.target is not None:
            x = LABEL_W + panel.target / panel.scale * span
            parts.append(f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{y - GAP + 4}" stroke="#dc2626" '
                         'stroke-dasharray="4 3"/>')
            parts.append(f'<text x="{x + 4:.1f}" y="{top - 6}" fill="#dc2626" font-size="11">'
                         f'{escape(panel.target_text)}</text>')
        y += PANEL_GAP
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(ROOT / "docs" / "images" / "benchmarks.svg"))
    args = parser.parse_args()
    chart = panels(results.load())
    Path(args.out).write_text(svg(chart))
    print(f"wrote {args.out}: {len(chart)} panels")


if __name__ == "__main__":
    main()
