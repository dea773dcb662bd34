"""The download guard, inside a network namespace of its own (run by ``tests/test_download_guard.py``).

The namespace has only a loopback interface, on which the test puts the addresses a guard must refuse
(169.254.169.254, fd00:ec2::254, 10.0.0.5) with a trap listening on each, plus one "public" address (1.2.3.4)
serving http and https, with redirects to wherever a test asks. Host names come from a private /etc/hosts bind-mounted
in the namespace's own mount table. A failing guard can reach nothing outside, and the traps count any connection
it makes inside: every refusal below also asserts that no trap was connected.
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, quote, urlparse

import pyarrow as pa
import pytest

from ai_assets import DownloadPolicy, RunOptions, download

pytestmark = pytest.mark.skipif(os.environ.get("AI_ASSETS_NETNS") != "1",
                                reason="runs only inside its own network namespace (tests/test_download_guard.py)")

PUBLIC = "1.2.3.4"
TRAPS = [("169.254.169.254", 80), ("10.0.0.5", 80), ("fd00:ec2::254", 80), ("127.0.0.1", 80)]
HOSTS = f"""127.0.0.1 localhost
{PUBLIC} public.test
169.254.169.254 metadata.test
::ffff:169.254.169.254 mapped.test
10.0.0.5 private.test
"""
BODY = b"hello from the public server"


class _Public(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        url = urlparse(self.path)
        if url.path == "/ok":
            self.send_response(200)
            self.send_header("content-length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY)
            return
        if url.path == "/redirect":
            target = parse_qs(url.query)["to"][0]
        elif url.path in ("/loop", "/loop2"):
            target = "/loop2" if url.path == "/loop" else "/loop"
        elif url.path.startswith("/hops/"):
            left = int(url.path.rsplit("/", 1)[1])
            target = f"/hops/{left - 1}" if left > 0 else "/ok"
        else:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(302)
        self.send_header("location", target)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


class _Trap:
    """A listener that counts every connection made to it."""

    connections: ClassVar[list[tuple[str, int]]] = []

    def __init__(self, host: str, port: int) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(16)
        self.where = (host, port)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            conn, _ = self.sock.accept()
            _Trap.connections.append(self.where)
            conn.close()


def _sh(*args: str) -> None:
    subprocess.run(args, check=True)


@pytest.fixture(scope="module", autouse=True)
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    folder = tmp_path_factory.mktemp("netns")
    _sh("ip", "link", "set", "lo", "up")
    for address in ("169.254.169.254/32", "10.0.0.5/32", f"{PUBLIC}/32"):
        _sh("ip", "addr", "add", address, "dev", "lo")
    _sh("ip", "-6", "addr", "add", "fd00:ec2::254/128", "dev", "lo", "nodad")
    hosts = folder / "hosts"
    hosts.write_text(HOSTS)
    _sh("mount", "--bind", str(hosts), "/etc/hosts")
    for host, port in TRAPS:
        _Trap(host, port)
    plain = ThreadingHTTPServer((PUBLIC, 80), _Public)
    secure = ThreadingHTTPServer((PUBLIC, 443), _Public)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(os.environ["AI_ASSETS_NETNS_CERT"], os.environ["AI_ASSETS_NETNS_KEY"])
    secure.socket = context.wrap_socket(secure.socket, server_side=True)
    for server in (plain, secure):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield
    plain.shutdown()
    secure.shutdown()


POLICIES = {"default": DownloadPolicy(), "private-allowed": DownloadPolicy(allow_private=True)}


def fetch(url: str, policy: DownloadPolicy) -> tuple[bytes | None, str | None]:
    out = download(pa.table({"url": [url]}), "url", policy=policy, options=RunOptions(on_error="null", timeout_s=5))
    return out.table.column("bytes")[0].as_py(), out.table.column("bytes_error")[0].as_py()


def refused(url: str, policy: DownloadPolicy, reason: str) -> None:
    before = len(_Trap.connections)
    value, error = fetch(url, policy)
    assert value is None, f"{url} was fetched"
    assert error is not None and "refused" in error and reason in error, f"{url}: {error}"
    assert len(_Trap.connections) == before, f"{url} connected to a trap: {_Trap.connections[before:]}"


def via_redirect(target: str, scheme: str = "http") -> str:
    return f"{scheme}://public.test/redirect?to={target}"


METADATA_SPELLINGS = [
    "http://169.254.169.254/latest/meta-data/",
    "http://[::ffff:169.254.169.254]/",
    "http://[::ffff:a9fe:a9fe]/",
    "http://[::169.254.169.254]/",
    "http://[2002:a9fe:a9fe::1]/",
    "http://[64:ff9b::a9fe:a9fe]/",
    "http://2852039166/",
    "http://0xA9FEA9FE/",
    "http://0251.0376.0251.0376/",
    "http://169.254.43518/",
    "http://169.254.169.254./",
    "http://[fd00:ec2::254]/",
    "http://0.0.0.0/",
    "http://metadata.test/",
    "http://mapped.test/",
]


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("url", METADATA_SPELLINGS)
def test_metadata_addresses_are_refused_directly_and_after_a_redirect(policy: str, url: str) -> None:
    refused(url, POLICIES[policy], "refused")
    refused(via_redirect(url), POLICIES[policy], "refused")
    refused(via_redirect(url, "https"), POLICIES[policy], "refused")


@pytest.mark.parametrize("url", ["http://10.0.0.5/", "http://private.test/", "http://127.0.0.1/",
                                 "http://localhost/", "http://2130706433/", "http://[::ffff:10.0.0.5]/"])
def test_private_addresses_are_refused_by_default(url: str) -> None:
    refused(url, DownloadPolicy(), "private address")
    refused(via_redirect(url), DownloadPolicy(), "private address")


@pytest.mark.parametrize("policy", POLICIES)
def test_redirect_loops_downgrades_and_long_chains_are_refused(policy: str) -> None:
    refused("http://public.test/loop", POLICIES[policy], "redirect loop")
    refused(via_redirect("http://public.test/ok", "https"), POLICIES[policy], "https to http")
    refused("http://public.test/hops/9", POLICIES[policy], "more than 5 redirects")


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("url", ["simplecache::file:///etc/hostname", "file:///etc/hostname", "/etc/hostname",
                                 "blockcache::http://169.254.169.254/", "memory://secret", "local:///etc/hostname",
                                 "filecache::s3://bucket/key"])
def test_local_files_and_unlisted_protocols_are_refused(policy: str, url: str) -> None:
    refused(url, POLICIES[policy], "refused")


@pytest.mark.parametrize("policy", POLICIES)
def test_public_urls_still_download(policy: str) -> None:
    for url in ("http://public.test/ok", f"http://{PUBLIC}/ok", "https://public.test/ok", "http://public.test/hops/4",
                via_redirect("https://public.test/ok", "https")):
        value, error = fetch(url, POLICIES[policy])
        assert (value, error) == (BODY, None), url
    assert _Trap.connections == []


def test_allow_private_reaches_private_hosts() -> None:
    value, error = fetch("http://private.test/", POLICIES["private-allowed"])
    assert value is None and "refused" not in (error or "")  # the trap accepts and hangs up: not the guard
    assert _Trap.connections and set(_Trap.connections) == {("10.0.0.5", 80)}
    _Trap.connections.clear()


MALFORMED = ["http://a:b/", "http://[::1/", "http://x:99999/", "http:///nohost", "http://127.1:9/", "http://[]/",
             "http://%zz/", "ht!tp://x/", "http://\u0000/"]


@pytest.mark.parametrize("policy", POLICIES)
def test_every_malformed_url_or_redirect_is_its_rows_error_and_the_good_rows_keep_their_bytes(policy: str) -> None:
    urls = ["http://public.test/ok", *MALFORMED, *(via_redirect(quote(u, safe="")) for u in MALFORMED),
            "https://public.test/ok"]
    out = download(pa.table({"url": urls}), "url", policy=POLICIES[policy],
                   options=RunOptions(on_error="null", timeout_s=5))
    values, errors = out.table.column("bytes").to_pylist(), out.table.column("bytes_error").to_pylist()
    assert values[0] == values[-1] == BODY
    for url, value, error in zip(urls[1:-1], values[1:-1], errors[1:-1], strict=True):
        assert value is None and error, url
    assert [c for c in _Trap.connections if c != ("127.0.0.1", 9)] == []


def test_the_namespace_is_sealed() -> None:
    assert Path("/etc/hosts").read_text() == HOSTS
    with pytest.raises(OSError):
        socket.create_connection(("8.8.8.8", 53), timeout=1)
