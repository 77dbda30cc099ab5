"""Stable word and n-gram hashing shared by dedup and decontamination.

Words are lower-cased runs of letters and digits (`\\w+`, Unicode aware), so punctuation and
case differences never hide an overlap. A word hashes to a stable 64-bit value (xxh64, never
Python's salted `hash`); an n-gram hash is a polynomial combination of its word hashes,
computed for all positions at once with numpy (uint64 arithmetic wraps, which is what we want).
"""

from __future__ import annotations

import re

import numpy as np
import xxhash

WORD_RE = re.compile(r"\w+", re.UNICODE)
_P = np.uint64(0x100000001B3)          # FNV prime: odd, large
_cache: dict[str, int] = {}


def words(text: str) -> list[str]:
    return WORD_RE.findall(text.lower())


def word_hashes(text: str) -> np.ndarray:
    """uint64 hash of each word of `text`."""
    cache = _cache
    ws = WORD_RE.findall(text.lower())
    try:   # map over the dict's own lookup: no Python frame per word
        return np.fromiter(map(cache.__getitem__, ws), dtype=np.uint64, count=len(ws))
    except KeyError:
        if len(cache) > 2_000_000:      # bound memory on huge vocabularies
            cache.clear()
        for w in ws:
            if w not in cache:
                cache[w] = xxhash.xxh64_intdigest(w.encode("utf-8"))
        return np.fromiter(map(cache.__getitem__, ws), dtype=np.uint64, count=len(ws))


def ngram_hashes(wh: np.ndarray, n: int) -> np.ndarray:
    """Hashes of all n-grams of a word-hash array (empty if fewer than n words)."""
    return next(ngram_hashes_by_length(wh, [n]))[1]


def ngram_hashes_by_length(wh: np.ndarray, lengths):
    """(n, hashes of all n-grams) for each n of `lengths`, ascending; equal to `ngram_hashes(wh, n)`.

    The polynomial of an (n+1)-gram is that of its n-gram times P plus one word, so the lengths
    share one running polynomial: decontamination looks up 6 lengths per document, and this does
    about a third of the array passes of hashing each length from scratch.
    """
    poly, done = None, 0
    for n in sorted(lengths):
        m = wh.size - n + 1
        if m <= 0:
            yield n, np.zeros(0, dtype=np.uint64)
            continue
        poly = np.zeros(m, dtype=np.uint64) if poly is None else poly[:m]
        with np.errstate(over="ignore"):     # never held across the yield: the caller's state is its own
            for j in range(done, n):
                poly *= _P
                poly += wh[j:j + m]
        done = n
        yield n, _avalanche(poly.copy())


def _avalanche(h: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, in place, so nearby n-grams spread over the range (uint64 wraps)."""
    with np.errstate(over="ignore"):
        h ^= h >> np.uint64(30)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(27)
        h *= np.uint64(0x94D049BB133111EB)
        h ^= h >> np.uint64(31)
    return h


def whole_hash(wh: np.ndarray) -> int:
    """Hash of a whole (short) word sequence, equal to `ngram_hashes(wh, len(wh))[0]`."""
    return int(ngram_hashes(wh, wh.size)[0]) if wh.size else 0
