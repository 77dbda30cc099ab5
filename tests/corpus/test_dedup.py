"""Exact and near-duplicate detection; precision and recall on a synthetic set with known edits."""

from __future__ import annotations

import itertools
import random

import numpy as np

from meditron.corpus.config import DedupConfig
from meditron.corpus.dedup import MinHasher, cluster, exact_key
from meditron.corpus.ngrams import word_hashes


def edit(words: list[str], rate: float, rng: random.Random, vocab: list[str]) -> list[str]:
    """Substitute, delete or insert a word at each position with probability `rate` (a third each)."""
    out = []
    for w in words:
        r = rng.random()
        if r < rate / 3:
            out.append(rng.choice(vocab))
        elif r < 2 * rate / 3:
            continue
        elif r < rate:
            out.extend([w, rng.choice(vocab)])
        else:
            out.append(w)
    return out


def test_near_duplicate_precision_recall():
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(5000)]
    texts, group = [], []
    for g in range(120):
        base = [rng.choice(vocab) for _ in range(rng.randint(150, 400))]
        texts.append(" ".join(base)); group.append(g)
        for _ in range(2):                  # near duplicates: 1% of words edited (true Jaccard ~0.77-0.9)
            texts.append(" ".join(edit(base, 0.01, rng, vocab))); group.append(g)
        texts.append(" ".join(edit(base, 0.30, rng, vocab))); group.append(-1 - g)   # heavily edited: distinct
    d = DedupConfig()                      # the defaults: 5-word shingles, 20 bands x 5 rows, threshold 0.7
    hasher = MinHasher(shingle=d.shingle, bands=d.bands, rows=d.rows, seed=d.seed)
    sigs = np.stack([hasher.signature(word_hashes(t)) for t in texts])
    res = cluster(None, sigs, [(0, i) for i in range(len(texts))], hasher, threshold=d.threshold)
    pred = set()
    for members in res.clusters:
        pred.update(itertools.combinations(sorted(members), 2))
    truth = {(i, j) for i, j in itertools.combinations(range(len(texts)), 2) if group[i] == group[j]}
    tp = len(pred & truth)
    precision = tp / max(1, len(pred))
    recall = tp / len(truth)
    print(f"near-dup precision {precision:.3f} recall {recall:.3f}")
    assert precision >= 0.95, precision
    assert recall >= 0.95, recall
    assert (~res.keep).sum() == sum(len(m) - 1 for m in res.clusters)   # exactly one kept per cluster
    assert all(res.keep[m[0]] for m in res.clusters)


def test_exact_key_normalises_case_punctuation_space():
    assert exact_key("Hello,  World!") == exact_key("hello world")
    assert exact_key("Hello World") != exact_key("Hello Word")
    assert exact_key("A" * 600 + "x", 500) == exact_key("A" * 600 + "y", 500)   # MEDITRON's 500-char key


def test_keep_rule_source_order_then_length_then_input_order():
    keys = [exact_key(t) for t in ("same text", "same text", "same text", "other")]
    # rank key: (source index, -chars, input index): the doc from source 0 wins over source 1
    rank = [(1, -9, 0), (0, -9, 1), (0, -9, 2), (0, -5, 3)]
    res = cluster(keys, None, rank)
    assert res.keep.tolist() == [False, True, False, True]
    assert res.reason == ["exact_duplicate", "", "exact_duplicate", ""]
    assert res.kept_by[0] == 1 and res.kept_by[2] == 1


def test_signature_is_deterministic_and_empty_safe():
    h1, h2 = MinHasher(seed=3), MinHasher(seed=3)
    wh = word_hashes("a b c d e f g h")
    assert np.array_equal(h1.signature(wh), h2.signature(wh))
    assert h1.signature(word_hashes("")).shape == (h1.n,)


def test_band_buckets_match_a_dictionary_of_lists():
    from meditron.corpus.dedup import _buckets

    keys = np.random.default_rng(0).integers(0, 40, size=300).astype(np.uint64)
    expected: dict[int, list[int]] = {}
    for i, k in enumerate(keys.tolist()):
        expected.setdefault(k, []).append(i)
    want = sorted(m for m in expected.values() if len(m) > 1)
    assert sorted(_buckets(keys)) == want
    assert _buckets(np.arange(5, dtype=np.uint64)) == []


def test_blocked_signature_equals_the_direct_minimum():
    """The signature is hashed in blocks of MinHasher.BLOCK shingles; blocks must not change it."""
    from meditron.corpus.ngrams import ngram_hashes

    h = MinHasher(5, 20, 5, seed=3)
    wh = np.random.default_rng(0).integers(0, 2**63, size=3 * h.BLOCK + 17, dtype=np.uint64)
    sh = np.unique(ngram_hashes(wh, 5))
    with np.errstate(over="ignore"):
        direct = (sh[:, None] * h.a[None, :] + h.b[None, :]).min(axis=0)
    assert np.array_equal(h.signature(wh), (direct >> np.uint64(32)).astype(np.uint32))


def test_hashes_of_several_lengths_share_one_running_polynomial():
    from meditron.corpus.ngrams import ngram_hashes, ngram_hashes_by_length

    wh = np.random.default_rng(1).integers(0, 2**63, size=40, dtype=np.uint64)
    lengths = [13, 8, 9, 12, 10, 11, 45]
    got = dict(ngram_hashes_by_length(wh, lengths))
    assert sorted(got) == sorted(lengths)
    for n in lengths:
        assert np.array_equal(got[n], ngram_hashes(wh, n)), n
    assert got[45].size == 0
    # the reference definition: an avalanche of sum(w[i+j] * P^(n-1-j))
    from meditron.corpus.ngrams import _P, _avalanche
    with np.errstate(over="ignore"):
        poly = np.uint64(0)
        for w in wh[3:11]:
            poly = poly * _P + w
    assert got[8][3] == _avalanche(np.array([poly]))[0]
