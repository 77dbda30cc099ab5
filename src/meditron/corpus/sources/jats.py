"""PMC JATS XML full text, rendered in the same MEDITRON format as S2ORC (see s2orc.py).

Citations (`<xref ref-type="bibr">`) become ` [bib_ref] title..., Surname [/bib_ref] ` from the
ref-list; figure/table references become ` [fig_ref] Figure 1: caption clause [/fig_ref] `;
`<fig>` / `<table-wrap>` become `[fig] ... [/fig]` / `[table] ... [/table]` blocks after the
body; display formulas become `[formula] ... [/formula]`; the reference list is dropped.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

from meditron.corpus.sources import GZ_ERRORS, Reject
from meditron.corpus.sources.s2orc import is_main_section_header, summarize_caption


def _local(tag) -> str:
    return tag.split("}")[-1] if isinstance(tag, str) else ""


def _plain(el) -> str:
    return re.sub(r"\s+", " ", "".join(el.itertext())).strip() if el is not None else ""


class _Article:
    def __init__(self, root):
        self.root = root
        self.refs: dict[str, str] = {}
        for ref in root.iter("ref"):
            rid = ref.get("id")
            title_el = next((e for e in ref.iter("article-title", "source")), None)
            surname = next((e for e in ref.iter("surname")), None)
            if rid and title_el is not None and surname is not None:
                words = _plain(title_el).split()
                title = " ".join(words[:12]) + ("..." if len(words) > 12 else "")
                self.refs[rid] = f"{title}, {_plain(surname)}"
        self.floats: dict[str, tuple[str, str]] = {}     # id -> (kind, "Label: caption")
        self.order: list[str] = []
        for el in root.iter("fig", "table-wrap"):
            fid = el.get("id") or f"float{len(self.order)}"
            label = _plain(el.find("label")).rstrip(".:") or ("Table" if el.tag == "table-wrap" else "Figure")
            label = label.replace("Fig.", "Figure").replace("Tab.", "Table")
            caption = _plain(el.find("caption"))
            self.floats[fid] = ("table" if el.tag == "table-wrap" else "fig", f"{label}: {caption}" if caption else label)
            self.order.append(fid)

    def ref_text(self, xref) -> str:
        kind = xref.get("ref-type", "")
        rids = (xref.get("rid") or "").split()
        if kind == "bibr":
            parts = [f" [bib_ref] {self.refs[r]} [/bib_ref] " for r in rids if r in self.refs]
            return "".join(parts) or " "
        if kind in ("fig", "table"):
            parts = []
            for r in rids:
                if r in self.floats:
                    label, _, caption = self.floats[r][1].partition(": ")
                    short = summarize_caption(caption, 12)
                    parts.append(f" [fig_ref] {label}: {short} [/fig_ref] " if short else f" [fig_ref] {label} [/fig_ref] ")
            return "".join(parts) or _plain(xref)
        return _plain(xref)

    def inline(self, el) -> str:
        out = [el.text or ""]
        for child in el:
            tag = child.tag if isinstance(child.tag, str) else ""
            if tag == "xref":
                out.append(self.ref_text(child))
            elif tag == "disp-formula":
                out.append("\n[formula] " + _plain(child) + " [/formula]\n")
            elif tag in ("fig", "table-wrap", "ref-list"):
                pass
            else:
                out.append(self.inline(child))
            out.append(child.tail or "")
        return "".join(out)

    def section(self, sec, depth: int, out: list[str]) -> None:
        for child in sec:
            tag = child.tag if isinstance(child.tag, str) else ""
            if tag == "title":
                title = _plain(child)
                if title:
                    title = title[0].upper() + title[1:].lower()
                    main = depth <= 0 and is_main_section_header(title)
                    out.append(("\n# " if main else "\n## ") + title + "\n")
            elif tag == "sec":
                self.section(child, depth + 1, out)
            elif tag == "p":
                out.append(self.inline(child).strip() + "\n")
            elif tag == "disp-formula":
                out.append("\n[formula] " + _plain(child) + " [/formula]\n")
            elif tag in ("list",):
                for item in child.iter("list-item"):
                    out.append("- " + _plain(item) + "\n")


def render_file(path: Path) -> tuple[str, str, str]:
    """(article id, title, text) of a JATS file (.xml, .nxml, optionally gzipped)."""
    from lxml import etree

    try:
        with open(path, "rb") as f:
            raw = f.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except GZ_ERRORS as e:
        raise Reject("truncated_or_corrupt_gzip", f"{type(e).__name__}: {e}") from None
    try:
        parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True, recover=False)
        root = etree.fromstring(raw, parser)
    except etree.XMLSyntaxError as e:
        raise Reject("malformed_xml", str(e)) from None
    for el in root.iter():          # drop namespaces (mml:, xlink:) for simple lookups
        if isinstance(el.tag, str) and "}" in el.tag:
            el.tag = _local(el.tag)
    if root.tag != "article":
        found = root.find(".//article")
        if found is None:
            raise Reject("not_jats", f"root element <{root.tag}> is not a JATS <article>") from None
        root = found
    meta = root.find("front/article-meta")
    rid = ""
    title = ""
    if meta is not None:
        for kind in ("pmc", "pmcid", "pmid", "doi"):
            el = meta.find(f"article-id[@pub-id-type='{kind}']")
            if el is not None and _plain(el):
                rid = f"{kind}:{_plain(el)}"
                break
        title = _plain(meta.find("title-group/article-title"))
    art = _Article(root)
    out: list[str] = []
    abstract = meta.find("abstract") if meta is not None else None
    if abstract is not None:
        out.append("\n# Abstract\n")
        art.section(abstract, 0, out)
    body = root.find("body")
    if body is not None:
        art.section(body, -1, out)
    ack = root.find("back/ack")
    if ack is not None:
        out.append("\n# Acknowledgments\n")
        art.section(ack, 0, out)
    for fid in art.order:
        kind, text = art.floats[fid]
        if "continued" not in text.lower():
            out.append(f"\n[{kind}] {text} [/{kind}]\n" if kind == "fig" else f"\n[table] {text} [/table]\n")
    text = "".join(out)
    text = re.sub(r"[ \t]+", " ", text)
    text = re.sub(r" *\n *", "\n", text)
    text = re.sub(r"\n+", "\n", text)
    text = re.sub(r"\n# ", "\n\n# ", text)
    text = re.sub(r"\n## ", "\n\n## ", text)
    for tag in ("[/fig_ref]", "[/bib_ref]"):
        text = text.replace(tag + " .", tag + ".").replace(tag + " ,", tag + ",")
    text = text.strip()
    if not text:
        raise Reject("empty_document", "the JATS article has no abstract or body text") from None
    return rid, title, (title + "\n\n" + text) if title else text
