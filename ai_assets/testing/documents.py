"""Small real documents for tests, benchmarks and the demo, made without any PDF library: valid PDFs of text
lines, one page or many, and hostile ones (a FlateDecode bomb, a scan on a page of the largest size)."""

from __future__ import annotations

from collections.abc import Sequence


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def pdf(lines: str | Sequence[str]) -> bytes:
    """A one-page PDF with ``lines`` in 12 pt Helvetica, byte offsets computed so readers need no repair."""
    return pdf_pages([[lines] if isinstance(lines, str) else list(lines)])


def pdf_pages(pages: Sequence[Sequence[str]], font_size: int = 12, leading: int = 14) -> bytes:
    """A PDF with one page per item of ``pages`` (each a list of text lines, Helvetica), byte offsets computed so
    readers need no repair. Lines past the page's foot are still written (PDFium reads them, pymupdf does not)."""
    count = len(pages)
    font = 3 + 2 * count  # objects: catalog, pages, then a page and its content stream per page, then the font
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(count))
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", f"<< /Type /Pages /Kids [{kids}] /Count {count} >>".encode()]
    for i, lines in enumerate(pages):
        body = " ".join(f"({_escape(line)}) Tj T*" for line in lines)
        stream = f"BT /F1 {font_size} Tf {leading} TL 72 720 Td {body} ET".encode("latin-1", errors="replace")
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {4 + 2 * i} 0 R "
                       f"/Resources << /Font << /F1 {font} 0 R >> >> >>".encode())
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    return _write(objects)


def _write(objects: Sequence[bytes]) -> bytes:
    """A PDF of ``objects`` (numbered from 1, the first the catalog) with a correct cross-reference table."""
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, content in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + content + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def flate_bomb_pdf(decompressed: int = 1 << 30) -> bytes:
    """A one-page PDF whose content stream is ``decompressed`` bytes of spaces squeezed by FlateDecode (RFC 1950/
    1951 deflate reaches about 1,000 : 1 on repeated bytes, so the default 1 GiB is a 1 MB file): a reader that
    inflates the stream whole, as PDFium does when it parses the page, needs twice that in memory."""
    import struct
    import zlib

    block = b" " * (1 << 20)
    blocks, rest = divmod(decompressed, len(block))
    squeeze = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate; a full flush makes every block's bytes alike
    unit = squeeze.compress(block) + squeeze.flush(zlib.Z_FULL_FLUSH)
    tail = squeeze.compress(block[:rest]) + squeeze.flush(zlib.Z_FINISH)
    checksum = 1
    for _ in range(blocks):
        checksum = zlib.adler32(block, checksum)
    checksum = zlib.adler32(block[:rest], checksum)
    stream = b"\x78\xda" + unit * blocks + tail + struct.pack(">I", checksum)  # RFC 1950 header and trailer
    return _write([b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
                   b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
                   b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream"])


def scanned_pdf(lines: Sequence[str], size: tuple[int, int] = (1240, 1754),
                page: tuple[float, float] = (595, 842)) -> bytes:
    """A one-page PDF holding only an image of ``lines`` (as a scanner makes): no text layer, so only OCR reads
    it. ``page`` is its size in points (default A4; PDF's largest is 14,400 x 14,400, ISO 32000-1 Annex C.2),
    the image stretched over it. Needs Pillow and pypdfium2."""
    import io

    import pypdfium2
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=36)
    for i, line in enumerate(lines):
        draw.text((90, 120 + i * 64), line, fill="black", font=font)
    document = pypdfium2.PdfDocument.new()
    width, height = page  # the image fills the page
    sheet = document.new_page(width, height)
    picture = pypdfium2.PdfImage.new(document)
    picture.set_bitmap(pypdfium2.PdfBitmap.from_pil(image))
    picture.set_matrix(pypdfium2.PdfMatrix().scale(width, height))
    sheet.insert_obj(picture)
    sheet.gen_content()
    out = io.BytesIO()
    document.save(out)
    document.close()
    return out.getvalue()
