"""S2ORC full text rendered in MEDITRON's format (MEDITRON.md §3.2, `pubmed/process.py`).

- author names and affiliations, the bibliography, and the header before the abstract or first
  section are dropped;
- section headers: first letter capitalised, rest lower-cased; `# ` for main headers (at most 3
  words containing Abstract, Introduction, Methods, ...), `## ` otherwise;
- in-text citations: ` [bib_ref] {title, at most 12 words + '...'}, {first author's last name} [/bib_ref] `;
  unresolved ones are dropped;
- figure/table references: ` [fig_ref] {Figure N}: {caption's first clause, at most 12 words} [/fig_ref] `;
- figures and tables: `\\n[fig] Figure N: caption [/fig]\\n`, `\\n[table] Table N: caption [/table]\\n`
  (text after the first figure block is not body text);
- formulas: `\\n[formula] ... [/formula]\\n`;
- the title is prepended as `title + "\\n\\n"`; runs of newlines and spaces are collapsed.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

from meditron.corpus.sources import Reject

MAIN_SECTION_HEADERS = [
    "Abstract", "Introduction", "Background", "Related", "Method", "Material", "Result", "Analysis",
    "Discussion", "Conclusion", "Contribution", "Statement", "Declaration", "Strength", "Limitation",
    "Future research", "Funding", "Disclosure", "Acknowledgment", "Ethical", "Tables", "Figures", "Appendix",
]


def is_main_section_header(section: str) -> bool:
    if len(section.split(" ")) > 3:
        return False
    low = section.lower()
    return any(h.lower() in low for h in MAIN_SECTION_HEADERS)


def summarize_caption(caption: str, max_words: int | None) -> str:
    """First clause if longer than 20 characters, then at most `max_words` words (+ '...')."""
    if max_words is None:
        return caption.strip()
    if len(caption) > 20:
        caption = re.split(r"[.;:()]", caption)[0]
    words = caption.split()
    if len(words) > max_words:
        caption = " ".join(words[:max_words]) + "..."
    return caption.strip()


def _spans(annotations: dict, key: str) -> list[dict]:
    raw = annotations.get(key)
    if not raw:
        return []
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            return []
    out = []
    for a in raw if isinstance(raw, list) else []:
        try:
            out.append({"start": int(a["start"]), "end": int(a["end"]), "attributes": a.get("attributes") or {}})
        except (KeyError, TypeError, ValueError):
            continue
    return out


class _Paper:
    def __init__(self, text: str, ann: dict):
        self.text, self.ann = text, ann
        self.bibentries = _spans(ann, "bibentry")
        self.bibtitles = _spans(ann, "bibtitle")
        self.biblast = _spans(ann, "bibauthorlastname")
        self.figures = _spans(ann, "figure")
        self.captions = _spans(ann, "figurecaption")

    def _inside(self, spans, start, end):
        for s in spans:
            if s["start"] >= start and s["end"] <= end:
                return self.text[s["start"]:s["end"]]
        return None

    def bib(self, bib_id: str, max_words: int = 12) -> str | None:
        for e in self.bibentries:
            if e["attributes"].get("id") == bib_id:
                title = self._inside(self.bibtitles, e["start"], e["end"])
                author = self._inside(self.biblast, e["start"], e["end"])
                if not title or not author:
                    return None
                words = title.split()
                if len(words) > max_words:
                    title = " ".join(words[:max_words]) + "..."
                return f"{title.strip()}, {author.strip()}"
        return None

    def fig(self, fig_id: str, max_words: int | None = 12) -> str | None:
        for f in self.figures:
            if f["attributes"].get("id") != fig_id:
                continue
            cap = None
            for c in self.captions:
                if c["start"] >= f["start"] and c["end"] <= f["end"]:
                    cap = c
                    break
            if cap is None:
                return None
            prefix = self.text[f["start"]:cap["start"]].strip()
            caption = self.text[cap["start"]:cap["end"]].strip()
            name = prefix.split("\n")[-1] if prefix else ""
            m = re.match(r"\s*((?:Fig\.?|Figure|Tab\.?|Table)\s*[0-9]+[A-Za-z]?)\s*[.:]?", caption)
            if m:              # the caption repeats its label ("Figure 1. ..."): keep it once
                name, caption = name or m.group(1), caption[m.end():]
            name = re.sub(r"[:()]", "", name).replace("Fig.", "Figure").replace("Tab.", "Table").strip()
            if not name:
                kind, _, num = fig_id.partition("_")
                name = ("Table " if kind.lower().startswith("tab") else "Figure ") + str(int(num) + 1 if num.isdigit() else num)
            caption = summarize_caption(caption, max_words).lstrip(".,) ").strip()
            if not caption:
                return None
            return f"{name}: {caption}"
        return None


# label codes: 0 body text, 1 removed, 2 pre-header, 3 bibliography, 4 formula, 5 section header,
# >= 16: an id in `names` (references and figure contents)
T, RM, PRE, BIB, FML, SEC = 0, 1, 2, 3, 4, 5


def render(record: dict[str, Any]) -> str:
    """A S2ORC record ({content: {text, annotations}, title?}) as MEDITRON-formatted text."""
    content = record.get("content")
    if not isinstance(content, dict):
        raise Reject("missing_text", "S2ORC record without `content`")
    text = content.get("text")
    if not isinstance(text, str) or not text.strip():
        raise Reject("empty_document", "S2ORC record with empty content.text")
    ann = content.get("annotations") or {}
    if not isinstance(ann, dict):
        raise Reject("malformed_annotations", "content.annotations is not an object")
    n = len(text)
    labels = np.zeros(n, dtype=np.int32)
    names: list[str] = []

    def name_code(name: str) -> int:
        if name not in names:
            names.append(name)
        return 16 + names.index(name)

    for key, code in (("authorfirstname", RM), ("authorlastname", RM), ("authoraffiliation", RM),
                      ("author", RM), ("bibentry", BIB), ("formula", FML), ("sectionheader", SEC)):
        for s in _spans(ann, key):
            labels[s["start"]:s["end"]] = code
    for key in ("bibref", "figureref", "tableref"):
        for s in _spans(ann, key):
            start, end = s["start"], s["end"]
            before, after = text[max(0, start - 3):start], text[end:end + 3]
            if "(" in before:                       # MEDITRON's fix for "(Smith et al., 2001)"
                start = max(0, start - 3) + before.index("(")
            if ")" in after:
                end = end + after.index(")") + 1
            ref = s["attributes"].get("ref_id")
            labels[start:end] = name_code("REF:" + ref) if ref else name_code("REF:?")
    for s in _spans(ann, "figure"):
        fid = s["attributes"].get("id")
        if fid:
            labels[s["start"]:s["end"]] = name_code("FIG:" + fid)

    # drop the header before the abstract / first section
    starts = [s["start"] for s in _spans(ann, "abstract")[:1]] + [s["start"] for s in _spans(ann, "sectionheader")]
    if starts:
        first = min(starts)
        head = labels[:first]
        head[head == T] = PRE

    paper = _Paper(text, ann)
    out: list[str] = []
    cache: dict[str, str | None] = {}
    at_figures = False
    added: set[str] = set()
    bounds = np.flatnonzero(np.diff(labels)) + 1
    edges = [0, *bounds.tolist(), n]
    for a, b in zip(edges[:-1], edges[1:]):
        code = int(labels[a])
        part = text[a:b].strip().replace("•", "- ")
        if not part:
            continue
        if code == T:
            if not at_figures:
                out.append(part)
        elif code == SEC:
            part = part[0].upper() + part[1:].lower()
            out.append(("\n# " if is_main_section_header(part) else "\n## ") + part + "\n")
        elif code == FML:
            out.append("\n[formula] " + part + " [/formula]\n")
        elif code >= 16:
            name = names[code - 16]
            kind, _, ident = name.partition(":")
            if kind == "REF":
                if ident == "?":
                    out.append(" ")
                    continue
                low = ident.lower()
                if low.startswith(("fig", "tab")):
                    if name not in cache:
                        cache[name] = paper.fig(ident, 12)
                    if cache[name]:
                        out.append(" [fig_ref] " + cache[name] + " [/fig_ref] ")
                else:
                    if name not in cache:
                        cache[name] = paper.bib(ident)
                    out.append(" [bib_ref] " + cache[name] + " [/bib_ref] " if cache[name] else " ")
            else:  # FIG: figure or table content
                at_figures = True
                full = paper.fig(ident, None)
                if full and "continued" not in full.lower():
                    key = full.split(":")[0].lower()
                    if key not in added:
                        added.add(key)
                        tags = ("[table]", "[/table]") if ident.lower().startswith("tab") else ("[fig]", "[/fig]")
                        out.append(f"\n{tags[0]} {full} {tags[1]}\n")
        # RM, PRE, BIB: dropped
    body = "".join(out)
    body = re.sub(r"\n+", "\n", body)
    body = re.sub(r"\n# ", "\n\n# ", body)
    body = re.sub(r"\n## ", "\n\n## ", body)
    body = re.sub(r" +", " ", body)
    body = re.sub(r" *\n *", "\n", body)
    body = body.replace("[/fig_ref] .", "[/fig_ref].").replace("[/bib_ref] .", "[/bib_ref].")
    body = body.replace("[/fig_ref] ,", "[/fig_ref],").replace("[/bib_ref] ,", "[/bib_ref],")
    body = body.strip()
    title = record.get("title")
    if not title:
        spans = _spans(ann, "title")
        title = text[spans[0]["start"]:spans[0]["end"]].strip() if spans else ""
    if not body:
        raise Reject("empty_document", "nothing left after rendering the S2ORC annotations")
    return (title.strip() + "\n\n" + body) if title else body
