"""Claims on rows in flight for the object-store journal (see ``ai_assets.runtime.cache.lease``).

Object stores have no transaction to claim in, so a claim is written first and checked second: a run writes
``<uri>/claims/<owner>/<n>.json`` (its keys, the time it claimed them and an expiry), then reads every other live
claim file and gives up each key some other owner claimed earlier (ties broken by owner name). Of two runs
claiming one key at once, each sees the other's file once both are written, and the same one keeps the key; a run
that claims after another's file landed sees it and yields. A claim file then keeps only the keys its run won.
Stores with read-after-write listing (S3, GCS, Azure, local disk) make that exact; it assumes the hosts' clocks
agree to well under the time a window takes to send.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from typing import Any

from ai_assets.runtime.cache.lease import owner_gone

CLAIMS = "claims"


class ObjectClaims:
    def __init__(self, fs: Any, root: str) -> None:
        self.fs = fs
        self.folder = f"{root}/{CLAIMS}"
        self._lock = threading.Lock()
        self._files: dict[str, dict[str, Any]] = {}  # this process's claim files: path -> content

    def claim(self, keys: list[str], owner: str, ttl_s: float, answered: set[str]) -> set[str]:
        wanted = [k for k in keys if k not in answered]
        if not wanted:
            return set()
        now = time.time()
        mine = {"owner": owner, "at": now, "expires": now + ttl_s, "keys": wanted}
        with self._lock:
            path = f"{self.folder}/{_safe(owner)}/{time.time_ns():020d}.json"
            self._write(path, mine)
            self._files[path] = mine
        held = set(wanted)
        for other in self._others(owner, now):
            if (other["at"], other["owner"]) < (now, owner):
                held.difference_update(other["keys"])
        if len(held) < len(wanted):  # keep only what was won: a run retrying its claims leaves no files behind
            with self._lock:
                if held:
                    mine["keys"] = sorted(held)
                    self._write(path, mine)
                else:
                    del self._files[path]
                    with contextlib.suppress(FileNotFoundError):
                        self.fs.rm(path)
        return held

    def _others(self, owner: str, now: float) -> list[dict[str, Any]]:
        self.fs.invalidate_cache(self.folder)
        if not self.fs.exists(self.folder):
            return []
        found = []
        gone: dict[str, bool] = {}
        for folder in self.fs.ls(self.folder, detail=False):
            if folder.rstrip("/").rsplit("/", 1)[-1] == _safe(owner):
                continue
            for path in self.fs.ls(folder, detail=False):
                try:
                    claim = json.loads(self.fs.cat_file(path))
                except (FileNotFoundError, ValueError):
                    continue  # released meanwhile, or a torn local write
                if claim["expires"] >= now and not gone.setdefault(claim["owner"], owner_gone(claim["owner"])):
                    found.append(claim)
        return found

    def renew(self, owner: str, ttl_s: float) -> None:
        with self._lock:
            for path, claim in self._files.items():
                if claim["owner"] == owner:
                    claim["expires"] = time.time() + ttl_s
                    self._write(path, claim)

    def release(self, owner: str) -> None:
        with self._lock:
            for path in [p for p, c in self._files.items() if c["owner"] == owner]:
                del self._files[path]
                with contextlib.suppress(FileNotFoundError):
                    self.fs.rm(path)

    def _write(self, path: str, claim: dict[str, Any]) -> None:
        payload = json.dumps(claim, separators=(",", ":")).encode()
        folder = path.rsplit("/", 1)[0]
        self.fs.makedirs(folder, exist_ok=True)
        if "file" in self.fs.protocol:
            temp = f"{folder}/.tmp-{path.rsplit('/', 1)[1]}"
            self.fs.pipe_file(temp, payload)
            self.fs.mv(temp, path)
        else:
            self.fs.pipe_file(path, payload)


def _safe(owner: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in owner)
