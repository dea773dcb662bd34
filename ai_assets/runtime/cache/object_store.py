"""The journal on object storage (any fsspec URI): immutable JSONL segments, one atomic PUT each.

``put_many`` buffers; once ``flush_rows`` entries or ``flush_s`` seconds have gathered, the buffer is written as a
new segment ``<uri>/segments/<time>-<uuid>.jsonl`` on a worker thread (``put_many`` runs on the event loop, which a
network write must not stall), and on ``flush`` / ``close`` before they return. Object stores replace whole objects
atomically (locally fsspec writes a temp file and renames it), so a half-written segment is never read back, and
every process writes only its own segments, so concurrent runs never conflict.

What a kill can lose: the buffer (fewer than ``flush_rows`` entries) and the segment being written (at most
``flush_rows`` entries plus one ``put_many``), since a ``put_many`` that fills the buffer while a write is under way
waits for that write. So a crash costs at most ``2 * flush_rows + concurrency`` paid requests again, where the
SQLite and Postgres journals lose only the ``concurrency`` requests in flight. ``prune`` compacts every segment.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

from ai_assets.runtime.cache import CachedResult, Entry, merge_entry
from ai_assets.runtime.cache.object_claims import ObjectClaims

SEGMENTS = "segments"
logger = logging.getLogger(__name__)


def _result(entry: Mapping[str, Any]) -> CachedResult:
    return CachedResult(entry.get("value"), entry.get("error"), entry.get("run"), entry.get("tokens_in", 0),
                        entry.get("tokens_out", 0))


def _merge(entries: dict[str, dict[str, Any]], entry: dict[str, Any]) -> None:
    previous = entries.get(entry["key"])
    if merge_entry(None if previous is None else _result(previous), Entry(entry["key"], error=entry.get("error"))):
        entries[entry["key"]] = entry


class ObjectStoreCache:
    def __init__(self, uri: str, storage_options: Mapping[str, Any] | None = None, *, flush_rows: int = 64,
                 flush_s: float = 2.0) -> None:
        import fsspec

        self.uri = uri.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.uri, **dict(storage_options or {}))
        self.flush_rows = flush_rows
        self.flush_s = flush_s
        self._lock = threading.Lock()
        self._buffer: list[dict[str, Any]] = []
        self._last_flush = time.monotonic()
        self._entries: dict[str, dict[str, Any]] | None = None
        self._read_segments: set[str] = set()
        self._flusher: threading.Thread | None = None
        self._own: dict[str, dict[str, Any]] = {}  # this instance's puts, readable before their segment lands
        self._claims = ObjectClaims(self.fs, self.root)

    def _segment_paths(self) -> list[str]:
        folder = f"{self.root}/{SEGMENTS}"
        self.fs.invalidate_cache(folder)  # s3fs and friends cache listings: other processes add segments
        if not self.fs.exists(folder):
            return []
        paths = self.fs.ls(folder, detail=False)
        return sorted(p for p in paths if p.endswith(".jsonl") and not p.rsplit("/", 1)[-1].startswith("."))

    def _load(self) -> dict[str, dict[str, Any]]:
        """Every entry of every segment not read yet (later segments win; answers beat errors)."""
        entries = self._entries if self._entries is not None else {}
        for path in self._segment_paths():
            if path in self._read_segments:
                continue
            with self.fs.open(path, "rb") as handle:
                for line in handle.read().decode().splitlines():
                    _merge(entries, json.loads(line))
            self._read_segments.add(path)
        self._entries = entries
        return entries

    def get_many(self, keys: Iterable[str], *, include_errors: bool = False) -> dict[str, CachedResult]:
        with self._lock:
            entries = self._load()
            own = dict(self._own)
        found = {}
        for key in keys:
            entry = entries.get(key)
            if key in own:
                view = {key: entry} if entry is not None else {}
                _merge(view, own[key])
                entry = view[key]
            if entry is not None and (entry.get("error") is None or include_errors):
                found[key] = _result(entry)
        return found

    def put_many(self, entries: Sequence[Entry]) -> None:
        now = time.time()
        rows = [{**asdict(e), "value": None if e.error else e.value, "at": now} for e in entries]
        with self._lock:
            self._buffer.extend(rows)
            for row in rows:
                _merge(self._own, row)
            full = len(self._buffer) >= self.flush_rows
            due = full or time.monotonic() - self._last_flush >= self.flush_s
            flusher = self._flusher
            if due and (flusher is None or not flusher.is_alive()):
                self._start_flusher()
                return
        if full and flusher is not None:
            flusher.join()  # bound what a crash can lose: never a full buffer beside a write under way
            with self._lock:
                if self._buffer and (self._flusher is None or not self._flusher.is_alive()):
                    self._start_flusher()

    def _start_flusher(self) -> None:
        """Write the buffer on a worker thread (call with the lock held)."""
        self._flusher = threading.Thread(target=self._flush_logged, name="ai_assets-journal", daemon=True)
        self._flusher.start()

    def put(self, key: str, value: Any = None, *, error: str | None = None, run: str | None = None) -> None:
        self.put_many([Entry(key, value, error, run)])

    def flush(self) -> None:
        """Write everything buffered, after any background write under way, and wait for it."""
        flusher = self._flusher
        if flusher is not None:
            flusher.join()
        self._flush_buffer()

    def _flush_logged(self) -> None:
        try:
            self._flush_buffer()
        except Exception:  # the entries went back to the buffer; the next flush tries again
            logger.warning("writing a journal segment to %s failed; will retry", self.uri, exc_info=True)

    def _flush_buffer(self) -> None:
        with self._lock:
            if not self._buffer:
                return
            entries, self._buffer = self._buffer, []
            self._last_flush = time.monotonic()
        try:
            path = self._write_segment(entries)  # outside the lock: puts keep buffering meanwhile
        except BaseException:
            with self._lock:
                self._buffer[:0] = entries
            raise
        with self._lock:
            if self._entries is not None:
                for entry in entries:
                    _merge(self._entries, entry)
                self._read_segments.add(path)

    def _write_segment(self, entries: list[dict[str, Any]]) -> str:
        self.fs.makedirs(f"{self.root}/{SEGMENTS}", exist_ok=True)
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex}.jsonl"
        path = f"{self.root}/{SEGMENTS}/{name}"
        payload = "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in entries).encode()
        if "file" in self.fs.protocol:
            temp = f"{self.root}/{SEGMENTS}/.tmp-{name}.part"
            with self.fs.open(temp, "wb") as handle:
                handle.write(payload)
            self.fs.mv(temp, path)
        else:
            self.fs.pipe_file(path, payload)  # one PUT: the object appears whole or not at all
        return path

    def __len__(self) -> int:
        self.flush()
        with self._lock:
            return len(self._load())

    def prune(self, *, max_entries: int | None = None, older_than_s: float | None = None) -> int:
        """Compact every segment into one, keeping the newest ``max_entries`` written within ``older_than_s``.

        Run it when no other process is writing to this journal: their segments written during the compaction
        survive, but one they wrote before it that it read is replaced by the compacted copy."""
        self.flush()
        with self._lock:
            old = self._segment_paths()
            self._entries, self._read_segments, self._own = None, set(), {}
            entries = sorted(self._load().values(), key=lambda e: e["at"], reverse=True)
            kept = [e for e in entries if older_than_s is None or e["at"] >= time.time() - older_than_s]
            kept = kept[:max_entries] if max_entries is not None else kept
            path = self._write_segment(kept) if kept else None
            for segment in old:
                self.fs.rm(segment)
            self._entries = {e["key"]: e for e in kept}
            self._read_segments = {path} if path else set()
        return len(entries) - len(kept)

    # -- claims on rows in flight (see ai_assets.runtime.cache.lease and .object_claims) ------------------------
    def claim(self, keys: list[str], owner: str, ttl_s: float) -> set[str]:
        return self._claims.claim(keys, owner, ttl_s, set(self.get_many(keys)))

    def renew(self, owner: str, ttl_s: float) -> None:
        self._claims.renew(owner, ttl_s)

    def release(self, owner: str) -> None:
        self._claims.release(owner)

    def close(self) -> None:
        self.flush()
