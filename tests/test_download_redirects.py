"""Redirects hold on first contact: a malformed ``Location`` is that row's error, never followed and never retried,
against a real server on 127.0.0.1 that counts every request it gets.

Modelled behaviour: RFC 9110 section 10.2.2 (``Location = URI-reference``, resolved against the request's URL by
RFC 3986 section 5); section 4.2.1 (an http(s) URI has ``//`` and a host, and "a recipient that processes such a
URI reference MUST reject it as invalid" when the host is empty); section 4.2.4 (userinfo from an untrusted source
is an error); section 4.1 (8000 octets is the URI length a recipient must support); section 5.3 (Location is a
singleton field). aiohttp refuses a response head with a NUL or a field over 8190 bytes, as RFC 9112 section 5
lets a recipient do: the response is malformed, and sending it again gets the same bytes.
"""

from __future__ import annotations

import socket
import threading
from collections import Counter
from collections.abc import Iterator

import pyarrow as pa
import pytest

from ai_assets import DownloadPolicy, RetryPolicy, RunOptions, download

BODY = b"the right bytes"
LOCATIONS: dict[str, bytes] = {
    "empty-host": b"http:///nohost",
    "no-slashes": b"http:nohost",
    "empty-network-path": b"//",
    "empty-host-with-port": b"http://:80/",
    "userinfo-no-host": b"https://user@/",
    "userinfo": b"http://user:pw@127.0.0.1/ok",
    "other-scheme": b"ftp://127.0.0.1/ok",
    "nul": b"http://a\x00b/",
    "control": b"/ok\x01",
    "backslashes": b"\\\\127.0.0.1/ok",
    "bad-host": b"http://%zz/",
    "over-8000": b"/" + b"a" * 8100,
    "over-aiohttp-field-limit": b"/" + b"a" * 9000,
}


class CountingServer:
    """Answers ``/r/<name>`` with a 302 to ``LOCATIONS[name]`` (raw bytes), ``/two`` with two Location fields,
    ``/relative`` and ``/network-path`` with good redirects to ``/ok``, and anything else with ``BODY``; counts the
    path of every request."""

    def __init__(self) -> None:
        self.seen: Counter[str] = Counter()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 65536:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                head += chunk
            path = head.split(b" ")[1].decode()
            self.seen[path] += 1
            if path.startswith("/r/") and path[3:] in LOCATIONS:
                fields = b"location: " + LOCATIONS[path[3:]] + b"\r\n"
            elif path == "/two":
                fields = b"location: /ok\r\nlocation: http://127.0.0.1:9/ok\r\n"
            elif path in ("/relative", "/network-path"):
                fields = b"location: " + (b"ok" if path == "/relative" else b"//127.0.0.1:%d/ok" % self.port) + b"\r\n"
            else:
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(BODY) + BODY)
                return
            conn.sendall(b"HTTP/1.1 302 Found\r\n" + fields + b"content-length: 0\r\nconnection: close\r\n\r\n")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture(scope="module")
def counting() -> Iterator[CountingServer]:
    server = CountingServer()
    yield server
    server.sock.close()


def test_every_malformed_location_is_its_rows_error_sent_once_and_never_followed(counting: CountingServer) -> None:
    names = sorted(LOCATIONS)
    urls = [counting.url("/ok"), *(counting.url(f"/r/{n}") for n in names), counting.url("/two")]
    counting.seen.clear()
    out = download(pa.table({"url": urls}), "url", policy=DownloadPolicy(allow_private=True),
                   options=RunOptions(on_error="null", timeout_s=5,
                                      retry=RetryPolicy(max_attempts=3, base_wait=0.01, max_wait=0.05)))
    values, errors = out.table.column("bytes").to_pylist(), out.table.column("bytes_error").to_pylist()
    assert values[0] == BODY and errors[0] is None
    for url, value, error in zip(urls[1:], values[1:], errors[1:], strict=True):
        assert value is None and error and "PermanentError: refused" in error, (url, error)
    assert counting.seen == Counter({"/ok": 1, "/two": 1, **{f"/r/{n}": 1 for n in names}})  # nothing followed
    assert "/nohost" not in counting.seen


def test_a_good_redirect_is_still_followed(counting: CountingServer) -> None:
    counting.seen.clear()
    out = download(pa.table({"url": [counting.url("/relative"), counting.url("/network-path")]}), "url",
                   policy=DownloadPolicy(allow_private=True), options=RunOptions(on_error="null", timeout_s=5))
    assert out.table.column("bytes").to_pylist() == [BODY, BODY]
    assert counting.seen == Counter({"/relative": 1, "/network-path": 1, "/ok": 2})
