"""Components of the steps before enrichment: ingest, preprocess, download, decode images, extract text, chunks."""

from typing import Literal

import dagster as dg
from pydantic import Field

from ai_assets.dagster.components.common import AssetComponentBase, Options
from ai_assets.dagster.derived import build
from ai_assets.dagster.sources import (
    chunk_text_asset,
    decode_images_asset,
    download_asset,
    extract_text_asset,
    ingest_asset,
    preprocess_asset,
)
from ai_assets.functions.download import DownloadPolicy
from ai_assets.functions.files import OCR_MAX_PIXELS
from ai_assets.functions.images import ImageSpec
from ai_assets.functions.ingest_spec import IngestSpec
from ai_assets.functions.preprocess import Extract
from ai_assets.functions.table_sources import DeltaSource, LanceSource
from ai_assets.runtime.errors import ConfigError


class IngestComponent(AssetComponentBase):
    """Files at ``path`` (``{partition}`` in it), or a partition of a Delta / LanceDB table."""

    path: str | None = None
    delta_table: str | None = Field(default=None, description="A Delta table's URI to read instead of files")
    lance_table: str | None = Field(default=None, description="'<database folder>/<table name>' to read instead")
    partition_column: str | None = Field(default=None, description="The source table's partition column")
    format: Literal["parquet", "csv", "json", "jsonl", "files"] | None = None
    columns: list[str] | None = None
    limit: int | None = None
    bad_rows: Literal["raise", "null"] = "raise"
    min_rows: int = 0
    storage_options: dict[str, str] | None = Field(default=None, description="fsspec options for the files, or "
                                                   "the table's storage options")

    def spec(self) -> IngestSpec:
        source: DeltaSource | LanceSource | None = None
        if self.delta_table:
            source = DeltaSource(self.delta_table, self.partition_column, storage_options=self.storage_options)
        elif self.lance_table:
            folder, _, table = self.lance_table.rpartition("/")
            source = LanceSource(folder, table, self.partition_column, storage_options=self.storage_options)
        return IngestSpec(path=self.path, source=source, format=self.format, columns=self.columns,
                          limit=self.limit, bad_rows=self.bad_rows, min_rows=self.min_rows,
                          storage_options=self.storage_options if source is None else None)

    def asset(self) -> dg.AssetsDefinition:
        return ingest_asset(self.name, spec=self.spec(), **self.asset_args())


class Extraction(dg.Model):
    """A regex extraction: the ``group`` (number or name) of ``pattern`` matched in ``column``."""

    column: str
    pattern: str
    group: int | str = 1


class PreprocessComponent(AssetComponentBase):
    """Row-wise cleaning: drop rows missing a column, regex extractions, SQL-free derived columns."""

    upstream: str
    drop_missing: list[str] = Field(default_factory=list)
    extract: dict[str, Extraction] = Field(default_factory=dict)
    derive: dict[str, str] = Field(default_factory=dict)

    def asset(self) -> dg.AssetsDefinition:
        extract = {out: Extract(e.column, e.pattern, e.group) for out, e in self.extract.items()}
        return preprocess_asset(self.name, self.upstream, drop_missing=self.drop_missing, extract=extract,
                                derive=self.derive, **self.asset_args())


class DownloadComponent(AssetComponentBase):
    """Bytes of the URLs in ``column``, behind the download guard (protocol allow-list, no metadata addresses,
    size cap)."""

    upstream: str
    column: str
    output_column: str = "bytes"
    max_bytes: int = DownloadPolicy.max_bytes
    allow_files: bool = DownloadPolicy.allow_files
    allow_private: bool = Field(default=DownloadPolicy.allow_private, description=(
        "Reach private, loopback, shared and reserved addresses (refused by default; link-local and metadata "
        "addresses are refused regardless)."))
    protocols: list[str] = Field(default_factory=lambda: sorted(DownloadPolicy().protocols))
    max_redirects: int = DownloadPolicy.max_redirects
    storage_options: dict[str, str] | None = Field(default=None, description="fsspec options for object stores")
    options: Options | None = None  # type: ignore[valid-type]

    def asset(self) -> dg.AssetsDefinition:
        policy = DownloadPolicy(max_bytes=self.max_bytes, allow_files=self.allow_files,
                                allow_private=self.allow_private, protocols=frozenset(self.protocols),
                                max_redirects=self.max_redirects, storage_options=self.storage_options)
        return download_asset(self.name, self.upstream, column=self.column, output_column=self.output_column,
                              policy=policy, options=build(self.options) if self.options else None,
                              **self.asset_args())


class DecodeImagesComponent(AssetComponentBase):
    """Decoded, converted and resized images from bytes, as PNG/JPEG bytes."""

    upstream: str
    column: str = "bytes"
    output_column: str = "image"
    mode: str | None = "RGB"
    size: list[int] | None = Field(default=None, description="[width, height] to fit into")
    resize: Literal["thumbnail", "exact"] = "thumbnail"
    format: str = "PNG"
    max_pixels: int = Field(default=ImageSpec.max_pixels, description="Larger images are refused (decompression "
                            "bombs)")

    def asset(self) -> dg.AssetsDefinition:
        if self.size is not None and len(self.size) != 2:
            raise ConfigError(f"{self.name}: size is [width, height], got {self.size}")
        size = (self.size[0], self.size[1]) if self.size else None
        spec = ImageSpec(mode=self.mode, size=size, resize=self.resize, format=self.format, max_pixels=self.max_pixels)
        return decode_images_asset(self.name, self.upstream, column=self.column, output_column=self.output_column,
                                   spec=spec, **self.asset_args())


class ExtractTextComponent(AssetComponentBase):
    """Text from PDF, HTML or plain-text bytes, with page and character caps."""

    upstream: str
    column: str = "bytes"
    by: Literal["file", "page"] = Field(default="file", description="One row per file, or one row per page")
    output_column: str = "text"
    max_pages: int = 50
    max_chars: int = 100_000
    path_column: str | None = Field(default="path", description="The file names that help tell the kind")
    ocr: bool = Field(default=False, description="Read scanned PDF pages (no text layer) by OCR (the ocr extra)")
    ocr_max_pixels: int = Field(default=OCR_MAX_PIXELS, description="The most pixels a page is rendered at for OCR")
    max_memory_mb: int = Field(default=2048, description="Address-space cap of the PDF reader's child process")
    page_timeout_s: float = Field(default=60.0, description="The longest the PDF reader may take over one page")

    def asset(self) -> dg.AssetsDefinition:
        return extract_text_asset(self.name, self.upstream, column=self.column, by=self.by,
                                  output_column=self.output_column, max_pages=self.max_pages,
                                  max_chars=self.max_chars, path_column=self.path_column, ocr=self.ocr,
                                  ocr_max_pixels=self.ocr_max_pixels, max_memory_mb=self.max_memory_mb,
                                  page_timeout_s=self.page_timeout_s, **self.asset_args())


class ChunkTextComponent(AssetComponentBase):
    """One row per chunk of a text column, with stable ids and offsets, for embedding into a vector table."""

    upstream: str
    column: str = "text"
    size: int = Field(default=2048, description="The largest chunk, in `unit`s")
    overlap: int = Field(default=200, description="How much of a chunk the next repeats, in `unit`s")
    unit: Literal["chars", "tokens"] = "chars"
    tokenizer: str | None = Field(default=None,
                                  description="A folder with tokenizer.json (default: all-MiniLM-L6-v2's)")
    output_column: str = "chunk"
    key_columns: list[str] | None = Field(default=None, description="Parent columns in the chunk id (default: path, "
                                                                    "page_number)")
    keep_column: bool = Field(default=False, description="Keep the parent's text column in each chunk row")

    def asset(self) -> dg.AssetsDefinition:
        return chunk_text_asset(self.name, self.upstream, column=self.column, size=self.size, overlap=self.overlap,
                                unit=self.unit, tokenizer=self.tokenizer, output_column=self.output_column,
                                key_columns=self.key_columns, keep_column=self.keep_column, **self.asset_args())
