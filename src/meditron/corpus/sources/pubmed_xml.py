"""NCBI PubMed baseline XML (`pubmed24n0001.xml.gz`): one document per PubmedArticle.

text = title + "\\n" + abstract (MEDITRON's abstract format); structured abstracts keep their
section labels ("METHODS: ..."), one section per line. Streamed with lxml.iterparse, so a
truncated .gz yields the records before the cut and then one reject.
"""

from __future__ import annotations

import gzip
from pathlib import Path

from meditron.corpus.sources import GZ_ERRORS, Reject


def _text(el) -> str:
    return "".join(el.itertext()).strip() if el is not None else ""


def iter_articles(path: Path):
    from lxml import etree

    n = 0
    try:
        raw = open(path, "rb")
        head = raw.read(2)
        raw.seek(0)
        stream = gzip.GzipFile(fileobj=raw) if head == b"\x1f\x8b" else raw
        with stream:
            for _, el in etree.iterparse(stream, events=("end",), tag="PubmedArticle", recover=False,
                                         resolve_entities=False, no_network=True, huge_tree=True):
                yield f"record {n}", el
                n += 1
                el.clear()
                while el.getprevious() is not None:
                    del el.getparent()[0]
    except GZ_ERRORS as e:
        yield f"after record {n}", Reject("truncated_or_corrupt_gzip", f"{type(e).__name__}: {e}")
    except etree.XMLSyntaxError as e:
        yield f"after record {n}", Reject("malformed_xml", str(e))


def article_to_doc(el) -> tuple[str, str, str, str]:
    """(pmid, title, text, language) of a PubmedArticle element."""
    cit = el.find("MedlineCitation")
    if cit is None:
        raise Reject("malformed_xml", "PubmedArticle without MedlineCitation")
    pmid = _text(cit.find("PMID"))
    art = cit.find("Article")
    if not pmid or art is None:
        raise Reject("malformed_xml", "PubmedArticle without PMID or Article")
    title = _text(art.find("ArticleTitle"))
    parts = []
    for ab in art.findall("Abstract/AbstractText"):
        body = _text(ab)
        if not body:
            continue
        label = ab.get("Label")
        parts.append(f"{label}: {body}" if label and label.upper() != "UNLABELLED" else body)
    if not parts:
        raise Reject("no_abstract", f"PMID {pmid} has no abstract", title)
    lang = _text(art.find("Language")) or "eng"
    text = (title + "\n" if title else "") + "\n".join(parts)
    return pmid, title, text, lang
