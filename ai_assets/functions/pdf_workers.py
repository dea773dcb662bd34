"""PDFs are read in a child process (``pdf_child``), so a file that makes PDFium abort or eat memory costs that
file's row, never the step: a 1 MB FlateDecode bomb asks for 2 GB and PDFium answers a failed allocation with
SIGABRT, which no ``try`` in this process could catch.

The child's address space is capped (``max_memory_mb``, ``RLIMIT_AS``); each page must arrive within
``page_timeout_s`` (opening the file counts toward the first); an OCR render is bounded to ``max_pixels``. A child
that dies or is stopped becomes the row's error, naming the file, and the next file gets a fresh child. Children
are kept between calls (one per concurrent call, by memory cap), so a call costs one process start at most.
"""

from __future__ import annotations

import atexit
import functools
import importlib.util
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ai_assets.functions.pdf_child import LENGTH, OCR_SCALE
from ai_assets.runtime.errors import MissingExtraError

CHILD = Path(__file__).with_name("pdf_child.py")
MAX_IDLE = 4
"""Idle children kept per memory cap; more are stopped when handed back."""


class ReaderFailed(Exception):
    """The child died, ran out of time or answered nonsense: this file's error."""


@dataclass(frozen=True)
class PdfLimits:
    max_pages: int
    page_chars: int
    stop_after_chars: int | None
    ocr: bool
    max_pixels: int
    max_memory_mb: int
    page_timeout_s: float


@dataclass
class PdfText:
    """What was read: each page's text (cut), its full length, its OCR render scale when under the default, and
    the number of pages the file has."""

    page_count: int = 0
    texts: list[str] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    scales: list[float | None] = field(default_factory=list)

    def dpi(self, index: int) -> int | None:
        scale = self.scales[index]
        return None if scale is None else round(72 * scale)


@functools.lru_cache(maxsize=2)
def require(ocr: bool) -> None:
    """Raise before any row is read when the packages the child needs are missing."""
    if importlib.util.find_spec("pypdfium2") is None:
        raise MissingExtraError("pypdfium2", "files")
    if ocr and importlib.util.find_spec("rapidocr_onnxruntime") is None:
        raise MissingExtraError("rapidocr-onnxruntime", "ocr")


def read_pdf(data: bytes, limits: PdfLimits) -> PdfText:
    """The pages of one PDF, read in a child; ``ReaderFailed`` (or the child's own error) when it cannot be."""
    require(limits.ocr)
    with _lease(limits.max_memory_mb) as child:
        return child.read(data, limits)


class _Child:
    def __init__(self, max_memory_mb: int) -> None:
        self.max_memory_mb = max_memory_mb
        self.log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115  (the child's stderr, closed in stop())
        env = {**os.environ, "MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", "2")}
        self.process = subprocess.Popen([sys.executable, "-P", str(CHILD), str(max_memory_mb << 20)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, env=env)
        self.buffer = b""
        self.healthy = True

    def read(self, data: bytes, limits: PdfLimits) -> PdfText:
        self.healthy = False  # until the answer is complete
        request = json.dumps({"size": len(data), "max_pages": limits.max_pages, "page_chars": limits.page_chars,
                              "stop_after_chars": limits.stop_after_chars, "ocr": limits.ocr,
                              "max_pixels": limits.max_pixels}).encode()
        stdin = self.process.stdin
        assert stdin is not None
        try:
            stdin.write(LENGTH.pack(len(request)) + request)
            stdin.write(data)
            stdin.flush()
        except (BrokenPipeError, OSError):
            raise ReaderFailed(self._death(limits)) from None
        out = PdfText()
        while True:
            message = self._next(limits, page=len(out.texts) + 1)
            if "error" in message:
                self.healthy = True
                raise ReaderFailed(str(message["error"]))
            if message.get("end"):
                self.healthy = True
                return out
            if "pages" in message:
                out.page_count = int(message["pages"])
            else:
                out.texts.append(str(message["text"]))
                out.lengths.append(int(message["chars"]))
                out.scales.append(None if message["scale"] is None else float(message["scale"]))

    def _next(self, limits: PdfLimits, page: int) -> dict[str, Any]:
        """The next message, waiting at most ``page_timeout_s``."""
        stdout = self.process.stdout
        assert stdout is not None
        deadline = time.monotonic() + limits.page_timeout_s
        with selectors.DefaultSelector() as selector:
            selector.register(stdout, selectors.EVENT_READ)
            while True:
                if len(self.buffer) >= LENGTH.size:
                    size = LENGTH.unpack(self.buffer[:LENGTH.size])[0]
                    end = LENGTH.size + size
                    if len(self.buffer) >= end:
                        body, self.buffer = self.buffer[LENGTH.size:end], self.buffer[end:]
                        message: dict[str, Any] = json.loads(body)
                        return message
                left = deadline - time.monotonic()
                if left <= 0 or not selector.select(left):
                    self.stop()
                    raise ReaderFailed(f"page {page} took over page_timeout_s={limits.page_timeout_s:g} s; the "
                                       "reader was stopped")
                chunk = os.read(stdout.fileno(), 1 << 20)
                if not chunk:
                    raise ReaderFailed(self._death(limits))
                self.buffer += chunk

    def _death(self, limits: PdfLimits) -> str:
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.stop()
            code = self.process.returncode
        self.log.seek(0, os.SEEK_END)
        self.log.seek(max(0, self.log.tell() - 300))
        said = self.log.read().decode(errors="replace").strip().splitlines()
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
        return (f"the PDF reader died ({how}), likely over max_memory_mb={limits.max_memory_mb:,} (a decompression "
                f"bomb?)" + (f"; it said: {said[-1]}" if said else ""))

    def stop(self) -> None:
        self.healthy = False
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()
        self.log.close()


class _Pool:
    """Idle children by memory cap, shared by the threads of this process."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.idle: dict[int, list[_Child]] = {}

    def forget(self) -> None:
        """After a fork: the parent's children stay the parent's."""
        self.lock = threading.Lock()
        self.idle = {}

    def take(self, max_memory_mb: int) -> _Child | None:
        """A live idle child with this cap; the idle ones found dead (the OOM killer picks them first: their
        ``oom_score_adj`` is 1000) are stopped now, their pipes and log closed, not left to the collector."""
        with self.lock:
            idle = self.idle.get(max_memory_mb, [])
            dead = [child for child in idle if child.process.poll() is not None]
            idle[:] = [child for child in idle if child not in dead]
            child = idle.pop() if idle else None
        for gone in dead:
            gone.stop()
        return child

    def give(self, child: _Child) -> bool:
        with self.lock:
            idle = self.idle.setdefault(child.max_memory_mb, [])
            if len(idle) >= MAX_IDLE:
                return False
            idle.append(child)
            return True

    def stop_all(self) -> None:
        with self.lock:
            children = [child for idle in self.idle.values() for child in idle]
            self.idle.clear()
        for child in children:
            child.stop()


_POOL = _Pool()
atexit.register(_POOL.stop_all)
# A forked process must not share its parent's children: their pipes would carry two conversations at once.
if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_POOL.forget)


@contextmanager
def _lease(max_memory_mb: int) -> Iterator[_Child]:
    """An idle child with this memory cap, or a new one; handed back after, unless it failed."""
    child = _POOL.take(max_memory_mb) or _Child(max_memory_mb)
    try:
        yield child
    finally:
        if not (child.healthy and child.process.poll() is None and _POOL.give(child)):
            child.stop()


__all__ = ["OCR_SCALE", "PdfLimits", "PdfText", "ReaderFailed", "read_pdf", "require"]
