"""What a download may touch: address normalisation and the checks ``download`` applies at every hop.

Pure functions, no I/O, so every rule has a fast unit test:

* ``literal_addresses(host)`` reads every spelling of an IP literal a client or resolver would accept: dotted, integer
  (``2852039166``), octal (``0251.0376.0251.0376``), hex (``0xA9FEA9FE``), short forms (``169.254.43518``), IPv6 with
  an embedded IPv4 address (mapped ``::ffff:a.b.c.d``, compatible ``::a.b.c.d``, NAT64 ``64:ff9b::/96``, 6to4
  ``2002::/16``, Teredo). Every embedded address is checked as well as the outer one.
* ``check_address`` refuses link-local, cloud-metadata, unspecified and multicast addresses always, and everything
  that is not globally routable (private, loopback, shared, reserved) with ``allow_private=False``.
* ``url_links`` reads every link of an fsspec URL chain (``simplecache::file:///etc/hostname``) with fsspec's own
  parser, so the protocol rule applies to every link, not only the outermost one.
* ``redirect_target`` reads a redirect's ``Location`` (RFC 9110 section 10.2.2: a URI reference, resolved against
  the request's URL by RFC 3986 section 5) strictly, refusing what parsers disagree on: an http(s) URI without a
  host (``http:///nohost``, ``http:nohost``, ``//``; RFC 9110 section 4.2.1 says a recipient MUST reject it,
  where a lenient resolver reads it as a path on the same host), userinfo (``https://user@host/``; section 4.2.4:
  treat it as an error), control characters and backslashes (outside RFC 3986's characters; browsers read ``\\``
  as ``/``), other schemes, and a Location over ``MAX_URL_CHARS``.
* ``check_host`` refuses a host that is neither an IP literal nor a DNS name (``%zz``, ``a b``): the row's error
  at once, not a resolver failure retried.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from yarl import URL

from ai_assets.runtime.errors import PermanentError, bounded

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ALWAYS_BLOCKED = tuple(ipaddress.ip_network(n) for n in (
    "169.254.0.0/16",        # IPv4 link-local: the metadata service of AWS, GCP, Azure, OCI, DigitalOcean, ...
    "fe80::/10",             # IPv6 link-local
    "fd00:ec2::254/128",     # AWS metadata over IPv6
    "100.100.100.200/32",    # Alibaba Cloud metadata
    "0.0.0.0/8",             # "this network": 0.0.0.0 reaches the local host on Linux
    "::/128",                # unspecified
))
NAT64 = ipaddress.ip_network("64:ff9b::/96")
FILE_PROTOCOLS = frozenset({"file", "local"})
HTTP_PROTOCOLS = frozenset({"http", "https"})
MAX_URL_CHARS = 8000
"""The longest URL or Location followed: RFC 9110 section 4.1 asks every recipient to support 8000 octets."""
SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


def parse_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """An IPv4 address in any form ``inet_aton`` accepts (1 to 4 parts, each decimal, octal or hex), else None."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    numbers = []
    for part in parts:
        text = part.lower()
        try:
            if text.startswith("0x"):
                number = int(text[2:], 16) if len(text) > 2 else 0
            elif len(text) > 1 and text.startswith("0"):
                number = int(text[1:], 8)
            else:
                number = int(text, 10) if text.isdigit() else -1
        except ValueError:
            return None
        if number < 0:
            return None
        numbers.append(number)
    *leading, last = numbers
    if any(n > 0xFF for n in leading) or last >= 1 << (8 * (4 - len(leading))):
        return None
    value = last
    for index, number in enumerate(leading):
        value |= number << (24 - 8 * index)
    return ipaddress.IPv4Address(value)


def literal_addresses(host: str) -> list[IPAddress]:
    """The addresses an IP literal stands for (the outer one first, then any embedded IPv4); [] for a host name."""
    text = host.strip().removeprefix("[").removesuffix("]").rstrip(".")
    address: IPAddress | None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        address = parse_ipv4(text)
    if address is None:
        return []
    found: list[IPAddress] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        embedded = [address.ipv4_mapped, address.sixtofour, *(address.teredo or ())]
        packed = int(address)
        if address in NAT64 or (packed >> 32 == 0 and packed > 1):  # NAT64 and IPv4-compatible ::a.b.c.d
            embedded.append(ipaddress.IPv4Address(packed & 0xFFFFFFFF))
        found.extend(a for a in embedded if a is not None)
    return found


def _ipv6_literal(text: str) -> bool:
    """Whether ``text`` (inside ``[...]``) is an IPv6 address, with a zone (RFC 6874: ``%25`` then the zone)."""
    address, percent, zone = text.partition("%25")
    try:
        ipaddress.IPv6Address(address)
    except ValueError:
        return False
    return not percent or bool(zone)


def check_address(address: str, *, allow_private: bool) -> None:
    """Raise ``PermanentError`` (the row fails, never retried) for an address a download must not reach.

    ``address`` is an IP literal in any spelling; a host name is not checked here (the resolver checks what it
    resolves to)."""
    for ip in literal_addresses(address):
        if any(ip in network for network in ALWAYS_BLOCKED if network.version == ip.version) or ip.is_multicast:
            raise PermanentError(f"refused: {address} is a link-local, metadata or unspecified address")
        if not allow_private and not ip.is_global:
            raise PermanentError(f"refused: {address} is a private address (allow_private=False)")


def url_links(url: str) -> list[str]:
    """The protocol of every link of a URL, outermost first, as fsspec itself will read it.

    An http(s) URL is one link (``download`` fetches it itself, never through fsspec, and its host may hold
    ``::``). Anything else is parsed by fsspec's own chain parser, so the guard sees exactly the protocols fsspec
    will use; a URL it cannot parse is refused."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in HTTP_PROTOCOLS:
        return [scheme]
    from fsspec.core import _un_chain

    try:
        return [str(protocol) for _, protocol, _ in _un_chain(url, {})]
    except (ValueError, ImportError) as exc:  # an unknown protocol, or a backend that is not installed
        raise PermanentError(f"refused: cannot read the protocols of {url!r}: {exc}") from exc


def check_protocols(url: str, protocols: Iterable[str], *, allow_files: bool) -> list[str]:
    """The protocols of ``url``'s chain, after checking each against the allow-list.

    Local files need ``allow_files``; http(s) is only allowed alone (inside a chain it would reach the network
    through fsspec, around the address guard)."""
    allowed = {p.lower() for p in protocols}
    names = url_links(url)
    for protocol in names:
        if protocol in FILE_PROTOCOLS:
            if not allow_files:
                raise PermanentError(f"refused: local file in {url!r} (set allow_files=True to read local files)")
        elif protocol in HTTP_PROTOCOLS:
            if len(names) > 1:
                raise PermanentError(f"refused: {protocol} inside the URL chain {url!r}")
            if protocol not in allowed:
                raise PermanentError(f"refused: protocol {protocol!r} is not allowed (protocols={sorted(allowed)})")
        elif protocol not in allowed:
            raise PermanentError(f"refused: protocol {protocol!r} in {url!r} is not allowed "
                                 f"(DownloadPolicy(protocols=...) enables object stores such as 's3')")
    return names


def check_host(url: URL) -> None:
    """Refuse a URL whose host is neither an IP literal nor a DNS name (RFC 1123 labels of at most 63 characters,
    at most 253 in all; ``_`` allowed, as DNS records use it)."""
    host = url.raw_host or ""
    if literal_addresses(host):
        return
    labels = host.removesuffix(".").split(".")
    if not host or len(host) > 253 or not all(LABEL.fullmatch(label) for label in labels):
        raise PermanentError(f"refused: {bounded(host, (), 80)!r} in {bounded(str(url), (), 120)!r} is not a "
                             "host name or an IP address")


def redirect_target(url: URL, location: str | None) -> URL:
    """Where a redirect from ``url`` leads, read strictly (see the module's docstring); a ``PermanentError``
    naming the Location when it is missing, malformed or leaves http(s)."""
    if not location:
        raise PermanentError(f"redirect from {url} without a Location header")
    shown = bounded(location, (), 120)
    if len(location) > MAX_URL_CHARS:
        raise PermanentError(f"refused: redirect from {url} to a Location of {len(location)} characters, over "
                             f"{MAX_URL_CHARS} (RFC 9110 section 4.1)")
    bad = next((c for c in location if ord(c) < 0x20 or ord(c) == 0x7F or c == "\\"), None)
    if bad is not None:
        raise PermanentError(f"refused: redirect from {url} to a malformed Location {shown!r}: it holds {bad!r}, "
                             "which RFC 3986 does not allow in a URI")
    scheme = SCHEME.match(location)
    if scheme is not None and location[:scheme.end() - 1].lower() not in HTTP_PROTOCOLS:
        raise PermanentError(f"refused: redirect from {url} to protocol {location[:scheme.end() - 1]!r} ({shown!r})")
    rest = location[scheme.end():] if scheme is not None else location
    if scheme is not None and not rest.startswith("//"):
        raise PermanentError(f"refused: redirect from {url} to a malformed Location {shown!r}: an http(s) URI "
                             "needs '//' and a host (RFC 9110 section 4.2.1)")
    if rest.startswith("//"):
        authority = re.split(r"[/?#]", rest[2:], maxsplit=1)[0]
        if "@" in authority:
            raise PermanentError(f"refused: redirect from {url} to a Location with userinfo {shown!r} "
                                 "(RFC 9110 section 4.2.4: an error, it hides the real host)")
        host = authority.split("]")[0] + "]" if authority.startswith("[") else authority.split(":")[0]
        if host.startswith("[") and not _ipv6_literal(host[1:-1]):
            raise PermanentError(f"refused: redirect from {url} to a malformed Location {shown!r}: {host[:60]!r} "
                                 "is no IPv6 address (RFC 3986 section 3.2.2: an IP-literal; IPvFuture is not "
                                 "followed, as parsers read it as a host name)")
        if not host:
            raise PermanentError(f"refused: redirect from {url} to a malformed Location {shown!r}: the host is "
                                 "empty (RFC 9110 section 4.2.1: a recipient MUST reject it)")
    try:
        target = url.join(URL(location))
        target.port  # noqa: B018  (reads and checks the port: yarl accepts 99999 until asked)
    except (ValueError, UnicodeError) as exc:
        raise PermanentError(f"refused: redirect from {url} to a malformed Location {shown!r}: {exc}") from exc
    check_host(target)
    return target
