"""Factories for ingest and preprocess assets."""


from collections.abc import Callable, Mapping, Sequence
from typing import Any, Unpack

import dagster as dg
import pyarrow as pa

from ai_assets.dagster.common import AssetArgs, asset_kwargs, fingerprint, partition_fields, upstream_key
from ai_assets.functions.download import DownloadPolicy, download
from ai_assets.functions.files import extract_text
from ai_assets.functions.images import ImageSpec, decode_images
from ai_assets.functions.ingest import Format, read_source, resolve_path
from ai_assets.functions.preprocess import Extract, preprocess
from ai_assets.runtime.engine import RunOptions
from ai_assets.runtime.pipeline import Enriched
from ai_assets.storage.base import with_partition


def ingest_asset(
    name: str,
    *,
    path: str,
    format: Format | None = None,
    columns: Sequence[str] | None = None,
    limit: int | None = None,
    storage_options: Mapping[str, Any] | None = None,
    **asset_args: Unpack[AssetArgs],
) -> dg.AssetsDefinition:
    """An asset that reads files for its partition: ``path`` may name ``{partition}`` or, for multi-partitions,
    each dimension (``data/{region}/{date}.csv``), and may be a glob. ``format="files"`` (the default for a glob
    with no data suffix) gives (path, bytes, size) rows, e.g. for images or PDFs.

        reviews = ingest_asset("raw_reviews", path="data/reviews/{partition}.jsonl",
                               partitions_def=dg.DailyPartitionsDefinition("2024-11-01"))
        dg.Definitions(assets=[reviews], resources={"io_manager": ParquetIOManager(root="out")})
    """

    @dg.asset(name=name, code_version=fingerprint(path=path, format=format, columns=columns, limit=limit),
              kinds={"python"}, **asset_kwargs(asset_args))
    def _ingest(context: dg.AssetExecutionContext) -> pa.Table:
        partitions = partition_fields(context)
        if not partitions:
            return read_source(path, format=format, columns=columns, limit=limit, storage_options=storage_options)
        tables = []
        for key, fields in partitions:
            source = resolve_path(path, fields)
            try:
                table = read_source(source, format=format, columns=columns, limit=limit,
                                    storage_options=storage_options)
            except FileNotFoundError as exc:
                raise FileNotFoundError(f"partition {key!r}: {exc}") from exc
            context.log.info(f"partition {key}: {table.num_rows} rows from {source}")
            tables.append(with_partition(table, key))
        return pa.concat_tables(tables, promote_options="permissive")

    return _ingest


def preprocess_asset(
    name: str,
    upstream: dg.AssetsDefinition | dg.AssetKey | str,
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

    @dg.asset(name=name, ins={"upstream": dg.AssetIn(upstream_key(upstream))}, code_version=version,
              kinds={"python"}, **asset_kwargs(asset_args))
    def _preprocess(context: dg.AssetExecutionContext, upstream: pa.Table) -> dg.Output[pa.Table]:
        table = preprocess(upstream, drop_missing=drop_missing, extract=extract, derive=derive)
        dropped = upstream.num_rows - table.num_rows
        if dropped:
            context.log.info(f"dropped {dropped} of {upstream.num_rows} rows missing {list(drop_missing)}")
        return dg.Output(table, metadata={"rows_in": upstream.num_rows, "rows_dropped": dropped})

    return _preprocess


def _table_step(name: str, upstream: dg.AssetsDefinition | dg.AssetKey | str, version: str,
                step: Callable[[pa.Table], pa.Table], error_column: str,
                asset_args: AssetArgs) -> dg.AssetsDefinition:
    """An asset applying a row-wise plain-Python step and reporting how many rows it could not process."""

    @dg.asset(name=name, ins={"upstream": dg.AssetIn(upstream_key(upstream))}, code_version=version,
              kinds={"python"}, **asset_kwargs(asset_args))
    def _step(context: dg.AssetExecutionContext, upstream: pa.Table) -> dg.Output[pa.Table]:
        table = step(upstream)
        failed = table.num_rows - table.column(error_column).null_count
        if failed:
            context.log.warning(f"{name}: {failed} of {table.num_rows} rows failed (see {error_column})")
        return dg.Output(table, metadata={"rows_with_errors": failed})

    return _step


def download_asset(
    name: str,
    upstream: dg.AssetsDefinition | dg.AssetKey | str,
    *,
    column: str,
    output_column: str = "bytes",
    policy: DownloadPolicy | None = None,
    options: RunOptions | None = None,
    **asset_args: Unpack[AssetArgs],
) -> dg.AssetsDefinition:
    """Fetch the URL / path in ``column`` (http(s), object stores; local files only if the policy allows them)
    into ``output_column`` bytes, with a size cap, retries and a guard against internal addresses."""
    policy = policy or DownloadPolicy()
    version = fingerprint(kind="download", column=column, output=output_column, policy=vars(policy))

    def step(table: pa.Table) -> pa.Table:
        result = download(table, column, output_column=output_column, policy=policy, options=options)
        assert isinstance(result, Enriched)
        return result.table

    return _table_step(name, upstream, version, step, f"{output_column}_error", asset_args)


def decode_images_asset(
    name: str,
    upstream: dg.AssetsDefinition | dg.AssetKey | str,
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

    def step(table: pa.Table) -> pa.Table:
        return decode_images(table, column, spec=spec, output_column=output_column)

    return _table_step(name, upstream, version, step, f"{output_column}_error", asset_args)


def extract_text_asset(
    name: str,
    upstream: dg.AssetsDefinition | dg.AssetKey | str,
    *,
    column: str = "bytes",
    output_column: str = "text",
    max_pages: int = 50,
    max_chars: int = 100_000,
    **asset_args: Unpack[AssetArgs],
) -> dg.AssetsDefinition:
    """Text from the PDF / HTML / plain-text files in ``column``, within page and character limits."""
    version = fingerprint(kind="text", column=column, output=output_column, pages=max_pages, chars=max_chars)

    def step(table: pa.Table) -> pa.Table:
        return extract_text(table, column, output_column=output_column, max_pages=max_pages, max_chars=max_chars)

    return _table_step(name, upstream, version, step, f"{output_column}_error", asset_args)
