"""Deduplication: exact (normalised-text hash) and near-duplicate (MinHash + LSH).

Per document (parallel stage): `exact_key` and `minhash` signature. Across the corpus (global
stage): `cluster` groups documents whose exact keys are equal, or that share an LSH band and
whose signatures agree on at least `threshold` of their values (estimated Jaccard), with a
union-find. Each cluster keeps ONE document, by this rule: the source listed first in the
config wins (guidelines before papers before abstracts before replay, as listed), then the
longer text, then the smaller document key (input order). Output depends only on the data.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np
from meditron.corpus.ngrams import ngram_hashes

_NORM = re.compile(r"[^0-9a-z]+")
_MERSENNE = (1 << 61) - 1


def exact_key(text: str, key_chars: int = 0) -> str:
    """sha1 of the lower-cased text with non-alphanumerics removed (MEDITRON's `_hash_for_dedup`
    used the first 500 characters: set key_chars=500 for that)."""
    norm = _NORM.sub("", text.lower())
    if key_chars:
        norm = norm[:key_chars]
    return hashlib.sha1(norm.encode("utf-8")).hexdigest()


class MinHasher:
    """MinHash over word shingles with `bands * rows` multiply-shift hash functions."""

    BLOCK = 512     # shingles hashed at once

    def __init__(self, shingle: int = 5, bands: int = 20, rows: int = 5, seed: int = 1):
        self.shingle, self.bands, self.rows = shingle, bands, rows
        self.n = bands * rows
        rng = np.random.default_rng(seed)
        self.a = (rng.integers(1, 2**63, size=self.n, dtype=np.uint64) << np.uint64(1)) | np.uint64(1)
        self.b = rng.integers(0, 2**63, size=self.n, dtype=np.uint64)

    def signature(self, wh: np.ndarray) -> np.ndarray:
        """uint32[n] signature of a document given its word hashes (all-ones if no shingle)."""
        sh = ngram_hashes(wh, min(self.shingle, wh.size)) if wh.size else np.zeros(0, np.uint64)
        if sh.size == 0:
            return np.full(self.n, 0xFFFFFFFF, dtype=np.uint32)
        sh = np.unique(sh)
        sig = np.full(self.n, np.iinfo(np.uint64).max, dtype=np.uint64)
        # 512 shingles x 100 hashes = 400 kB: one reused buffer that stays in a core's own L2
        # (4096-row temporaries were 3.3 MB each, twice, and two workers fought over the shared L3)
        hv = np.empty((min(self.BLOCK, sh.size), self.n), dtype=np.uint64)
        with np.errstate(over="ignore"):
            for start in range(0, sh.size, self.BLOCK):
                block = sh[start:start + self.BLOCK]
                out = hv[: block.size]
                np.multiply(block[:, None], self.a[None, :], out=out)
                out += self.b
                np.minimum(sig, out.min(axis=0), out=sig)
        return (sig >> np.uint64(32)).astype(np.uint32)

    def band_keys(self, sigs: np.ndarray) -> np.ndarray:
        """uint64[docs, bands]: one hash per band of `rows` signature values."""
        sigs = sigs.astype(np.uint64)
        out = np.zeros((sigs.shape[0], self.bands), dtype=np.uint64)
        with np.errstate(over="ignore"):
            for b in range(self.bands):
                h = np.full(sigs.shape[0], np.uint64(0x9E3779B97F4A7C15) * np.uint64(b + 1), dtype=np.uint64)
                for r in range(self.rows):
                    h = (h ^ sigs[:, b * self.rows + r]) * np.uint64(0x100000001B3)
                    h ^= h >> np.uint64(29)
                out[:, b] = h
        return out


class UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, x: int) -> int:
        p = self.parent
        while p[x] != x:
            p[x] = p[p[x]]
            x = p[x]
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            if ra < rb:
                self.parent[rb] = ra
            else:
                self.parent[ra] = rb


@dataclass
class DedupResult:
    keep: np.ndarray            # bool[n]
    reason: list[str]           # "" or "exact_duplicate" / "near_duplicate"
    kept_by: list[int]          # index of the kept member of each document's cluster
    clusters: list[list[int]]   # clusters of size > 1 (indices), kept member first
    candidate_pairs: int
    verified_pairs: int


def _buckets(keys: np.ndarray) -> list[list[int]]:
    """Indices sharing a band key, for every key held by two or more documents (ascending indices).

    numpy instead of a dict of lists: the select stage is serial, so its time caps the speed-up
    of a parallel build. Which pairs are compared does not depend on the order of the buckets.
    """
    order = np.argsort(keys, kind="stable")
    sk = keys[order]
    starts = np.flatnonzero(np.concatenate(([True], sk[1:] != sk[:-1])))
    sizes = np.diff(np.append(starts, sk.size))
    return [order[a:a + n].tolist() for a, n in zip(starts[sizes > 1].tolist(), sizes[sizes > 1].tolist())]


def cluster(exact_keys: list[str] | None, sigs: np.ndarray | None, rank_key: list[tuple],
            hasher: MinHasher | None = None, threshold: float = 0.7) -> DedupResult:
    """Cluster documents and choose one per cluster: the one with the smallest `rank_key`."""
    n = len(rank_key)
    uf = UnionFind(n)
    exact_edge = set()
    if exact_keys is not None:
        first: dict[str, int] = {}
        for i, k in enumerate(exact_keys):
            j = first.setdefault(k, i)
            if j != i:
                uf.union(i, j)
                exact_edge.add(i)
                exact_edge.add(j)
    cand = verified = 0
    if sigs is not None and hasher is not None and n > 1:
        keys = hasher.band_keys(sigs)
        seen_pairs: set[tuple[int, int]] = set()
        for b in range(hasher.bands):
            for members in _buckets(keys[:, b]):
                # all pairs in small buckets; star edges from the first member in big ones
                pairs = ([(x, y) for k, x in enumerate(members) for y in members[k + 1:]]
                         if len(members) <= 32 else [(members[0], y) for y in members[1:]])
                for pair in pairs:
                    if pair in seen_pairs:
                        continue
                    seen_pairs.add(pair)
                    cand += 1
                    x, y = pair
                    if uf.find(x) == uf.find(y):
                        continue
                    if float(np.mean(sigs[x] == sigs[y])) >= threshold:
                        verified += 1
                        uf.union(x, y)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(uf.find(i), []).append(i)
    keep = np.ones(n, dtype=bool)
    reason = [""] * n
    kept_by = list(range(n))
    clusters = []
    for members in groups.values():
        if len(members) == 1:
            continue
        members.sort(key=lambda i: rank_key[i])
        winner = members[0]
        clusters.append(members)
        for i in members[1:]:
            keep[i] = False
            kept_by[i] = winner
            same_text = exact_keys is not None and exact_keys[i] == exact_keys[winner]
            reason[i] = "exact_duplicate" if same_text else "near_duplicate"
    clusters.sort(key=lambda m: m[0])
    return DedupResult(keep, reason, kept_by, clusters, cand, verified)
