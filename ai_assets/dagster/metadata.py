"""Materialization metadata: usage, cost, previews, schema, and progress lines for the run log."""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Callable
from typing import Any

import dagster as dg
import pyarrow as pa

from ai_assets.functions.images import MAX_PIXELS, open_image
from ai_assets.providers.messages import image_mime
from ai_assets.runtime.usage import Prices, Usage

PREVIEW_ROWS = 5
THUMBNAIL = 64
CELL_CHARS = 60


def usage_metadata(usage: Usage, prices: Prices | None) -> dict[str, Any]:
    """Rows, requests, tokens, latency and (with prices) the estimated cost of one call or one partition of it."""
    summary = usage.summary()
    metadata: dict[str, Any] = {
        "ai/rows_in": summary["rows"],
        "ai/rows_sent": summary["sent_rows"],
        "ai/rows_from_cache": summary["cache_hits"],
        "ai/rows_deduplicated": summary["deduplicated"],
        "ai/rows_skipped": summary["skipped"],
        "ai/rows_with_errors": summary["errors"],
        "ai/requests": summary["requests"],
        "ai/retries": summary["retries"],
        "ai/tokens_in": summary["prompt_tokens"],
        "ai/tokens_out": summary["completion_tokens"],
        "ai/tokens_cached": summary["cached_tokens"],
        "ai/tokens_cache_write": summary["cache_write_tokens"],
        "ai/tokens_reasoning": summary["reasoning_tokens"],
        "ai/rows_per_s": dg.MetadataValue.float(float(summary["rows_per_s"])),
    }
    if summary["latency_p50_s"] is not None:
        metadata["ai/latency_p50_s"] = dg.MetadataValue.float(summary["latency_p50_s"])
        metadata["ai/latency_p95_s"] = dg.MetadataValue.float(summary["latency_p95_s"])
    if prices is not None or usage.model_prices:
        metadata["ai/estimated_cost_usd"] = dg.MetadataValue.float(round(usage.cost(prices), 6))
    if usage.models:  # a cascade: what each model was sent, billed and cost
        metadata["ai/models"] = dg.MetadataValue.json({
            name: {"rows_sent": part.sent_rows, "requests": part.requests, "tokens_in": part.prompt_tokens,
                   "tokens_out": part.completion_tokens,
                   "cost_usd": round(part.cost(usage.model_prices.get(name) or prices), 6)}
            for name, part in usage.models.items()})
    if usage.certificate is not None:  # a certified cascade: its threshold, oracle share, cost and guarantee
        metadata.update({f"ai/cascade_{k}": v for k, v in usage.certificate.summary().items() if v is not None})
    if usage.batch:
        metadata["ai/mode"] = "batch"
    if usage.estimated:
        metadata["ai/mode"] = "estimate"
        if prices is not None:
            batch = prices.cost(usage.prompt_tokens, usage.completion_tokens, batch=True)
            metadata["ai/estimated_cost_batch_usd"] = dg.MetadataValue.float(round(batch, 6))
    return metadata


def table_metadata(preview: pa.Table, rows: int) -> dict[str, Any]:
    """Row count, column schema and a Markdown preview (of ``preview``: the first rows of ``rows``)."""
    return {
        "dagster/row_count": rows,
        "dagster/column_schema": dg.TableSchema(
            columns=[dg.TableColumn(f.name, str(f.type)) for f in preview.schema]),
        "preview": dg.MetadataValue.md(markdown_preview(preview)),
    }


def markdown_preview(table: pa.Table, rows: int = PREVIEW_ROWS) -> str:
    """A few rows as a Markdown table; vectors and bytes are summarised, long text cut."""
    head = table.slice(0, rows)
    names = head.column_names
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    for row in head.to_pylist():
        lines.append("| " + " | ".join(_cell(row[n], head.schema.field(n).type) for n in names) + " |")
    return "\n".join(lines)


def _cell(value: Any, kind: pa.DataType) -> str:
    if value is None:
        return ""
    if pa.types.is_fixed_size_list(kind):
        return f"[{', '.join(f'{v:.3f}' for v in value[:3])}, … ({kind.list_size})]"
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return _thumbnail(value) or f"<{len(value)} bytes>"
    text = str(value).replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= CELL_CHARS else text[:CELL_CHARS - 1] + "…"


def progress_logger(log: Any, label: str, every_s: float = 10.0) -> Callable[[int, int | None], None]:
    """A progress callback that writes 'rows done / total, rows/s, ETA' to the run log at most every_s."""
    started = time.monotonic()
    last = [0.0]

    def report(done: int, total: int | None) -> None:
        now = time.monotonic()
        if (total is None or done < total) and now - last[0] < every_s:
            return
        last[0] = now
        rate = done / max(now - started, 1e-9)
        if total is None:
            log.info(f"{label}: {done} rows done ({rate:.1f} rows/s)")
            return
        eta = (total - done) / rate if rate > 0 else float("inf")
        log.info(f"{label}: {done}/{total} rows done ({rate:.1f} rows/s, ETA {eta:.0f}s)")

    return report


def _thumbnail(data: bytes) -> str | None:
    """A small inline image for image bytes (None for anything else)."""
    if image_mime(data) == "application/octet-stream":
        return None
    try:
        from PIL import Image
    except ImportError:
        return None
    try:
        image = open_image(data, max_pixels=MAX_PIXELS)
        image.thumbnail((THUMBNAIL, THUMBNAIL))
        out = io.BytesIO()
        image.convert("RGB").save(out, format="PNG")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return f"![thumbnail](data:image/png;base64,{base64.b64encode(out.getvalue()).decode()})"
