"""``download``: a URL / path column -> bytes, through the request engine (concurrency, retries, per-row errors).

Safety (server-side request forgery and local files), applied at every hop:

* Redirects are followed here, never by aiohttp (``allow_redirects=False``): each hop's URL is checked before it is
  requested, at most ``max_redirects`` hops, no loops, and no downgrade from https to http.
* An IP literal in any spelling (``2852039166``, ``0xA9FEA9FE``, ``[::ffff:169.254.169.254]``, 6to4, NAT64, ...) is
  normalised and checked before connecting (``ai_assets.functions.url_guard``); a host name is resolved by a guarded
  resolver that checks every address aiohttp may connect to, so DNS rebinding cannot slip past it.
* Link-local, cloud-metadata, unspecified and multicast addresses are always refused; by default
  (``allow_private=False``) everything not globally routable is refused too (private, loopback, shared, reserved).
* Every URL or hop that cannot be read (``http://[::1/``, ``http://x:99999/``, ``http://%zz/``) is that row's
  error: the other rows of the call keep their bytes. A ``Location`` is read strictly
  (``url_guard.redirect_target``): one without a host (``http:///nohost``, ``//``), with userinfo, a backslash or
  a control character, or over 8000 characters is refused, never followed as a path on the same host.
* Protocols are allow-listed (``http`` and ``https`` by default; object stores such as ``s3`` only when the policy
  names them), for every link of an fsspec chain; local files need ``allow_files=True``.
* Every object is streamed and the transfer is aborted as soon as it passes ``max_bytes``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from yarl import URL

from ai_assets.functions.templates import check_output_column, column_texts
from ai_assets.functions.url_guard import (
    HTTP_PROTOCOLS,
    MAX_URL_CHARS,
    check_address,
    check_host,
    check_protocols,
    redirect_target,
)
from ai_assets.runtime.columns import error_column
from ai_assets.runtime.engine import Connection, Job, Reply, RunOptions
from ai_assets.runtime.errors import AttemptUsage, PermanentError, TransientError, bounded
from ai_assets.runtime.http import read_capped
from ai_assets.runtime.pipeline import Pipeline
from ai_assets.runtime.ratelimit import RateLimit
from ai_assets.runtime.results import Enriched, EnrichedStream, Source
from ai_assets.runtime.run import run_pipeline
from ai_assets.runtime.task import OneRowJobs, Plan, Progress

if TYPE_CHECKING:  # aiohttp and fsspec are imported when a download runs
    import aiohttp

REDIRECTS = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True)
class DownloadPolicy:
    """What a download may touch and how much it may read.

    ``protocols``: the URL protocols allowed (add object stores such as ``"s3"``, ``"gs"``, ``"az"``);
    ``allow_files``: read local paths and ``file://`` URLs; ``allow_private``: reach private, loopback, shared and
    reserved addresses (refused by default; link-local and metadata addresses are refused regardless);
    ``max_redirects``: hops followed; ``storage_options``: passed to fsspec for object stores."""

    max_bytes: int = 20 * 1024 * 1024
    allow_files: bool = False
    allow_private: bool = False
    protocols: frozenset[str] = field(default_factory=lambda: HTTP_PROTOCOLS)
    max_redirects: int = 5
    storage_options: Mapping[str, Any] | None = None


def check_hop(url: URL, policy: DownloadPolicy) -> None:
    """Everything that can be refused about an http(s) URL before connecting to it."""
    shown = bounded(str(url), (), 120)
    if url.scheme not in HTTP_PROTOCOLS or url.scheme not in policy.protocols:
        raise PermanentError(f"refused: protocol {url.scheme!r} of {shown!r}")
    if not url.host:
        raise PermanentError(f"refused: {shown!r} has no host")
    if len(str(url)) > MAX_URL_CHARS:
        raise PermanentError(f"refused: {shown!r} is {len(str(url))} characters, over {MAX_URL_CHARS} "
                             "(RFC 9110 section 4.1)")
    check_host(url)
    check_address(url.host, allow_private=policy.allow_private)  # literals only; names go through the resolver


class _Downloader:
    secrets: Sequence[str] = ()

    def __init__(self, session: aiohttp.ClientSession, policy: DownloadPolicy) -> None:
        self.session = session
        self.policy = policy

    async def send(self, request: dict[str, Any]) -> Reply:
        import aiohttp

        url: str = request["url"]
        try:
            protocols = check_protocols(url, self.policy.protocols, allow_files=self.policy.allow_files)
            if protocols[0] in HTTP_PROTOCOLS:
                data = await self._http(URL(url))
            else:
                data = await asyncio.to_thread(self._fsspec, url)
        except (ValueError, UnicodeError) as exc:  # a URL or Location yarl / aiohttp cannot read (InvalidURL too)
            raise PermanentError(f"bad URL {bounded(url, (), 120)!r}: {type(exc).__name__}: {exc}") from exc
        except aiohttp.ClientError as exc:  # any other client failure (connection ones are retried in _http)
            raise TransientError(f"{type(exc).__name__} fetching {bounded(url, (), 120)!r}: {exc}") from exc
        return Reply(data, AttemptUsage())

    async def _http(self, url: URL) -> bytes:
        import aiohttp

        seen = {str(url)}
        for _ in range(self.policy.max_redirects + 1):
            check_hop(url, self.policy)
            try:
                async with self.session.get(url, allow_redirects=False) as response:
                    if response.status in REDIRECTS:
                        locations = response.headers.getall("location", [])
                        if len(locations) > 1:  # a singleton field (RFC 9110 section 5.3): clients differ on which
                            raise PermanentError(f"refused: redirect from {url} with {len(locations)} Locations")
                        url = self._next_hop(url, locations[0] if locations else None, seen)
                        continue
                    return await self._body(url, response)
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, ConnectionError) as exc:
                raise TransientError(f"{type(exc).__name__} fetching {url}: {exc}") from exc
            except aiohttp.ClientResponseError as exc:  # a head aiohttp cannot parse (a NUL, a field over 8190 bytes)
                raise PermanentError(f"refused: malformed response from {url}: {bounded(exc.message, (), 160)}"
                                     ) from exc
        raise PermanentError(f"refused: more than {self.policy.max_redirects} redirects from {str(url)!r}")

    @staticmethod
    def _next_hop(url: URL, location: str | None, seen: set[str]) -> URL:
        target = redirect_target(url, location)
        if url.scheme == "https" and target.scheme == "http":
            raise PermanentError(f"refused: redirect from https to http ({target})")
        if str(target) in seen:
            raise PermanentError(f"refused: redirect loop at {target}")
        seen.add(str(target))
        return target

    async def _body(self, url: URL, response: aiohttp.ClientResponse) -> bytes:
        if response.status == 429 or response.status >= 500:
            raise TransientError(f"HTTP {response.status} from {url}")
        if response.status >= 400:
            raise PermanentError(f"HTTP {response.status} from {url}")
        return await read_capped(response, self.policy.max_bytes, str(url), "max_bytes", PermanentError)

    def _fsspec(self, url: str) -> bytes:
        import fsspec

        try:
            fs, path = fsspec.core.url_to_fs(url, **dict(self.policy.storage_options or {}))
            size = fs.size(path)
            if size is not None and size > self.policy.max_bytes:
                raise PermanentError(f"{url} is {size} bytes, over max_bytes={self.policy.max_bytes}")
            with fs.open(path, "rb") as handle:
                data: bytes = handle.read(self.policy.max_bytes + 1)
        except FileNotFoundError as exc:
            raise PermanentError(f"no such file: {url}") from exc
        except OSError as exc:
            raise TransientError(f"{type(exc).__name__} reading {url}: {exc}") from exc
        if len(data) > self.policy.max_bytes:
            raise PermanentError(f"{url} passed max_bytes={self.policy.max_bytes}; aborted")
        return data


@asynccontextmanager
async def _connect(policy: DownloadPolicy, options: RunOptions) -> AsyncIterator[_Downloader]:
    import aiohttp

    from ai_assets.functions.download_resolver import GuardedResolver

    connector = aiohttp.TCPConnector(limit=options.concurrency, resolver=GuardedResolver(policy.allow_private))
    timeout = aiohttp.ClientTimeout(total=options.timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        yield _Downloader(session, policy)


class DownloadTask(OneRowJobs):
    """One GET (or object-store read) per distinct URL; no journal (bytes are not worth keeping twice)."""

    max_concurrency: int | None = None
    account: tuple[RateLimit, str] | None = None

    def __init__(self, column: str, output_column: str, policy: DownloadPolicy, options: RunOptions) -> None:
        self.column = column
        check_output_column(output_column, [column], type(self).__name__)
        self.output_column = output_column
        self.policy = policy
        self.options = options

    def plan(self, batch: pa.RecordBatch) -> Plan:
        urls, skips = column_texts(batch, self.column)
        return Plan(list(urls), skips, {url: url for url in urls if url is not None})

    def jobs(self, keys: Sequence[str], payloads: Mapping[str, Any]) -> list[Job]:
        return [Job(url, {"url": url}) for url in keys]

    def columns(self, values: list[Any], errors: list[str | None], *, final: bool) -> dict[str, pa.Array]:
        return {self.output_column: pa.array(values, pa.binary()),
                error_column(self.output_column): pa.array([None if e is None else bounded(e) for e in errors],
                                                        pa.string())}

    def connect(self) -> AbstractAsyncContextManager[Connection]:
        return _connect(self.policy, self.options)


def download(
    table: Source,
    column: str,
    *,
    output_column: str = "bytes",
    policy: DownloadPolicy | None = None,
    options: RunOptions | None = None,
    progress: Progress | None = None,
) -> Enriched | EnrichedStream:
    """Fetch every URL / path in ``column`` into a binary ``output_column`` (+ ``<output_column>_error``).

    A table gives a table back; a reader gives a stream, so a partition of many images holds only a window of
    their bytes at a time."""
    options = options or RunOptions(on_error="null", timeout_s=60)
    task = DownloadTask(column, output_column, policy or DownloadPolicy(), options)
    return run_pipeline(table, Pipeline(task, options, progress=progress))
