"""The PDF reader's child process: reads the PDFs sent on its stdin, one at a time, and writes each page's text
to its stdout (``pdf_workers`` starts it and speaks for it).

It runs as a script (``python -P pdf_child.py LIMIT``) and imports only the standard library, pypdfium2 and, for
OCR, RapidOCR, so it starts in about 0.1 s and nothing of the step's process lives in it. Its address space is
capped with ``RLIMIT_AS`` before PDFium loads: PDFium inflates a FlateDecode content stream whole when it parses
a page and aborts (SIGABRT) when an allocation fails, so a decompression bomb kills this process, not the step.

Wire format, both ways: a 4-byte big-endian length, then that many bytes of UTF-8 JSON. A request is followed
by ``size`` raw bytes (the PDF). The answer is ``{"pages": N}``, then one ``{"text", "chars", "scale"}`` per
page read, then ``{"end": true}``, or ``{"error": "Type: message"}`` at any point.
"""

from __future__ import annotations

import json
import math
import struct
import sys
import time
from collections.abc import Callable
from typing import Any, BinaryIO

OCR_SCALE = 2.5
"""Pages are rendered at 2.5 x 72 = 180 dpi for OCR, fewer when the page is over the pixel bound."""
LENGTH = struct.Struct(">I")
FLUSH_S = 0.05
Send = Callable[[dict[str, Any]], None]


def main() -> None:
    limit = int(sys.argv[1])
    if limit > 0:
        _cap_memory(limit)
    requests, answers = sys.stdin.buffer, sys.stdout.buffer
    flushed = [time.monotonic()]

    def send(message: dict[str, Any]) -> None:
        """Pages go out at most every ``FLUSH_S`` (waking the step's process for each page cost more than the
        page's reading on a busy machine); the end of a file at once."""
        body = json.dumps(message).encode()
        answers.write(LENGTH.pack(len(body)) + body)
        if "end" in message or "error" in message or time.monotonic() - flushed[0] >= FLUSH_S:
            answers.flush()
            flushed[0] = time.monotonic()

    while (header := read_frame(requests)) is not None:
        request = json.loads(header)
        data = _read_exactly(requests, request["size"])
        try:
            read(data, request, send)
        except Exception as exc:  # PDFium raises many types for damaged files; each is that file's error
            send({"error": f"{type(exc).__name__}: {exc}"})
        else:
            send({"end": True})


def _cap_memory(limit: int) -> None:
    """Cap the address space (never above the hard limit the step itself runs under), and ask the kernel's OOM
    killer to pick this process first if the machine or container runs out anyway."""
    try:
        import resource
    except ImportError:  # not POSIX: no cap to set
        return
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    soft = limit if hard == resource.RLIM_INFINITY else min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    try:
        with open("/proc/self/oom_score_adj", "w") as adjust:
            adjust.write("1000")
    except OSError:
        pass  # not Linux, or not allowed: the address-space cap still holds


def read_frame(stream: BinaryIO) -> bytes | None:
    head = stream.read(LENGTH.size)
    if len(head) < LENGTH.size:
        return None
    return _read_exactly(stream, LENGTH.unpack(head)[0])


def _read_exactly(stream: BinaryIO, size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise SystemExit(0)  # the step closed the pipe mid-request: it is gone, so is the work
    return data


def read(data: bytes, request: dict[str, Any], send: Send) -> None:
    """Each page's text (cut at ``page_chars``, with its full length), up to ``max_pages``, stopping once
    ``stop_after_chars`` characters are read; with ``ocr``, a page without a text layer is rendered within
    ``max_pixels`` and read by OCR."""
    import pypdfium2

    document = pypdfium2.PdfDocument(data)
    try:
        total = len(document)
        send({"pages": total})
        seen = 0
        for index in range(min(total, request["max_pages"])):
            if request["stop_after_chars"] is not None and seen >= request["stop_after_chars"]:
                break
            page = document[index]
            textpage = page.get_textpage()
            scale = None
            try:
                text = textpage.get_text_range().replace("\r\n", "\n").replace("\r", "\n")
                if request["ocr"] and not text.strip():
                    text, scale = _ocr_page(page, request["max_pixels"])
            finally:
                textpage.close()
                page.close()
            seen += len(text)
            send({"text": text[:request["page_chars"]], "chars": len(text), "scale": scale})
    finally:
        document.close()


def render_scale(width: float, height: float, max_pixels: int) -> float:
    """The render scale for OCR: ``OCR_SCALE``, or less so the bitmap has at most ``max_pixels`` pixels."""
    scale = min(OCR_SCALE, math.sqrt(max_pixels / max(width * height, 1.0)))
    while scale > 0 and math.ceil(width * scale) * math.ceil(height * scale) > max_pixels:
        scale *= 0.99
    return scale


def _ocr_page(page: Any, max_pixels: int) -> tuple[str, float | None]:
    """The text lines of a rendered page, top to bottom, and the scale used when under ``OCR_SCALE``."""
    width, height = page.get_size()
    scale = render_scale(width, height, max_pixels)
    bitmap = page.render(scale=scale, rev_byteorder=True)  # RGB, as the OCR models were trained on
    found, _ = _ocr_engine()(bitmap.to_numpy())
    text = "\n".join(str(line[1]) for line in found or [])
    return text, (scale if scale < OCR_SCALE else None)


_ENGINE: list[Any] = []


def _ocr_engine() -> Any:
    """RapidOCR (PP-OCR models on onnxruntime, shipped in the package, so nothing is downloaded), loaded once
    per child."""
    if not _ENGINE:
        from rapidocr_onnxruntime import RapidOCR

        _ENGINE.append(RapidOCR())
    return _ENGINE[0]


if __name__ == "__main__":
    main()
