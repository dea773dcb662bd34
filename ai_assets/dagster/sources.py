"""Factories for ingest and the row-wise steps before enrichment: preprocess, download, decode images, text, chunks.

Every one of them streams: ingest returns a reader over the partition's files or source table, and each step maps
its upstream reader batch by batch, so the IO manager writes while the step computes and a partition never has to
fit in memory (a partition of many images holds one batch of bytes at a time).
"""


from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Unpack

import dagster as dg
import pyarrow as pa

from ai_assets.dagster.common import AssetArgs, asset_kwargs, fingerprint, partition_fields, upstream_key
from ai_assets.functions.chunks import Unit, chunk_text
from ai_assets.functions.download import DownloadPolicy, download
from ai_assets.functions.files import OCR_MAX_PIXELS, By, extract_text
from ai_assets.functions.images import ImageSpec, decode_images
from ai_assets.functions.ingest import BadRows, Format
from ai_assets.functions.ingest_spec import IngestSpec, TableSource
from ai_assets.functions.preprocess import Extract, preprocess
from ai_assets.runtime.engine import RunOptions
from ai_assets.runtime.errors import ConfigError
from ai_assets.runtime.results import EnrichedStream
from ai_assets.storage.base import chain_readers, stream_with_partition

Upstream = dg.AssetsDefinition | dg.AssetKey | str


def ingest_asset(
    name: str,
    *,
    path: str | None = None,
    source: TableSource | None = None,
    format: Format | None = None,
    columns: Sequence[str] | None = None,
    limit: int | None = None,
    storage_options: Mapping[str, Any] | None = None,
    bad_rows: BadRows = "raise",
    min_rows: int = 0,
    spec: IngestSpec | None = None,
    **asset_args: Unpack[AssetArgs],
) -> dg.AssetsDefinition:
    """An asset that reads its partition, as a stream: files at ``path`` or a partition of an existing table
    (``source=DeltaSource(...)`` / ``LanceSource(...)``). The settings are an ``IngestSpec``'s (or pass ``spec=``).

    ``path`` may name ``{partition}`` or, for multi-partitions, each dimension (``data/{region}/{date}.csv``), and
    may be a glob. ``format="files"`` (the default for a glob with no data suffix) gives (path, bytes, size) rows,
    e.g. for images or PDFs. A row with invalid UTF-8 fails the run naming the file and row, or with
    ``bad_rows="null"`` is kept with the value nulled and the reason in ``ingest_error``; an empty file is an empty
    partition unless ``min_rows`` asks for more. ``columns``, ``limit`` and ``min_rows`` apply to table sources too.

        reviews = ingest_asset("raw_reviews", path="data/reviews/{partition}.jsonl",
                               partitions_def=dg.DailyPartitionsDefinition("2024-11-01"))
        sales = ingest_asset("sales", source=DeltaSource("s3://lake/sales", partition_column="day",
                                                         columns=["id", "text"]), partitions_def=daily)
        dg.Definitions(assets=[reviews, sales], resources={"io_manager": ParquetIOManager(root="out")})
    """
    if spec is not None and (path is not None or source is not None):
        raise dg.DagsterInvalidDefinitionError(f"ingest_asset {name!r}: give spec= or the settings, not both")
    try:
        chosen = spec or IngestSpec(path=path, source=source, format=format, columns=columns, limit=limit,
                                    storage_options=storage_options, bad_rows=bad_rows, min_rows=min_rows)
    except ConfigError as exc:
        raise dg.DagsterInvalidDefinitionError(f"ingest_asset {name!r}: {exc}") from exc
    kwargs = asset_kwargs(asset_args)
    kwargs.setdefault("description", f"Reads {chosen.describe()} for each partition, as a stream of record batches.")

    @dg.asset(name=name, code_version=fingerprint(**chosen.fingerprint_fields()), kinds={"python"}, **kwargs)
    def _ingest(context: dg.AssetExecutionContext) -> pa.RecordBatchReader:
        partitions = partition_fields(context)
        if not partitions:
            return chosen.read(None)
        readers = []
        for key, fields in partitions:
            try:
                readers.append((key, chosen.read(fields)))
            except FileNotFoundError as exc:
                raise FileNotFoundError(f"partition {key!r}: {exc}") from exc
            context.log.info(f"partition {key}: reading {chosen.describe(fields)}")
        if len(readers) == 1:
            key, reader = readers[0]
            return stream_with_partition(reader, key)
        tagged = [stream_with_partition(reader, key) for key, reader in readers]
        schema = pa.unify_schemas([r.schema for r in tagged], promote_options="permissive")
        return chain_readers(schema, iter(tagged))

    return _ingest


def map_stream(reader: pa.RecordBatchReader, step: Callable[[pa.RecordBatch], pa.RecordBatch]
               ) -> pa.RecordBatchReader:
    """``step`` applied to every batch; the output schema is the step applied to an empty batch."""
    schema = step(pa.RecordBatch.from_pylist([], schema=reader.schema)).schema

    def batches() -> Iterator[pa.RecordBatch]:
        with reader:
            for batch in reader:
                yield step(batch)

    return pa.RecordBatchReader.from_batches(schema, batches())


def _step_asset(name: str, upstream: Upstream, version: str, description: str,
                step: Callable[[pa.RecordBatchReader], pa.RecordBatchReader],
                asset_args: AssetArgs) -> dg.AssetsDefinition:
    """An asset applying a row-wise plain-Python step to its upstream stream (failed rows are counted by the IO
    manager from the step's ``*_error`` column)."""
    kwargs = asset_kwargs(asset_args)
    kwargs.setdefault("description", description)

    @dg.asset(name=name, ins={"upstream": dg.AssetIn(upstream_key(upstream))}, code_version=version,
              kinds={"python"}, **kwargs)
    def _step(upstream: pa.RecordBatchReader) -> pa.RecordBatchReader:
        return step(upstream)

    return _step


def preprocess_asset(
    name: str,
    upstream: Upstream,
    *,
    drop_missing: Sequence[str] = (),
    extract: Mapping[str, Extract] | None = None,
    derive: Mapping[str, str] | None = None,
    **asset_args: Unpack[AssetArgs],
) -> dg.AssetsDefinition:
    """Drop rows missing any of ``drop_missing`` (null or blank), then add ``extract`` columns (regular
    expression captures) and ``derive`` columns (templates over other columns).

        clean = preprocess_asset("clean_reviews", reviews, drop_missing=["text"],
                                 derive={"prompt_text": "{title}: {text}"}, partitions_def=daily)
    """
    version = fingerprint(drop=list(drop_missing), extract={k: vars(v) for k, v in (extract or {}).items()},
                          derive=dict(derive or {}))
    steps = [f"drops rows with no {', '.join(drop_missing)}"] if drop_missing else []
    steps += [f"extracts {out} from {spec.column} with /{spec.pattern}/" for out, spec in (extract or {}).items()]
    steps += [f"derives {out} = {template!r}" for out, template in (derive or {}).items()]
    description = f"Cleans {upstream_key(upstream).to_user_string()} row by row: {'; '.join(steps) or 'no steps'}."

    def step(reader: pa.RecordBatchReader) -> pa.RecordBatchReader:
        return map_stream(reader, lambda batch: preprocess(batch, drop_missing=drop_missing, extract=extract,
                                                           derive=derive))

    return _step_asset(name, upstream, version, description, step, asset_args)


def download_asset(
    name: str,
    upstream: Upstream,
    *,
    column: str,
    output_column: str = "bytes",
    policy: DownloadPolicy | None = None,
    options: RunOptions | None = None,
    **asset_args: Unpack[AssetArgs],
) -> dg.AssetsDefinition:
    """Fetch the URL / path in ``column`` (http(s); object stores and local files only if the policy allows
    them) into ``output_column`` bytes, with a size cap, retries and a guard against internal addresses."""
    policy = policy or DownloadPolicy()
    version = fingerprint(kind="download", column=column, output=output_column, policy=repr(policy))
    description = (f"Downloads the URLs in {column} into {output_column} (at most {policy.max_bytes:,} bytes each, "
                   f"protocols {sorted(policy.protocols)}, private addresses "
                   f"{'allowed' if policy.allow_private else 'refused'}, link-local and metadata refused).")

    def step(reader: pa.RecordBatchReader) -> pa.RecordBatchReader:
        result = download(reader, column, output_column=output_column, policy=policy, options=options)
        assert isinstance(result, EnrichedStream)
        return result.reader()

    return _step_asset(name, upstream, version, description, step, asset_args)


def decode_images_asset(
    name: str,
    upstream: Upstream,
    *,
    column: str = "bytes",
    output_column: str = "image",
    spec: ImageSpec | None = None,
    **asset_args: Unpack[AssetArgs],
) -> dg.AssetsDefinition:
    """Decode, convert and resize the images in ``column`` into ``output_column`` bytes with width / height /
    mode columns; corrupt images become per-row errors. Previews show thumbnails."""
    spec = spec or ImageSpec()
    version = fingerprint(kind="images", column=column, output=output_column, spec=vars(spec))
    size = f"fit into {spec.size[0]}x{spec.size[1]}" if spec.size else "kept at their size"
    description = (f"Decodes the images in {column} into {output_column} ({spec.mode or 'original'} mode, {size}, "
                   f"{spec.format}); a corrupt image becomes an error in {output_column}_error.")

    def step(reader: pa.RecordBatchReader) -> pa.RecordBatchReader:
        return map_stream(reader, lambda batch: decode_images(batch, column, spec=spec, output_column=output_column))

    return _step_asset(name, upstream, version, description, step, asset_args)


def extract_text_asset(
    name: str,
    upstream: Upstream,
    *,
    column: str = "bytes",
    by: By = "file",
    output_column: str = "text",
    max_pages: int = 50,
    max_chars: int = 100_000,
    path_column: str | None = "path",
    ocr: bool = False,
    ocr_max_pixels: int = OCR_MAX_PIXELS,
    max_memory_mb: int = 2048,
    page_timeout_s: float = 60.0,
    **asset_args: Unpack[AssetArgs],
) -> dg.AssetsDefinition:
    """Text from the PDF / HTML / plain-text files in ``column``, within page and character limits (the kind is
    sniffed from the bytes, helped by the file name in ``path_column``); ``by="page"``: one row per page, with
    ``page_number``, without the bytes; ``ocr``: scanned pages (no text layer) read by OCR. What a limit cut is
    named in ``<output_column>_truncated``; PDFs are read in a child process of ``max_memory_mb`` with
    ``page_timeout_s`` a page (see ``extract_text``)."""
    version = fingerprint(kind="text", column=column, output=output_column, pages=max_pages, chars=max_chars,
                          path_column=path_column, **({"by": by} if by != "file" else {}),
                          **({"ocr": True} if ocr else {}),
                          **({"ocr_pixels": ocr_max_pixels} if ocr and ocr_max_pixels != OCR_MAX_PIXELS else {}))
    description = (f"Extracts the text of the PDF, HTML or text files in {column} into {output_column}"
                   f"{', one row per page' if by == 'page' else ''} (at most {max_pages} pages, {max_chars:,} "
                   "characters).")

    def step(reader: pa.RecordBatchReader) -> pa.RecordBatchReader:
        return map_stream(reader, lambda batch: extract_text(batch, column, by=by, output_column=output_column,
                                                             max_pages=max_pages, max_chars=max_chars,
                                                             path_column=path_column, ocr=ocr,
                                                             ocr_max_pixels=ocr_max_pixels,
                                                             max_memory_mb=max_memory_mb,
                                                             page_timeout_s=page_timeout_s))

    return _step_asset(name, upstream, version, description, step, asset_args)


def chunk_text_asset(
    name: str,
    upstream: Upstream,
    *,
    column: str = "text",
    size: int = 2048,
    overlap: int = 200,
    unit: Unit = "chars",
    tokenizer: str | None = None,
    output_column: str = "chunk",
    key_columns: Sequence[str] | None = None,
    keep_column: bool = False,
    **asset_args: Unpack[AssetArgs],
) -> dg.AssetsDefinition:
    """One row per chunk of ``column`` (``size`` / ``overlap`` in characters or tokens), with stable chunk ids and
    offsets; feed it to ``embed_asset(..., column="chunk")`` for a vector table.

        pages = extract_text_asset("pages", files, by="page")
        chunks = chunk_text_asset("chunks", pages, size=256, overlap=32, unit="tokens")
        vectors = embed_asset("chunk_vectors", chunks, column="chunk", io_manager_key="lancedb")
    """
    version = fingerprint(kind="chunks", column=column, size=size, overlap=overlap, unit=unit, tokenizer=tokenizer,
                          output=output_column, keys=list(key_columns) if key_columns is not None else None,
                          keep=keep_column)
    description = (f"Splits {column} into chunks of at most {size} {'tokens' if unit == 'tokens' else 'characters'}"
                   f" ({overlap} overlapping), one row each in {output_column}.")

    def step(reader: pa.RecordBatchReader) -> pa.RecordBatchReader:
        return map_stream(reader, lambda batch: chunk_text(batch, column, size=size, overlap=overlap, unit=unit,
                                                           tokenizer=tokenizer, output_column=output_column,
                                                           key_columns=key_columns, keep_column=keep_column))

    return _step_asset(name, upstream, version, description, step, asset_args)
