"""Images: decode (with a decompression-bomb guard), convert mode, resize or thumbnail, re-encode.

The output keeps images as encoded bytes with ``width``, ``height`` and ``mode`` columns; a corrupt, truncated or
oversized image becomes a per-row error, never a crash.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import pyarrow as pa

from ai_assets.runtime.columns import Rows, error_column, set_columns
from ai_assets.runtime.errors import MissingExtraError, bounded

if TYPE_CHECKING:
    from PIL.Image import Image

ResizeMode = Literal["thumbnail", "exact"]
MAX_PIXELS = 50_000_000
"""The default decompression-bomb guard: images of more pixels are refused before any pixel is decoded."""


@dataclass(frozen=True)
class ImageSpec:
    """``mode``: PIL mode to convert to; ``size``: (width, height) bound; ``resize``: keep the aspect ratio
    inside the bound (thumbnail) or stretch to it (exact); ``format``: how to re-encode."""

    mode: str | None = "RGB"
    size: tuple[int, int] | None = None
    resize: ResizeMode = "thumbnail"
    format: str = "PNG"
    max_pixels: int = MAX_PIXELS


def require_pillow() -> None:
    """Call before a per-row loop, so a missing Pillow is one clear error instead of an error on every row."""
    try:
        import PIL  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError("pillow", "images") from exc


def open_image(data: bytes, max_pixels: int) -> Image:
    """Decode fully (so truncation shows now), refusing images of more than ``max_pixels`` pixels.

    The size check runs on the header, before any pixel is decoded. Pillow's own process-wide bomb limit is left
    alone (it is global, so changing it per call would race between threads); its warning is silenced because
    the check here is the one that decides."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        image = Image.open(io.BytesIO(data))
    if image.width * image.height > max_pixels:
        raise ValueError(f"{image.width}x{image.height} is over max_pixels={max_pixels}")
    image.load()
    return image


def decode_or_error(data: object, max_pixels: int) -> Image | str:
    """The decoded image, or why it does not decode as one row's error text (what ``embed_image``,
    ``classify_image`` by embedding and by LLM put in ``<column>_error``): the check made before anything is
    embedded or sent."""
    if not isinstance(data, bytes | bytearray | memoryview):
        return f"TypeError: expected encoded image bytes, got {type(data).__name__}"
    try:
        return open_image(bytes(data), max_pixels)
    except Exception as exc:  # Pillow raises many types for bad input
        message = re.sub(r" <_io\.BytesIO object at 0x[0-9a-f]+>", "", str(exc))  # the same text for the same bytes
        return bounded(f"{type(exc).__name__}: {message}")


def process_image(data: bytes, spec: ImageSpec) -> tuple[bytes, int, int, str]:
    from PIL import Image

    image = open_image(data, spec.max_pixels)
    if spec.mode and image.mode != spec.mode:
        image = image.convert(spec.mode)
    if spec.size is not None:
        if spec.resize == "exact":
            image = image.resize(spec.size, Image.Resampling.BICUBIC)
        else:
            image.thumbnail(spec.size, Image.Resampling.BICUBIC)
    out = io.BytesIO()
    image.save(out, format=spec.format)
    return out.getvalue(), image.width, image.height, image.mode


def decode_images(table: Rows, column: str, *, spec: ImageSpec | None = None,
                  output_column: str = "image") -> Rows:
    """Add ``output_column`` (encoded bytes), ``<output_column>_width`` / ``_height`` / ``_mode`` and
    ``<output_column>_error`` for the bytes in ``column``."""
    require_pillow()
    spec = spec or ImageSpec()
    images: list[bytes | None] = []
    widths: list[int | None] = []
    heights: list[int | None] = []
    modes: list[str | None] = []
    errors: list[str | None] = []
    for row, data in enumerate(table.column(column).to_pylist()):
        try:
            if data is None:
                raise ValueError(f"column {column!r} is null")
            encoded, width, height, mode = process_image(data, spec)
        except Exception as exc:  # Pillow raises many types for bad input; each is this row's error
            images.append(None)
            widths.append(None)
            heights.append(None)
            modes.append(None)
            errors.append(bounded(f"row {row}: {type(exc).__name__}: {exc}"))
            continue
        images.append(encoded)
        widths.append(width)
        heights.append(height)
        modes.append(mode)
        errors.append(None)
    return set_columns(table, {
        output_column: pa.array(images, pa.binary()),
        f"{output_column}_width": pa.array(widths, pa.int32()),
        f"{output_column}_height": pa.array(heights, pa.int32()),
        f"{output_column}_mode": pa.array(modes, pa.string()),
        error_column(output_column): pa.array(errors, pa.string()),
    })


