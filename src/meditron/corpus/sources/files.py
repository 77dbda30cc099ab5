"""Whole-file sources: HTML pages (main text by trafilatura) and PDFs (pypdf)."""

from __future__ import annotations

from pathlib import Path

from meditron.corpus.sources import Reject


def read_html(path: Path, max_bytes: int) -> tuple[str, str]:
    size = path.stat().st_size
    if size > max_bytes:
        raise Reject("huge_document", f"{size} bytes > limit {max_bytes}") from None
    raw = path.read_bytes()
    try:
        html = raw.decode("utf-8")
    except UnicodeDecodeError:
        html = raw.decode("cp1252", errors="replace")   # legacy pages; trafilatura sniffs meta charset too
    import trafilatura

    text = trafilatura.extract(html, include_comments=False, include_tables=True, favor_precision=True,
                               output_format="markdown", with_metadata=False)
    if not text or not text.strip():
        raise Reject("empty_document", "no main text found in the page") from None
    meta = trafilatura.extract_metadata(html)
    return (meta.title if meta and meta.title else ""), text


def read_pdf(path: Path, max_bytes: int) -> tuple[str, str]:
    size = path.stat().st_size
    if size > max_bytes:
        raise Reject("huge_document", f"{size} bytes > limit {max_bytes}") from None
    try:
        from pypdf import PdfReader

        reader = PdfReader(str(path))
        pages = [page.extract_text() or "" for page in reader.pages]
        title = (reader.metadata.title if reader.metadata and reader.metadata.title else "") or ""
    except Exception as e:  # pypdf raises many exception types on broken files
        raise Reject("unreadable_pdf", f"{type(e).__name__}: {e}") from None
    text = "\n\n".join(p.strip() for p in pages if p.strip())
    if not text:
        raise Reject("empty_document", "the PDF has no extractable text (scanned?)") from None
    return str(title), text
