"""Address normalisation and the protocol rules of the download guard (pure functions, no network)."""

from __future__ import annotations

import ipaddress
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from yarl import URL

from ai_assets.functions.url_guard import (
    check_address,
    check_host,
    check_protocols,
    literal_addresses,
    parse_ipv4,
    redirect_target,
    url_links,
)
from ai_assets.runtime.errors import PermanentError

METADATA = ipaddress.ip_address("169.254.169.254")


@pytest.mark.parametrize("spelling", ["169.254.169.254", "2852039166", "0xA9FEA9FE", "0xa9fea9fe",
                                      "0251.0376.0251.0376", "169.254.43518", "169.16689662", "0xa9.0xfe.0xa9.0xfe",
                                      "0251.254.169.0376"])
def test_every_inet_aton_spelling_of_the_metadata_address(spelling: str) -> None:
    assert parse_ipv4(spelling) == METADATA


@pytest.mark.parametrize("text", ["example.com", "1.2.3.4.5", "256.1.1.1", "1.2.3.256", "08.1.1.1", "-1",
                                  "", "1..2", "4294967296"])
def test_non_addresses_are_not_parsed(text: str) -> None:
    assert parse_ipv4(text) is None


@pytest.mark.parametrize("host", ["::ffff:169.254.169.254", "[::ffff:a9fe:a9fe]", "::169.254.169.254",
                                  "2002:a9fe:a9fe::1", "64:ff9b::a9fe:a9fe", "169.254.169.254."])
def test_embedded_ipv4_addresses_are_found(host: str) -> None:
    assert METADATA in literal_addresses(host)


def test_teredo_client_address_is_found() -> None:
    # Teredo carries the client's IPv4 address inverted in the last 32 bits.
    inverted = int(METADATA) ^ 0xFFFFFFFF
    teredo = ipaddress.IPv6Address((0x20010000 << 96) | inverted)
    assert METADATA in literal_addresses(str(teredo))


def test_host_names_are_left_to_the_resolver() -> None:
    assert literal_addresses("metadata.google.internal") == []


@pytest.mark.parametrize("address", ["169.254.169.254", "2852039166", "[::ffff:169.254.169.254]", "fe80::1",
                                     "fd00:ec2::254", "100.100.100.200", "0.0.0.0", "0", "::", "224.0.0.1",
                                     "2002:a9fe:a9fe::"])
@pytest.mark.parametrize("allow_private", [True, False])
def test_link_local_metadata_and_unspecified_are_always_refused(address: str, allow_private: bool) -> None:
    with pytest.raises(PermanentError, match="refused"):
        check_address(address, allow_private=allow_private)


@pytest.mark.parametrize("address", ["10.0.0.1", "127.0.0.1", "2130706433", "::1", "192.168.1.1", "100.64.0.1",
                                     "::ffff:10.0.0.1", "fd12::1", "172.16.0.1"])
def test_private_addresses_depend_on_the_policy(address: str) -> None:
    check_address(address, allow_private=True)
    with pytest.raises(PermanentError, match="private address"):
        check_address(address, allow_private=False)


@pytest.mark.parametrize("address", ["1.2.3.4", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    check_address(address, allow_private=False)


def test_url_chains_are_read_as_fsspec_reads_them() -> None:
    assert url_links("simplecache::file:///etc/hostname") == ["simplecache", "file"]
    assert url_links("zip://a::s3://b/f.zip") == ["zip", "s3"]
    assert url_links("/etc/hostname") == ["file"]
    assert url_links("http://[::1]/a::b") == ["http"]


@pytest.mark.parametrize("url", ["simplecache::file:///etc/hostname", "file:///etc/hostname", "/etc/hostname",
                                 "local:///etc/hostname", "blockcache::http://x/", "memory://x", "s3://bucket/key",
                                 "ftp://host/file", "nosuch::x"])
def test_protocols_outside_the_allow_list_are_refused(url: str) -> None:
    with pytest.raises(PermanentError, match="refused"):
        check_protocols(url, {"http", "https"}, allow_files=False)


def test_enabled_protocols_and_files_pass() -> None:
    assert check_protocols("s3://bucket/key", {"http", "https", "s3"}, allow_files=False) == ["s3"]
    assert check_protocols("/tmp/x.png", {"http"}, allow_files=True) == ["file"]
    with pytest.raises(PermanentError, match="local file"):
        check_protocols("simplecache::file:///etc/hostname", {"simplecache"}, allow_files=False)


# -- redirects: a Location is read strictly (RFC 9110 section 10.2.2, RFC 3986 section 5) -------------------------
BASE = URL("http://public.test/dir/redirect?to=x")
MALFORMED_LOCATIONS = {
    "http:///nohost": "host is empty",     # RFC 9110 4.2.1: an http URI with an empty host MUST be rejected
    "https:///": "host is empty",
    "//": "host is empty",                 # a network-path reference with an empty authority
    "///x": "host is empty",
    "http://:80/": "host is empty",
    "http:nohost": "needs '//'",           # RFC 9110 4.2.1: http-URI = "http" "://" authority ...
    "https:/x": "needs '//'",
    "https://user@/": "userinfo",          # RFC 9110 4.2.4: userinfo from an untrusted source is an error
    "http://user:pw@public.test/": "userinfo",
    "ftp://x/": "protocol 'ftp'",
    "javascript:alert(1)": "protocol 'javascript'",
    "file:///etc/passwd": "protocol 'file'",
    "data:text/plain,hi": "protocol 'data'",
    "/ok\x00": "'\\x00'",                  # control characters are outside RFC 3986's characters
    "/ok\r\nSet-Cookie: a=b": "'\\r'",
    "/a\tb": "'\\t'",
    "/ok\x7f": "'\\x7f'",
    "\\\\evil.test/x": "'\\\\'",           # a backslash: browsers (WHATWG URL) read it as '/', RFC 3986 refuses it
    "/\\evil.test": "'\\\\'",
    "http:\\\\evil.test": "'\\\\'",
    "http://x:99999/": "out of range",
    "http://[::1/": "Invalid IPv6",
    "http://%zz/": "not a host name",
    "http://a b/": "not a host name",
    "http://" + "a" * 64 + ".test/": "not a host name",  # a DNS label is at most 63 characters (RFC 1035)
    "/" + "a" * 8000: "over 8000",         # RFC 9110 4.1: 8000 octets is what a recipient must support
    "": "without a Location",
}


@pytest.mark.parametrize("location", MALFORMED_LOCATIONS)
def test_a_malformed_location_is_refused_with_the_reason(location: str) -> None:
    with pytest.raises(PermanentError, match=re.escape(MALFORMED_LOCATIONS[location])):
        redirect_target(BASE, location)


@pytest.mark.parametrize(("location", "expected"), [
    ("/ok", "http://public.test/ok"),
    ("ok", "http://public.test/dir/ok"),
    ("../up", "http://public.test/up"),
    ("?q=1", "http://public.test/dir/redirect?q=1"),
    ("//cdn.test/img.png", "http://cdn.test/img.png"),
    ("https://cdn.test:8443/a?b=c", "https://cdn.test:8443/a?b=c"),
    ("HTTPS://CDN.test/A", "https://cdn.test/A"),
    ("http://[2606:4700::1111]/x", "http://[2606:4700::1111]/x"),
    ("http://bücher.test/", "http://xn--bcher-kva.test/"),
    ("/my photo.jpg", "http://public.test/my%20photo.jpg"),
    ("http://_dmarc.example.test./", "http://_dmarc.example.test./"),
])
def test_a_well_formed_location_resolves_as_rfc_3986_says(location: str, expected: str) -> None:
    assert str(redirect_target(BASE, location)) == expected


@given(st.text(max_size=120))
def test_any_location_gives_an_http_url_with_a_host_or_a_permanent_error(location: str) -> None:
    try:
        target = redirect_target(BASE, location)
    except PermanentError:
        return
    assert target.scheme in ("http", "https") and target.raw_host
    assert "@" not in (target.raw_authority or "") and target.port is not None


@pytest.mark.parametrize("host", ["%zz", "a b", "a..b", "-a.test", "a-.test", "a" * 254])
def test_check_host_refuses_what_is_not_a_host(host: str) -> None:
    with pytest.raises(PermanentError, match="not a host name"):
        check_host(URL.build(scheme="http", host=host, encoded=True))
