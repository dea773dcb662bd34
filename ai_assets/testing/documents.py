"""Small real documents for tests, benchmarks and the demo, made without any PDF library: valid PDFs of text
lines, one page or many."""

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


def scanned_pdf(lines: Sequence[str], size: tuple[int, int] = (1240, 1754)) -> bytes:
    """A one-page PDF holding only an image of ``lines`` (as a scanner makes): no text layer, so only OCR reads
    it. Needs Pillow and pypdfium2."""
    import io

    import pypdfium2
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=36)
    for i, line in enumerate(lines):
        draw.text((90, 120 + i * 64), line, fill="black", font=font)
    document = pypdfium2.PdfDocument.new()
    width, height = 595, 842  # A4 in points; the image fills the page
    page = document.new_page(width, height)
    picture = pypdfium2.PdfImage.new(document)
    picture.set_bitmap(pypdfium2.PdfBitmap.from_pil(image))
    picture.set_matrix(pypdfium2.PdfMatrix().scale(width, height))
    page.insert_obj(picture)
    page.gen_content()
    out = io.BytesIO()
    document.save(out)
    document.close()
    return out.getvalue()
