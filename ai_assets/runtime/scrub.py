"""Secrets out of error text: every secret, and every piece of one, is masked before the text is cut.

A provider's error body may echo the API key: whole (a proxy or gateway that prints the request back), masked
(OpenAI's 401 says ``Incorrect API key provided: sk-ab******wxyz``), or already cut by whoever built the text
(pydantic shows a long input as ``'abc...xyz'``). Cutting first and masking after would leave the piece before the
cut. So ``scrub_and_cut`` masks, in one pass that reads ahead of the cut:

* every run of at least ``MIN_FRAGMENT`` characters of a secret, wherever it is;
* every run of at least ``EDGE_FRAGMENT`` characters of a secret next to an edge: the text's start or end, a mask,
  or a cut marker (``*``, ``…``, ``.``), where a cut or a mask made elsewhere leaves a key's head or tail;
* a piece of ``EDGE_FRAGMENT`` or more that its own cut would leave at the end.

A secret is masked in the forms it travels in as well (``encoded_forms``): percent-encoded (a key in a query string
or a form body, RFC 3986 section 2.1), JSON-escaped (``\\/`` as PHP and some gateways write it, RFC 8259 section 7)
and base64 at each of the three alignments it can take after a prefix (an echoed ``Authorization: Basic`` header,
RFC 7617: ``base64(user ":" key)``), so an echo of the encoded key is masked like the key itself.

A secret shorter than ``MIN_FRAGMENT`` is masked only whole, and only where no letter or digit touches it (a toy
key ``"k"`` must not turn ``tokens`` into ``to***ens``). ``remember_secrets`` registers secrets (a provider's API
key, when its endpoint is built) that every later call masks as well, so text built on a path that never held
the key (a Batch API error file, an SDK exception, a dead letter) is masked too. Like Airflow's ``mask_secret``
(which skips short values), only secrets of ``MIN_REMEMBERED`` characters or more are remembered: the API keys of
the vendors we know are 32 or more (Mistral and Azure 32, Google 39, OpenAI 51 and up), and a toy key such as
``"k"`` or ``"sk-test"`` must not mask pieces of every message of the process.
"""

from __future__ import annotations

import base64
import functools
import json
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

MASK = "***"
MIN_FRAGMENT = 6
EDGE_FRAGMENT = 4
MIN_REMEMBERED = 20
EDGES = frozenset("*….")
SCAN_LIMIT = 1 << 20
"""Characters of a text read at most (a body of megabytes holds the first error line long before). Pieces are looked
for only up to the cut, so the time a text takes grows with ``limit``, not with the text or the number of secrets."""

MAX_REMEMBERED = 64
"""Secrets remembered at most, the most recently registered (a process rarely holds more than a few keys)."""

_remembered: dict[str, None] = {}  # an ordered set, oldest first


def remember_secrets(secrets: Iterable[str]) -> None:
    """Mask these secrets in every error text from now on, whichever code path builds it."""
    for secret in secrets:
        if len(secret) >= MIN_REMEMBERED:
            _remembered.pop(secret, None)
            _remembered[secret] = None
    for oldest in list(_remembered)[:-MAX_REMEMBERED]:
        _remembered.pop(oldest, None)


class _Pieces:
    """The pieces of a set of secrets that are masked: each whole, and (for secrets of ``MIN_FRAGMENT`` or more)
    every substring of ``EDGE_FRAGMENT`` to ``MIN_FRAGMENT`` characters, by length."""

    def __init__(self, secrets: frozenset[str]) -> None:
        forms = secrets.union(*(encoded_forms(s) for s in secrets))
        self.whole = sorted(forms, key=len, reverse=True)
        long = [s for s in forms if len(s) >= MIN_FRAGMENT]
        self.grams = {size: frozenset(s[i:i + size] for s in long for i in range(len(s) - size + 1))
                      for size in range(EDGE_FRAGMENT, MIN_FRAGMENT + 1)}

    @staticmethod
    @functools.lru_cache(maxsize=64)
    def short(secret: str) -> re.Pattern[str]:
        """A secret under ``MIN_FRAGMENT`` characters where it stands alone: between characters that are no
        letter or digit (a toy key ``"k"`` masked inside every word turned ``api-key`` into ``api-***ey``)."""
        return re.compile(rf"(?<![^\W_]){re.escape(secret)}(?![^\W_])")

    def next_start(self, text: str, at: int, stop: int) -> int:
        """The first place from ``at`` where a piece may start (every masked piece starts with an
        ``EDGE_FRAGMENT``-gram of a secret), or ``stop``: a set lookup a character, whatever the number of secrets
        (a regular expression of every gram slowed to seconds a megabyte with 64 keys remembered)."""
        starts = self.grams[EDGE_FRAGMENT]
        for start in range(at, min(stop, len(text) - EDGE_FRAGMENT + 1)):
            if text[start:start + EDGE_FRAGMENT] in starts:
                return start
        return min(stop, len(text))

    def end(self, text: str, start: int, at_edge: bool) -> int:
        """Where a piece of a secret that starts at ``start`` ends (``start``: none starts there)."""
        size = EDGE_FRAGMENT if at_edge else MIN_FRAGMENT
        grams = self.grams[size]
        if text[start:start + size] in grams:
            end = start + size
            while end < len(text) and text[end + 1 - size:end + 1] in grams:
                end += 1
            return end
        for size in range(EDGE_FRAGMENT, MIN_FRAGMENT):  # a shorter piece that ends at an edge
            end = start + size
            if text[start:end] in self.grams[size] and (end == len(text) or text[end] in EDGES):
                return end
        return start

    def short_tail(self, text: str) -> int:
        """The length of a piece of a secret shorter than ``MIN_FRAGMENT`` that ``text`` ends with (0: none)."""
        return next((size for size in range(MIN_FRAGMENT - 1, EDGE_FRAGMENT - 1, -1)
                     if len(text) >= size and text[-size:] in self.grams[size]), 0)


def encoded_forms(secret: str) -> set[str]:
    """The other spellings of ``secret`` an error text may hold (see the module docstring), each at least
    ``MIN_FRAGMENT`` characters. Base64 spells a secret three ways, by where it starts in the encoded bytes: the
    characters that also hold bits of what is before or after it are left out, the rest is the secret's alone."""
    escaped = json.dumps(secret)[1:-1]
    forms = {quote(secret, safe=""), quote(secret), quote_plus(secret), escaped, escaped.replace("/", "\\/")}
    raw = secret.encode()
    for shift, mixed in ((0, 0), (1, 2), (2, 3)):  # bytes before the secret in its 3-byte group, characters mixed
        data = b"\0" * shift + raw
        whole = data[:len(data) // 3 * 3]  # the last group's characters hold bits of what follows
        forms.update(encode(whole).decode()[mixed:] for encode in (base64.b64encode, base64.urlsafe_b64encode))
    return {form for form in forms if len(form) >= MIN_FRAGMENT and form != secret}


@functools.lru_cache(maxsize=64)
def _pieces(secrets: frozenset[str]) -> _Pieces:
    return _Pieces(secrets)


def scrub_and_cut(text: str, secrets: Iterable[str], limit: int) -> str:
    """``text`` with every secret (given or remembered) and every piece of one masked, then cut to ``limit``
    characters (ending in ``…`` when cut)."""
    known = frozenset(s for s in (*secrets, *tuple(_remembered)) if s)
    pieces = _pieces(known) if known else None
    head = text[:SCAN_LIMIT + (len(pieces.whole[0]) if pieces is not None else 0)]  # whole secrets that start early
    more = len(head) < len(text)
    for secret in pieces.whole if pieces is not None else ():  # whole copies first, at C speed
        head = head.replace(secret, MASK) if len(secret) >= MIN_FRAGMENT else _Pieces.short(secret).sub(MASK, head)
    if pieces is None or not pieces.grams[EDGE_FRAGMENT]:
        return head if len(head) <= limit and not more else head[:limit - 1] + "…"
    read = head[:SCAN_LIMIT]
    out: list[str] = []
    raw = ""  # the text kept since the last mask (its last characters)
    size = at = 0
    while at < len(read) and size <= limit:
        start = pieces.next_start(read, at, at + limit + 1 - size + MIN_FRAGMENT)  # none past the cut is needed
        if start > at:  # plain text up to the next place a piece may start
            plain = read[at:min(start, at + limit + 1 - size)]
            out.append(plain)
            raw = (raw + plain)[-MIN_FRAGMENT:]
            size += len(plain)
            at += len(plain)
            continue
        end = pieces.end(read, at, at == 0 or read[at - 1] in EDGES or (not raw and bool(out)))
        if end == at:
            out.append(read[at])
            raw = (raw + read[at])[-MIN_FRAGMENT:]
            size += 1
            at += 1
            continue
        dropped = pieces.short_tail(raw)  # a short piece just before a mask is at an edge too
        if dropped:
            out[:] = ["".join(out)[:-dropped]]
            size -= dropped
        out.append(MASK)
        raw = ""
        size += len(MASK)
        at = end
    kept = "".join(out)
    if len(kept) <= limit and at >= len(head) and not more:
        return kept
    kept = kept[:limit - 1]
    dropped = pieces.short_tail(kept)  # where this cut falls
    return (kept[:-dropped] + MASK if dropped else kept) + "…"
