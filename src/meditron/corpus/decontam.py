"""Decontamination: documents sharing a long word n-gram with a benchmark item.

Benchmarks are read here with small readers of the upstream layouts (the evaluation package is
a higher layer and is not imported): MedQA (US/4_options/phrases_no_exclude_test.jsonl, and
US/test.jsonl if present), MedMCQA (validation.jsonl or dev.json), PubMedQA (test_set.json),
MMLU-Medical (mmlu/test/<subject>_test.csv, 9 subjects), TruthfulQA (TruthfulQA.csv, if present).

Each item gives text segments (question, question+options, contexts, long answer). Every
n-gram (default 13 words) of a segment is indexed; a segment shorter than n words but at least
`min_words` long is indexed whole. N-grams shared by more than `max_items_per_ngram` items are
exam boilerplate ("which of the following is the most likely diagnosis") and are not used.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from meditron.corpus.ngrams import ngram_hashes, ngram_hashes_by_length, word_hashes
from meditron.errors import DataError

MMLU_MEDICAL = ["anatomy", "clinical_knowledge", "college_biology", "college_medicine", "high_school_biology",
                "medical_genetics", "nutrition", "professional_medicine", "virology"]


@dataclass
class Item:
    benchmark: str
    item_id: str
    segments: list[str]


def _jsonl(path: Path):
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f):
            if line.strip():
                yield n, json.loads(line)


def read_medqa(root: Path) -> list[Item]:
    items = []
    for rel in ("US/4_options/phrases_no_exclude_test.jsonl", "US/test.jsonl"):
        p = root / "medqa" / rel
        if not p.is_file():
            continue
        for n, row in _jsonl(p):
            opts = row.get("options") or {}
            values = list(opts.values()) if isinstance(opts, dict) else [o.get("value", "") for o in opts]
            q = row.get("question", "")
            items.append(Item("medqa", f"{rel}:{n}", [q, q + " " + " ".join(map(str, values))]))
    return items


def read_medmcqa(root: Path) -> list[Item]:
    d = root / "medmcqa"
    p = d / "validation.jsonl" if (d / "validation.jsonl").is_file() else d / "dev.json"
    if not p.is_file():
        return []
    items = []
    for n, row in _jsonl(p):
        q = row.get("question") or ""
        opts = [str(row.get(k) or "") for k in ("opa", "opb", "opc", "opd")]
        items.append(Item("medmcqa", str(row.get("id") or n), [q, q + " " + " ".join(opts)]))
    return items


def read_pubmedqa(root: Path) -> list[Item]:
    p = root / "pubmedqa" / "test_set.json"
    if not p.is_file():
        return []
    data = json.loads(p.read_text(encoding="utf-8"))
    return [Item("pubmedqa", str(pmid), [r.get("QUESTION", ""), " ".join(r.get("CONTEXTS", [])), r.get("LONG_ANSWER", "")])
            for pmid, r in data.items()]


def read_mmlu_medical(root: Path) -> list[Item]:
    items = []
    for subject in MMLU_MEDICAL:
        p = root / "mmlu" / "test" / f"{subject}_test.csv"
        if not p.is_file():
            continue
        with open(p, encoding="utf-8", newline="") as f:
            for n, row in enumerate(csv.reader(f)):
                if len(row) >= 5:
                    items.append(Item("mmlu_medical", f"{subject}:{n}", [row[0], " ".join(row[:5])]))
    return items


def read_truthfulqa(root: Path) -> list[Item]:
    for p in (root / "truthfulqa" / "TruthfulQA.csv", root / "TruthfulQA.csv"):
        if p.is_file():
            with open(p, encoding="utf-8", newline="") as f:
                rows = list(csv.DictReader(f))
            return [Item("truthfulqa", str(n), [r.get("Question", ""), r.get("Best Answer", "")])
                    for n, r in enumerate(rows)]
    return []


READERS = {"medqa": read_medqa, "medmcqa": read_medmcqa, "pubmedqa": read_pubmedqa,
           "mmlu_medical": read_mmlu_medical, "truthfulqa": read_truthfulqa}


def read_benchmarks(root: str | Path, names: list[str]) -> list[Item]:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"benchmarks dir {root} does not exist; set decontam.benchmarks_dir or decontam.enabled=false")
    items = []
    for name in names:
        if name not in READERS:
            raise DataError(f"unknown benchmark {name!r} in decontam.benchmarks; known: {', '.join(READERS)}")
        items.extend(READERS[name](root))
    return items


@dataclass
class NgramIndex:
    """Sorted n-gram hashes per length, each with the index of its item."""
    items: list[tuple[str, str]]                       # (benchmark, item_id)
    tables: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)   # items per benchmark

    def save(self, path: Path) -> None:
        arrays = {}
        for L, (h, it) in self.tables.items():
            arrays[f"h{L}"], arrays[f"i{L}"] = h, it
        np.savez(path, **arrays)
        path.with_suffix(".json").write_text(json.dumps({"items": self.items, "counts": self.counts}))

    @classmethod
    def load(cls, path: Path) -> "NgramIndex":
        meta = json.loads(path.with_suffix(".json").read_text())
        z = np.load(path)
        tables = {int(k[1:]): (z[k], z["i" + k[1:]]) for k in z.files if k.startswith("h")}
        return cls([tuple(x) for x in meta["items"]], tables, meta["counts"])

    _BITS = 26

    def _bitmap(self) -> np.ndarray:
        """A 2^26-bit filter of all indexed hashes: most document n-grams are rejected with one lookup."""
        bm = getattr(self, "_bm", None)
        if bm is None:
            bm = np.zeros(1 << (self._BITS - 3), dtype=np.uint8)
            mask = np.uint64((1 << self._BITS) - 1)
            for h, _ in self.tables.values():
                pos = h & mask
                np.bitwise_or.at(bm, (pos >> np.uint64(3)).astype(np.int64), (np.uint8(1) << (pos & np.uint64(7)).astype(np.uint8)))
            self._bm = bm
        return bm

    def match(self, wh: np.ndarray) -> set[int]:
        """Indices of the items sharing an indexed n-gram with a document (given its word hashes)."""
        found: set[int] = set()
        bm = self._bitmap()
        mask = np.uint64((1 << self._BITS) - 1)
        lengths = [L for L, (h, _) in self.tables.items() if wh.size >= L and h.size]
        for L, q in ngram_hashes_by_length(wh, lengths):
            h, it = self.tables[L]
            pos = q & mask
            maybe = (bm[(pos >> np.uint64(3)).astype(np.int64)] >> (pos & np.uint64(7)).astype(np.uint8)) & 1
            q = q[maybe.astype(bool)]
            if q.size == 0:
                continue
            lo = np.searchsorted(h, q, "left")
            hi = np.searchsorted(h, q, "right")
            for a, b in zip(lo[hi > lo].tolist(), hi[hi > lo].tolist()):
                found.update(it[a:b].tolist())
        return found


_POOL_ITEMS: list[Item] | None = None


def _hash_span(a: int, b: int, ngram: int, min_words: int):
    return _hash_items(_POOL_ITEMS, a, b, ngram, min_words)


def _hash_items(items: list[Item], a: int, b: int, ngram: int, min_words: int):
    """n-gram hashes and the owning item's index, per length, for items a..b-1."""
    hashes: dict[int, list[np.ndarray]] = {}
    owners: dict[int, list[np.ndarray]] = {}
    long_wh: list[np.ndarray] = []
    long_owner: list[int] = []
    for idx in range(a, b):
        for seg in items[idx].segments:
            wh = word_hashes(seg or "")
            if wh.size >= ngram:
                long_wh.append(wh)
                long_owner.append(idx)
            elif wh.size >= min_words:
                L = int(wh.size)
                hashes.setdefault(L, []).append(ngram_hashes(wh, L))
                owners.setdefault(L, []).append(np.full(1, idx, dtype=np.int32))
    if long_wh:   # all long segments at once; drop the n-grams that straddle two segments
        sizes = np.array([w.size for w in long_wh])
        seg_of = np.repeat(np.arange(len(long_wh)), sizes)
        h = ngram_hashes(np.concatenate(long_wh), ngram)
        inside = seg_of[: h.size] == seg_of[ngram - 1:]
        hashes.setdefault(ngram, []).append(h[inside])
        owners.setdefault(ngram, []).append(np.asarray(long_owner, dtype=np.int32)[seg_of[: h.size][inside]])
    return ({L: np.concatenate(v) for L, v in hashes.items()}, {L: np.concatenate(v) for L, v in owners.items()})


def build_index(items: list[Item], ngram: int = 13, min_words: int = 8, max_items_per_ngram: int = 3,
                workers: int = 1) -> NgramIndex:
    """The index of every benchmark item's n-grams. With workers > 1 (fork only) the items are
    hashed in that many processes: the build runs before any parallel stage, so its time is
    serial. The tables are sorted at the end, so they do not depend on `workers`."""
    hashes: dict[int, list[np.ndarray]] = {}
    owners: dict[int, list[np.ndarray]] = {}
    step = -(-len(items) // max(1, workers))
    spans = [(a, min(len(items), a + step)) for a in range(0, len(items), step)] if items else []
    if workers > 1 and len(spans) > 1:
        import multiprocessing as mp

        global _POOL_ITEMS
        _POOL_ITEMS = items                     # inherited by the forked children, not pickled
        try:
            with mp.get_context("fork").Pool(len(spans)) as pool:
                parts = pool.starmap(_hash_span, [(a, b, ngram, min_words) for a, b in spans])
        finally:
            _POOL_ITEMS = None
    else:
        parts = [_hash_items(items, a, b, ngram, min_words) for a, b in spans]
    for part_h, part_o in parts:
        for L in part_h:
            hashes.setdefault(L, []).append(part_h[L])
            owners.setdefault(L, []).append(part_o[L])
    tables = {}
    for L in sorted(hashes):
        h, it = np.concatenate(hashes[L]), np.concatenate(owners[L])
        order = np.lexsort((it, h))                                              # by hash, then item
        h, it = h[order], it[order]
        first = np.ones(h.size, dtype=bool)
        first[1:] = (h[1:] != h[:-1]) | (it[1:] != it[:-1])                      # unique (hash, item) pairs
        h, it = h[first], it[first]
        uniq, start, count = np.unique(h, return_index=True, return_counts=True)
        keep = np.repeat(count <= max_items_per_ngram, count)                    # drop exam boilerplate
        tables[L] = (np.ascontiguousarray(h[keep]), np.ascontiguousarray(it[keep]))
    counts: dict[str, int] = {}
    for item in items:
        counts[item.benchmark] = counts.get(item.benchmark, 0) + 1
    return NgramIndex([(i.benchmark, i.item_id) for i in items], tables, counts)
