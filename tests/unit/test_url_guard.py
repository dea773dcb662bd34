"""Address normalisation and the protocol rules of the download guard (pure functions, no network)."""

from __future__ import annotations

import ipaddress

import pytest

from ai_assets.functions.url_guard import check_address, check_protocols, literal_addresses, parse_ipv4, url_links
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
