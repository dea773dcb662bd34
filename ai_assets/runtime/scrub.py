"""Secrets out of error text: every secret, and every piece of one, is masked before the text is cut.

A provider's error body may echo the API key: whole (a proxy or gateway that prints the request back), masked
(OpenAI's 401 says ``Incorrect API key provided: sk-ab******wxyz``), or already cut by whoever built the text
(pydantic shows a long input as ``'abc...xyz'``). Cutting first and masking after would leave the piece before the
cut. So ``scrub_and_cut`` masks, in one pass that reads ahead of the cut:

* every run of at least ``MIN_FRAGMENT`` characters of a secret, wherever it is;
* every run of at least ``EDGE_FRAGMENT`` characters of a secret next to an edge: the text's start or end, a mask,
  or a cut marker (``*``, ``…``, ``.``), where a cut or a mask made elsewhere leaves a key's head or tail;
* a piece of ``EDGE_FRAGMENT`` or more that its own cut would leave at the end.

A secret shorter than ``MIN_FRAGMENT`` is masked only whole. ``remember_secrets`` registers secrets (a provider's
API key, when its endpoint is built) that every later call masks as well, so text built on a path that never held
the key (a Batch API error file, an SDK exception, a dead letter) is masked too. Like Airflow's ``mask_secret``
(which skips short values), only secrets of ``MIN_REMEMBERED`` characters or more are remembered: the API keys of
the vendors we know are 32 or more (Mistral and Azure 32, Google 39, OpenAI 51 and up), and a toy key such as
``"k"`` or ``"sk-test"`` must not mask pieces of every message of the process.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

MASK = "***"
MIN_FRAGMENT = 6
EDGE_FRAGMENT = 4
MIN_REMEMBERED = 20
EDGES = frozenset("*….")
SCAN_LIMIT = 1 << 20
"""Characters of a text read at most (a body of megabytes holds the first error line long before)."""

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
        self.whole = sorted(secrets, key=len, reverse=True)
        long = [s for s in secrets if len(s) >= MIN_FRAGMENT]
        self.grams = {size: frozenset(s[i:i + size] for s in long for i in range(len(s) - size + 1))
                      for size in range(EDGE_FRAGMENT, MIN_FRAGMENT + 1)}
        starts = sorted(self.grams[EDGE_FRAGMENT])  # every piece masked starts with one of these
        self.starts = re.compile("|".join(map(re.escape, starts))) if starts else None

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


@functools.lru_cache(maxsize=64)
def _pieces(secrets: frozenset[str]) -> _Pieces:
    return _Pieces(secrets)


def scrub_and_cut(text: str, secrets: Iterable[str], limit: int) -> str:
    """``text`` with every secret (given or remembered) and every piece of one masked, then cut to ``limit``
    characters (ending in ``…`` when cut)."""
    known = frozenset(s for s in (*secrets, *tuple(_remembered)) if s)
    pieces = _pieces(known) if known else None
    for secret in pieces.whole if pieces is not None else ():  # whole copies first, at C speed, over any size
        text = text.replace(secret, MASK)
    if pieces is None or pieces.starts is None:
        return text if len(text) <= limit else text[:limit - 1] + "…"
    read = text[:SCAN_LIMIT]
    out: list[str] = []
    raw = ""  # the text kept since the last mask (its last characters)
    size = at = 0
    while at < len(read) and size <= limit:
        found = pieces.starts.search(read, at)
        start = found.start() if found is not None else len(read)
        if start > at:  # plain text up to the next place a piece may start (none past the cut is needed)
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
    if len(kept) <= limit and at >= len(text):
        return kept
    kept = kept[:limit - 1]
    dropped = pieces.short_tail(kept)  # where this cut falls
    return (kept[:-dropped] + MASK if dropped else kept) + "…"
