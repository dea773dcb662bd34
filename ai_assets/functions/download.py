"""``download``: a URL / path column -> bytes, through the request engine (concurrency, retries, per-row errors).

Safety:
* Server-side request forgery: every host name is resolved by a guarded resolver that refuses link-local and
  cloud-metadata addresses (169.254.0.0/16, fe80::/10, fd00:ec2::254, 100.100.100.200, 0.0.0.0) and, with
  ``allow_private=False``, private and loopback ranges too. aiohttp connects only to the addresses that resolver
  returned, and redirects go through it again, so DNS rebinding cannot slip past it.
* ``file://`` URLs and plain paths are refused unless ``allow_files=True``.
* Every object is streamed and the transfer is aborted as soon as it passes ``max_bytes``.
Object-store URIs (``s3://``, ``gs://``, ``az://``, ...) go through fsspec.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import aiohttp
import fsspec
import pyarrow as pa
from aiohttp.abc import AbstractResolver, ResolveResult

from ai_assets.functions._execution import Enriched, Record, append_columns, execute, run_sync, send_jobs
from ai_assets.functions.templates import column_texts
from ai_assets.runtime.engine import Job, Reply, RunOptions
from ai_assets.runtime.errors import AttemptUsage, PermanentError, TransientError, bounded
from ai_assets.runtime.usage import Usage

BLOCKED_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128", "100.100.100.200/32", "0.0.0.0/32", "::/128"))
HTTP_SCHEMES = ("http", "https")
CHUNK = 64 * 1024


@dataclass(frozen=True)
class DownloadPolicy:
    """What a download may touch and how much it may read."""

    max_bytes: int = 20 * 1024 * 1024
    allow_files: bool = False
    allow_private: bool = True
    storage_options: Mapping[str, Any] | None = None


def check_address(address: str, policy: DownloadPolicy) -> None:
    ip = ipaddress.ip_address(address)
    if any(ip in network for network in BLOCKED_NETWORKS):
        raise PermanentError(f"refused: {address} is a link-local or metadata address")
    if not policy.allow_private and (ip.is_private or ip.is_loopback):
        raise PermanentError(f"refused: {address} is a private address (allow_private=False)")


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver, with every answer checked before a connection may use it."""

    def __init__(self, policy: DownloadPolicy) -> None:
        self._inner = aiohttp.ThreadedResolver()
        self._policy = policy

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        answers = await self._inner.resolve(host, port, family)
        for answer in answers:
            check_address(answer["host"], self._policy)
        return answers

    async def close(self) -> None:
        await self._inner.close()


class _Downloader:
    secrets: Sequence[str] = ()

    def __init__(self, session: aiohttp.ClientSession, policy: DownloadPolicy) -> None:
        self.session = session
        self.policy = policy

    async def send(self, request: dict[str, Any]) -> Reply:
        url: str = request["url"]
        scheme = urlparse(url).scheme.lower()
        if scheme in HTTP_SCHEMES:
            data = await self._http(url)
        elif scheme in ("", "file") and not self.policy.allow_files:
            raise PermanentError(f"refused: local file {url!r} (set allow_files=True to read local files)")
        else:
            data = await asyncio.to_thread(self._fsspec, url)
        return Reply(data, AttemptUsage())

    async def _http(self, url: str) -> bytes:
        host = urlparse(url).hostname or ""
        with contextlib.suppress(ValueError):  # a host name: the resolver checks its addresses
            check_address(host, self.policy)  # a literal IP never reaches the resolver
        try:
            async with self.session.get(url) as response:
                if response.status == 429 or response.status >= 500:
                    raise TransientError(f"HTTP {response.status} from {url}")
                if response.status >= 400:
                    raise PermanentError(f"HTTP {response.status} from {url}")
                declared = response.content_length
                if declared is not None and declared > self.policy.max_bytes:
                    raise PermanentError(f"{url} is {declared} bytes, over max_bytes={self.policy.max_bytes}")
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.content.iter_chunked(CHUNK):
                    size += len(chunk)
                    if size > self.policy.max_bytes:
                        raise PermanentError(f"{url} passed max_bytes={self.policy.max_bytes}; aborted")
                    chunks.append(chunk)
                return b"".join(chunks)
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, ConnectionError) as exc:
            raise TransientError(f"{type(exc).__name__} fetching {url}: {exc}") from exc

    def _fsspec(self, url: str) -> bytes:
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
    connector = aiohttp.TCPConnector(limit=options.concurrency, resolver=GuardedResolver(policy))
    timeout = aiohttp.ClientTimeout(total=options.timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        yield _Downloader(session, policy)


def download(
    table: pa.Table,
    column: str,
    *,
    output_column: str = "bytes",
    policy: DownloadPolicy | None = None,
    options: RunOptions | None = None,
) -> Enriched:
    """Fetch every URL / path in ``column`` into a binary ``output_column`` (+ ``<output_column>_error``)."""
    policy = policy or DownloadPolicy()
    options = options or RunOptions(on_error="null", timeout_s=60)
    urls, reasons = column_texts(table, column)
    usage = Usage()

    async def send(missing: list[str], record: Record) -> None:
        jobs = [Job(url, {"url": url}, 0) for url in missing]
        await send_jobs(jobs, lambda: _connect(policy, options), options, usage, record)

    results = run_sync(lambda: execute(urls, reasons, send, options.on_error, None, usage))
    errors = [None if e is None else bounded(e) for e in results.errors]
    return Enriched(append_columns(table, output_column, pa.array(results.values, pa.binary()), errors), usage)
