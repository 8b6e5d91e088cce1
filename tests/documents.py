"""Real files for the document tests, made by the libraries people make them with: PDFs with
fpdf2 (text pages, an image-only "scan") and pypdf (encryption), a DOCX with python-docx, and an
HTML page with the navigation and boilerplate a saved web page has."""

from __future__ import annotations

import io
import unicodedata

import docx
from fpdf import FPDF
from PIL import Image, ImageDraw
from pypdf import PdfReader, PdfWriter

from retrieval.types import Document

#: The page of ``field_guide`` that holds ``ANSWER_ARTICLE``; asked about in the tests.
ANSWER_PAGE = 37
ANSWER_ARTICLE = "Mount Everest"


def _latin1(text: str) -> str:
    """fpdf2's core fonts cover Latin-1 only (and a TTF font would need one installed)."""
    folded = unicodedata.normalize("NFKD", text)
    return folded.encode("latin-1", "ignore").decode("latin-1")


def pdf(pages: list[tuple[str, str]], title: str = "Field guide") -> bytes:
    """A PDF with one (heading, text) per page, each on its own page."""
    doc = FPDF()
    doc.set_title(title)
    doc.set_auto_page_break(False)  # one page each, however long the text
    for heading, text in pages:
        doc.add_page()
        doc.set_font("Helvetica", "B", 14)
        doc.cell(0, 10, _latin1(heading), new_x="LMARGIN", new_y="NEXT")
        doc.set_font("Helvetica", size=9)
        doc.multi_cell(0, 4.5, _latin1(text))
    return bytes(doc.output())


def field_guide(wiki_docs: list[Document], pages: int = 50) -> bytes:
    """A ``pages``-page PDF, one Wikipedia lead a page (cut to 250 words), with
    ``ANSWER_ARTICLE`` on page ``ANSWER_PAGE`` and nowhere else."""
    answer = next(d for d in wiki_docs if d.id == ANSWER_ARTICLE)
    others = [d for d in wiki_docs[:: len(wiki_docs) // pages] if d.id != ANSWER_ARTICLE]
    picked = [*others[: ANSWER_PAGE - 1], answer, *others[ANSWER_PAGE - 1 : pages - 1]]
    return pdf([(d.id, " ".join(d.text.split()[:250])) for d in picked])


def scanned_pdf() -> bytes:
    """Two pages that are pictures of text, as a scanner makes them: no text layer."""
    doc = FPDF()
    for n in (1, 2):
        image = Image.new("RGB", (800, 300), "white")
        ImageDraw.Draw(image).text((40, 120), f"Scanned page {n}: the pump needs oil.", "black")
        doc.add_page()
        doc.image(image, x=10, y=10, w=190)
    return bytes(doc.output())


def encrypted(data: bytes, user_password: str, owner_password: str = "owner") -> bytes:
    """``data`` encrypted (RC4-128, which pypdf reads without extra packages)."""
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    writer.encrypt(user_password, owner_password, algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def manual_docx() -> bytes:
    """A DOCX with a title, headings, paragraphs, a table, and a header and footer."""
    document = docx.Document()
    section = document.sections[0]
    section.header.paragraphs[0].text = "ACME internal - do not distribute"
    section.footer.paragraphs[0].text = "Page footer of the ACME manual"
    document.add_heading("P-200 pump service manual", 0)
    document.add_heading("Servicing", 1)
    document.add_paragraph(
        "The P-200 pump must be serviced every 400 hours of operation. Drain the oil first "
        "and replace the gasket with part number GX-77."
    )
    table = document.add_table(rows=2, cols=2)
    for row, (part, number) in zip(
        table.rows, [("Gasket", "GX-77"), ("Valve", "VX-12")], strict=True
    ):
        row.cells[0].text, row.cells[1].text = part, number
    document.add_paragraph("After servicing, run the pump dry for two minutes.")
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


NAVIGATION = ("Home", "Products", "Careers at ACME", "Contact sales", "Log in")
ARTICLE = (
    "The lighthouse keeper's logbook records that the Skerryvore light was first lit on "
    "1 February 1844. Its tower, built of granite from the island of Mull, rises 48 metres "
    "above the rock and was designed by Alan Stevenson. The keepers lived in the tower itself "
    "and were relieved by boat every six weeks, weather permitting."
)


def saved_web_page() -> bytes:
    """An article page as a browser saves it: navigation, a sidebar, cookie banner, footer."""
    nav = "".join(f'<li><a href="/{w.lower()}">{w}</a></li>' for w in NAVIGATION)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Skerryvore | Lighthouses of Scotland</title>
<script>window.analytics = {{}};</script></head>
<body>
<header><nav><ul>{nav}</ul></nav>
<div class="cookie-banner">We use cookies to improve your experience. Accept all cookies.</div>
</header>
<aside class="sidebar"><h3>Related</h3><ul><li><a href="/bell-rock">Bell Rock</a></li>
<li><a href="/newsletter">Subscribe to our newsletter</a></li></ul></aside>
<main><article><h1>Skerryvore lighthouse</h1>
<p>{ARTICLE}</p>
<p>Today the light is automatic and is monitored from Edinburgh by the Northern Lighthouse
Board, which maintains 200 lighthouses around the coast of Scotland.</p>
</article></main>
<footer><p>Copyright 2026 Lighthouses of Scotland. Privacy policy. Terms of use.</p></footer>
</body></html>""".encode()
