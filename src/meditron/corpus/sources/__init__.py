"""Source readers: turn files (or a hub dataset) into documents {id, text, source, meta}.

A reader walks "units" (a JSONL line, an XML record, a file) cheaply and in a fixed order; unit
k belongs to task k % tasks, and only that task parses it. So every task sees the same stream,
the split of work depends only on the data and `tasks`, and malformed units become `Reject`s
with a reason instead of exceptions. Units past `limit` (per source) are not read.
"""

from __future__ import annotations

import glob
import gzip
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meditron.corpus.config import SourceConfig
from meditron.errors import ConfigError


class Reject(Exception):
    """A malformed or unusable input unit: kept out of the corpus and written to rejects with a reason."""

    def __init__(self, reason: str, detail: str = "", snippet: str = ""):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail, self.snippet = reason, detail, snippet[:200]


@dataclass
class Unit:
    file: str           # path relative to root (or hub name)
    where: str          # "line 12", "record 3", "" for whole files
    payload: Any        # raw bytes, an lxml element, a dict, a path...
    kind: str           # parser to use


@dataclass
class Doc:
    id: str
    text: str
    source: str                     # the config source name
    meta: dict[str, Any] = field(default_factory=dict)


GZ_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile, OSError)


def list_files(src: SourceConfig, root: Path) -> list[Path]:
    files: list[Path] = []
    for pattern in src.paths:
        full = pattern if Path(pattern).is_absolute() else str(root / pattern)
        files.extend(Path(p) for p in glob.glob(full, recursive=True) if Path(p).is_file())
    return sorted(set(files))


def check_sources(sources: list[SourceConfig], root: Path) -> dict[str, list[Path]]:
    """Every file-based source must match at least one file (a one-line config error otherwise)."""
    out = {}
    for i, src in enumerate(sources):
        if src.type == "hub":
            out[src.name] = []
            continue
        files = list_files(src, root)
        if not files:
            raise ConfigError(f"sources[{i}] ({src.name}): paths {src.paths} match no file under root {root}; "
                              "fix `root` (e.g. --set root=DIR) or the globs")
        out[src.name] = files
    return out


def _open_binary(path: Path):
    f = open(path, "rb")
    if f.read(2) == b"\x1f\x8b":
        f.seek(0)
        return gzip.GzipFile(fileobj=f, mode="rb")
    f.seek(0)
    return f


def _detect(path: Path) -> str:
    name = path.name.lower()
    for suffix in (".gz",):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    if name.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    if name.endswith((".nxml",)):
        return "jats"
    if name.endswith(".xml"):
        try:
            with _open_binary(path) as f:
                head = f.read(4096)
        except GZ_ERRORS:
            return "jats"
        return "pubmed_xml" if b"PubmedArticle" in head else "jats"
    if name.endswith((".html", ".htm", ".xhtml")):
        return "html"
    if name.endswith(".pdf"):
        return "pdf"
    if name.endswith(".parquet"):
        return "parquet"
    return "unknown"


def _units(kind: str, path: Path, rel: str, src: SourceConfig) -> Iterator[Unit]:
    if kind in ("guidelines", "pubmed_jsonl", "s2orc", "jsonl"):
        n = 0
        try:
            with _open_binary(path) as f:
                for n, line in enumerate(f, 1):
                    if line.strip():
                        yield Unit(rel, f"line {n}", line, kind)
        except GZ_ERRORS as e:
            yield Unit(rel, f"after line {n}", Reject("truncated_or_corrupt_gzip", f"{type(e).__name__}: {e}"), kind)
    elif kind == "pubmed_xml":
        from meditron.corpus.sources.pubmed_xml import iter_articles
        yield from (Unit(rel, where, payload, kind) for where, payload in iter_articles(path))
    elif kind in ("jats", "html", "pdf"):
        yield Unit(rel, "", path, kind)
    elif kind == "parquet":
        try:
            import pyarrow.parquet as pq
            pf = pq.ParquetFile(path)
            n = 0
            for batch in pf.iter_batches(batch_size=1024):
                for row in batch.to_pylist():
                    yield Unit(rel, f"row {n}", row, kind)
                    n += 1
        except Exception as e:  # pyarrow raises many types on bad files
            yield Unit(rel, "", Reject("unreadable_parquet", f"{type(e).__name__}: {e}"), kind)
    else:
        yield Unit(rel, "", Reject("unknown_source_type", f"cannot tell how to read {path.name}"), kind)


def _hub_units(src: SourceConfig) -> Iterator[Unit]:
    try:
        from datasets import load_dataset
        ds = load_dataset(src.hub_name, src.hub_config or None, split=src.hub_split, streaming=True)
    except Exception as e:
        raise ConfigError(f"hub dataset {src.hub_name!r} could not be opened ({type(e).__name__}); "
                          "it needs network access and a valid name") from None
    for n, row in enumerate(ds):
        yield Unit(src.hub_name, f"row {n}", row, "hub")


def iter_units(src: SourceConfig, files: list[Path], root: Path) -> Iterator[Unit]:
    if src.type == "hub":
        yield from _hub_units(src)
        return
    for path in files:
        try:
            rel = str(path.relative_to(root))
        except ValueError:
            rel = str(path)
        kind = _detect(path) if src.type == "auto" else src.type
        yield from _units(kind, path, rel, src)


def _decode_json(raw: bytes) -> dict:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Reject("bad_encoding", f"not UTF-8 at byte {e.start}", raw[:200].decode("utf-8", "replace")) from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise Reject("malformed_json", e.msg, text) from None
    if not isinstance(obj, dict):
        raise Reject("not_an_object", f"a JSON {type(obj).__name__}, expected an object", text) from None
    return obj


def _text(obj: dict, *fields: str) -> str:
    for f in fields:
        value = obj.get(f)
        if value is None:
            continue
        if not isinstance(value, str):
            raise Reject("bad_text_type", f"field {f!r} is a {type(value).__name__}, expected a string") from None
        if value.strip():
            return value
    raise Reject("empty_document", f"no text in fields {', '.join(fields)}", json.dumps(obj)[:200])


def _rid(obj: dict, src: SourceConfig, unit: Unit, *fields: str) -> str:
    for f in (src.id_field, *fields):
        value = obj.get(f) if f else None
        if value not in (None, ""):
            return str(value)
    return f"{unit.file}#{unit.where.replace(' ', '')}"


def parse(unit: Unit, src: SourceConfig, max_bytes: int) -> Doc:
    """One unit to one document, or raise Reject."""
    p = unit.payload
    if isinstance(p, Reject):
        raise p
    kind = unit.kind
    if isinstance(p, (bytes, bytearray)) and len(p) > max_bytes:
        raise Reject("huge_document", f"{len(p)} bytes > limit {max_bytes}") from None
    if kind == "guidelines":
        obj = _decode_json(p)
        text = _text(obj, "clean_text", "text", "raw_text") if src.text_field == "text" else _text(obj, src.text_field)
        meta = {k: obj[k] for k in ("title", "url", "source", "overview") if obj.get(k) not in (None, "")}
        return Doc(_rid(obj, src, unit), text, src.name, meta)
    if kind == "pubmed_jsonl":
        obj = _decode_json(p)
        if isinstance(obj.get(src.text_field), str) and obj[src.text_field].strip():
            text = obj[src.text_field]
        else:
            abstract = _text(obj, "abstract")
            title = obj.get("title") or ""
            text = (title.strip() + "\n" + abstract) if isinstance(title, str) and title.strip() else abstract
        meta = {k: obj[k] for k in ("title", "pmid", "source") if obj.get(k) not in (None, "")}
        return Doc(_rid(obj, src, unit, "pmid", "corpusid"), text, src.name, meta)
    if kind == "s2orc":
        from meditron.corpus.sources.s2orc import render
        obj = _decode_json(p)
        text = render(obj)
        ext = obj.get("externalids") or {}
        meta = {k: v for k, v in (("title", obj.get("title")), ("pmid", ext.get("pubmed") if isinstance(ext, dict) else None)) if v}
        return Doc(_rid(obj, src, unit, "corpusid"), text, src.name, meta)
    if kind == "jats":
        from meditron.corpus.sources.jats import render_file
        rid, title, text = render_file(p)
        return Doc(rid or unit.file, text, src.name, {"title": title} if title else {})
    if kind == "pubmed_xml":
        from meditron.corpus.sources.pubmed_xml import article_to_doc
        pmid, title, text, lang = article_to_doc(p)
        return Doc(f"pmid:{pmid}", text, src.name, {"title": title, "pmid": pmid, "language": lang})
    if kind == "html":
        from meditron.corpus.sources.files import read_html
        title, text = read_html(p, max_bytes)
        return Doc(unit.file, text, src.name, {"title": title} if title else {})
    if kind == "pdf":
        from meditron.corpus.sources.files import read_pdf
        title, text = read_pdf(p, max_bytes)
        return Doc(unit.file, text, src.name, {"title": title} if title else {})
    if kind in ("jsonl", "parquet", "hub"):
        obj = _decode_json(p) if isinstance(p, (bytes, bytearray)) else p
        text = _text(obj, src.text_field)
        meta = {k: obj[k] for k in ("title", "url", "source") if isinstance(obj.get(k), str) and obj.get(k)}
        return Doc(_rid(obj, src, unit), text, src.name, meta)
    raise Reject("unknown_source_type", f"no reader for {kind!r}")


def read_source(src: SourceConfig, files: list[Path], root: Path, rank: int = 0, world: int = 1,
                limit: int = 0, max_bytes: int = 20_000_000) -> Iterator[tuple[int, Unit, Doc | Reject]]:
    """(unit index, unit, Doc or Reject) for this task's share of a source."""
    for k, unit in enumerate(iter_units(src, files, root)):
        if limit and k >= limit:
            return
        if k % world != rank:
            continue
        try:
            yield k, unit, parse(unit, src, max_bytes)
        except Reject as r:
            yield k, unit, r
        except Exception as e:  # a reader bug or a library failure on odd input: never crash the run
            yield k, unit, Reject("reader_error", f"{type(e).__name__}: {e}")
