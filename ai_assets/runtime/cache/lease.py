"""Leases on rows in flight, so that two runs of one partition at once never pay twice for a row.

Before a run sends a row, it claims the row's key in the journal: a claim names an owner (host, process id and a
random part) and expires ``LEASE_S`` seconds later unless renewed (the run renews its claims every third of that
while it runs). A key that another live owner holds is not sent: the run waits for that owner's answer to appear
in the journal, and takes the claim over once it expires, or at once when the owner is a process of this host
that no longer exists (a killed run re-launched on the same machine waits for nothing). A key already answered
cannot be claimed. So two overlapping runs of N rows with C requests in flight each pay at most N + 2 x C:
what each has in flight when the other takes over a claim.

Journals that hold claims implement ``Claims`` (SQLite, Postgres, object stores); the pipeline uses them when
its journal does.
"""

from __future__ import annotations

import os
import socket
import uuid
from typing import Protocol, runtime_checkable

LEASE_S = 60.0
"""How long a claim lives without renewal: the longest a run waits for rows of a run that died on another host."""

HOST = socket.gethostname()


@runtime_checkable
class Claims(Protocol):
    def claim(self, keys: list[str], owner: str, ttl_s: float) -> set[str]:
        """Claim every key of ``keys`` that has no answer and no live claim by another owner; the keys held."""
        ...

    def renew(self, owner: str, ttl_s: float) -> None:
        """Extend every claim of ``owner`` by ``ttl_s`` from now."""
        ...

    def release(self, owner: str) -> None:
        """Drop every claim of ``owner`` (its run is over)."""
        ...


def new_owner() -> str:
    """A claim owner for one run in this process: ``host/pid/random``."""
    return f"{HOST}/{os.getpid()}/{uuid.uuid4().hex[:12]}"


def owner_gone(owner: str) -> bool:
    """Whether ``owner`` is a process of this host that no longer runs (its claims may be taken at once)."""
    host, _, rest = owner.partition("/")
    pid_text = rest.partition("/")[0]
    if host != HOST or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _zombie(pid)


def _zombie(pid: int) -> bool:
    """A killed process not yet reaped by its parent still answers ``kill(pid, 0)``."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rsplit(")", 1)[-1].split()[0] == "Z"
    except (OSError, IndexError):
        return False
