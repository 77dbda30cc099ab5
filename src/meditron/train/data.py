"""Training data: blended packed windows over Megatron shards, and ChatML SFT samples with a loss mask.

Every order is a pure function of (seed, sample index), so a run resumed at step s reads exactly
the samples an uninterrupted run would, on any number of data-parallel ranks: step s uses global
samples [s·G, (s+1)·G) and data-parallel rank r takes its contiguous slice of them.
"""

from __future__ import annotations

import json
import math
from collections import Counter, OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from meditron.corpus.shards import IndexedDataset, IndexedDatasetWriter, token_dtype
from meditron.errors import DataError

IGNORE = -100
CHAT_START, CHAT_END = "<|im_start|>", "<|im_end|>"


class TokenizerLike(Protocol):
    def encode(self, text: str, add_bos: bool | None = None) -> list[int]: ...


# -- a tokenizer tiny runs can make themselves ------------------------------------------------------
class ByteTokenizer:
    """Bytes as tokens plus pad/bos/eos and the ChatML markers: 261 ids, for tiny offline runs and tests."""

    SPECIALS = ["<pad>", "<s>", "</s>", CHAT_START, CHAT_END]
    pad_id, bos_id, eos_id, eod_id = 0, 1, 2, 2
    vocab_size = 256 + len(SPECIALS)

    def token_to_id(self, token: str | None) -> int | None:
        return self.SPECIALS.index(token) if token in self.SPECIALS else None

    def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
        ids = [self.bos_id] if add_bos else []
        pos = 0
        while pos < len(text):
            hits = [(text.find(s, pos), s) for s in (CHAT_START, CHAT_END)]
            hits = [(i, s) for i, s in hits if i >= 0]
            nxt, special = min(hits) if hits else (len(text), None)
            ids.extend(b + len(self.SPECIALS) for b in text[pos:nxt].encode("utf-8"))
            if special is not None:
                ids.append(self.SPECIALS.index(special))
                nxt += len(special)
            pos = nxt
        return ids

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        out, buf = [], bytearray()
        for i in ids:
            i = int(i)
            if i >= len(self.SPECIALS):
                buf.append(i - len(self.SPECIALS))
                continue
            out.append(buf.decode("utf-8", "replace"))
            buf = bytearray()
            if not skip_special_tokens:
                out.append(self.SPECIALS[i])
        out.append(buf.decode("utf-8", "replace"))
        return "".join(out)


# -- synthetic data (tiny runs make their own) -------------------------------------------------------
def make_synthetic_shards(folder: Path, vocab_size: int, seq_len: int, seed: int = 0,
                          n_docs: int = 120) -> list[tuple[str, str, float]]:
    """Two learnable token sources ("arith": strided counting, "motif": a repeated motif) as Megatron shards."""
    folder.mkdir(parents=True, exist_ok=True)
    lo = 8  # leave the special ids alone
    span = max(2, min(vocab_size - lo, 256))
    out = []
    for j, (name, weight) in enumerate((("arith", 0.7), ("motif", 0.3))):
        prefix = folder / f"synthetic-{name}"
        if not Path(str(prefix) + ".idx").exists():
            rng = np.random.default_rng([seed, j])
            with IndexedDatasetWriter(prefix, token_dtype(vocab_size)) as w:
                for _ in range(n_docs):
                    n = int(rng.integers(8, max(9, seq_len * 3 // 2)))
                    if name == "arith":
                        a, d = int(rng.integers(span)), int(rng.integers(1, 8))
                        doc = (a + d * np.arange(n)) % span + lo
                    else:
                        motif = rng.integers(0, span, size=int(rng.integers(3, 12))) + lo
                        doc = np.resize(motif, n)
                    w.add_document(doc)
        out.append((name, str(prefix), weight))
    return out


def make_synthetic_sft(path: Path, n: int = 96, seed: int = 0) -> Path:
    """A JSONL of tiny arithmetic questions in the `meditron sft-data` format (question, answer)."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(n):
        a, b = int(rng.integers(10)), int(rng.integers(10))
        lines.append(json.dumps({"question": f"What is {a} plus {b}?", "answer": str(a + b)}))
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)
    return path


# -- pretraining: packed windows ------------------------------------------------------------------
class PackedSource:
    """One shard's documents, joined with EOD and cut into windows of seq_len + 1 tokens.

    Each epoch shuffles the document order and the window order with (seed, epoch); window k
    covers stream tokens [k·S, k·S + S + 1) (neighbours share one token, as in Megatron).
    """

    def __init__(self, name: str, ds: IndexedDataset, doc_ids: np.ndarray, seq_len: int, eod: int,
                 append_eod: bool | None, seed: int, shuffle: bool = True):
        self.name, self.ds, self.doc_ids, self.seq_len, self.eod = name, ds, doc_ids, seq_len, eod
        self.seed, self.shuffle = seed, shuffle
        if append_eod is None:  # documents from `--append-eod` preprocessing already end with EOD
            probe = doc_ids[: min(len(doc_ids), 16)]
            append_eod = not all(len(ds[i]) and int(ds[i][-1]) == eod for i in probe)
        self.append_eod = bool(append_eod)
        self.lens = ds.sizes[doc_ids].astype(np.int64) + int(self.append_eod)
        self.epoch_tokens = int(self.lens.sum())
        self.per_epoch = (self.epoch_tokens - 1) // seq_len
        if self.per_epoch < 1:
            raise DataError(
                f"data source {name!r} has {self.epoch_tokens} tokens, fewer than one window of "
                f"train.seq_len+1 = {seq_len + 1}; add data or lower train.seq_len"
            )
        self._epochs: OrderedDict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = OrderedDict()

    def __len__(self) -> int:
        return self.per_epoch

    def _epoch(self, e: int):
        if e not in self._epochs:
            if self.shuffle:
                rng = np.random.default_rng([self.seed, e])
                perm = rng.permutation(len(self.doc_ids))
                windows = rng.permutation(self.per_epoch)
            else:
                perm, windows = np.arange(len(self.doc_ids)), np.arange(self.per_epoch)
            cum = np.concatenate([[0], np.cumsum(self.lens[perm])])
            self._epochs[e] = (self.doc_ids[perm], cum, windows)
            while len(self._epochs) > 2:
                self._epochs.popitem(last=False)
        return self._epochs[e]

    def window(self, i: int) -> np.ndarray:
        e, k = divmod(int(i), self.per_epoch)
        docs, cum, windows = self._epoch(e)
        start = int(windows[k]) * self.seq_len
        end = start + self.seq_len + 1
        d = int(np.searchsorted(cum, start, side="right")) - 1
        parts, pos = [], start
        while pos < end:
            doc = np.asarray(self.ds[int(docs[d])], dtype=np.int64)
            if self.append_eod:
                doc = np.append(doc, self.eod)
            off = pos - int(cum[d])
            take = doc[off: off + (end - pos)]
            parts.append(take)
            pos += len(take)
            d += 1
        return np.concatenate(parts)


class BlendedDataset:
    """Sources mixed by weight, deterministically: source s's k-th window sits at time (k + ½)/w_s.

    This interleaving gives every prefix of the stream the target proportions (to one sample)
    without random draws, like Megatron's greedy blending index.
    """

    def __init__(self, sources: list[PackedSource], weights: list[float], n_samples: int):
        if not sources:
            raise DataError("no data sources")
        w = np.asarray(weights, dtype=np.float64)
        if (w <= 0).any():
            raise DataError("data source weights must be positive")
        w = w / w.sum()
        self.sources, self.weights, self.n_samples = sources, w, n_samples
        times, src, idx = [], [], []
        for s, ws in enumerate(w):
            k = np.arange(int(math.ceil(n_samples * ws)) + 1)
            times.append((k + 0.5) / ws)
            src.append(np.full(len(k), s, dtype=np.int16))
            idx.append(k)
        order = np.argsort(np.concatenate(times), kind="stable")[:n_samples]
        self.src = np.concatenate(src)[order]
        self.idx = np.concatenate(idx)[order]

    def __len__(self) -> int:
        return self.n_samples

    def batch(self, indices) -> tuple[np.ndarray, np.ndarray]:
        rows = [self.sources[int(self.src[i])].window(int(self.idx[i])) for i in indices]
        arr = np.stack(rows)
        return arr[:, :-1], arr[:, 1:]

    def mixture(self) -> dict[str, float]:
        counts = Counter(int(s) for s in self.src)
        return {self.sources[s].name: counts.get(s, 0) / max(1, self.n_samples) for s in range(len(self.sources))}


def corpus_tokenizer(prefixes: list[str]) -> dict[str, Any] | None:
    """The tokenizer `meditron corpus build` recorded in the datacard.json beside these shards.

    Shards hold ids, not text, so the card is the only place that says which vocabulary they use:
    MEDITRON's corpus is Llama-2 plus 17 Megatron specials and S2ORC tags (32,017 ids) with
    documents separated by <EOD> = 32002, not by the model's </s>. Every source must agree;
    shards without a card (made elsewhere) say nothing and return None.
    """
    found: dict[str, dict[str, Any]] = {}
    for prefix in prefixes:
        card = Path(prefix).parent / "datacard.json"
        if card.is_file():
            tok = json.loads(card.read_text()).get("tokenizer") or {}
            if tok.get("vocab_size") is not None:
                found[str(card)] = {**tok, "card": str(card)}
    kinds = {(t["vocab_size"], t.get("eod_id"), bool(t.get("meditron_tokens"))) for t in found.values()}
    if len(kinds) > 1:
        listed = "; ".join(f"{c}: vocab {t['vocab_size']}, EOD {t.get('eod_id')}" for c, t in found.items())
        raise DataError(f"data.sources mixes corpora tokenized differently ({listed}); rebuild them with one tokenizer")
    return next(iter(found.values()), None)


def check_token_ids(tokens: np.ndarray, vocab_size: int) -> None:
    """Refuse ids the model has no embedding for (an IndexError deep in the forward otherwise)."""
    top = int(tokens.max(initial=0))
    if top >= vocab_size:
        raise DataError(
            f"the data holds token id {top} but the model's vocabulary has {vocab_size} ids: the shards were "
            "tokenized with another tokenizer; build the corpus with the model's tokenizer, or set "
            "model.tokenizer to the corpus's (the model's embeddings grow to its size)"
        )


def split_docs(ds: IndexedDataset, valid_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Training and held-out document ids: the last fraction of documents is held out."""
    n = len(ds)
    n_valid = int(math.ceil(n * valid_fraction)) if valid_fraction > 0 else 0
    if n_valid >= n:
        raise DataError(f"{ds.bin_path}: data.valid_fraction {valid_fraction} leaves no training documents")
    ids = np.arange(n)
    return ids[: n - n_valid], ids[n - n_valid:]


# -- fine-tuning: ChatML with a loss mask -----------------------------------------------------------
def chatml(role: str, message: str) -> str:
    """One message in MEDITRON's ChatML (MEDITRON.md §2.7)."""
    return f"{CHAT_START}{role}\n{message}{CHAT_END}\n"


@dataclass
class SFTSample:
    ids: np.ndarray  # [bos] + question block + answer block (truncated to seq_len + 1)
    n_context: int  # tokens before the answer block (bos + question block): never in the loss


class SFTDataset:
    """JSONL records {"question", "answer"} as ChatML; the loss falls only on the answer block.

    The answer block `<|im_start|>answer\\n…<|im_end|>\\n` is the target, its header and end marker
    included, as in Megatron-LLM's instruction collator. Malformed records are counted with a reason.
    """

    def __init__(self, path: str | Path, tokenizer: TokenizerLike, seq_len: int, add_bos: bool = True,
                 bos_id: int | None = None):
        self.path, self.seq_len = Path(path), seq_len
        if not self.path.is_file():
            raise DataError(f"fine-tuning file {self.path} does not exist; write it with `meditron sft-data`")
        self.rejected: Counter[str] = Counter()
        self.truncated = 0
        self.samples: list[SFTSample] = []
        for lineno, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                self.rejected["not JSON"] += 1
                continue
            q, a = (rec.get("question"), rec.get("answer")) if isinstance(rec, dict) else (None, None)
            if not isinstance(q, str) or not isinstance(a, str):
                self.rejected["question/answer missing or not text"] += 1
                continue
            sample = self.encode(tokenizer, q, a, add_bos, bos_id)
            if sample is None:
                self.rejected[f"answer does not fit in train.seq_len={seq_len}"] += 1
                continue
            self.samples.append(sample)
        if not self.samples:
            reasons = ", ".join(f"{k}: {v}" for k, v in self.rejected.items()) or "empty file"
            raise DataError(f"{self.path} has no usable question/answer records ({reasons})")

    def encode(self, tok: TokenizerLike, question: str, answer: str, add_bos: bool,
               bos_id: int | None) -> SFTSample | None:
        ctx = tok.encode(chatml("question", question), add_bos=False)
        if add_bos and bos_id is not None:
            ctx = [bos_id, *ctx]
        ids = ctx + tok.encode(chatml("answer", answer), add_bos=False)
        if len(ids) > self.seq_len + 1:
            self.truncated += 1
            ids = ids[: self.seq_len + 1]
        if len(ctx) >= len(ids):
            return None
        return SFTSample(np.asarray(ids, dtype=np.int64), len(ctx))

    def __len__(self) -> int:
        return len(self.samples)

    def loss_tokens(self, i: int) -> int:
        s = self.samples[i]
        return len(s.ids) - s.n_context

    def batch(self, indices, pad_id: int, pad_multiple: int = 16) -> tuple[np.ndarray, np.ndarray]:
        """tokens, targets (B, L): L = min(seq_len, max length rounded up to pad_multiple); pads are ignored."""
        rows = [self.samples[int(i)] for i in indices]
        longest = max(len(s.ids) - 1 for s in rows)
        length = min(self.seq_len, -(-longest // pad_multiple) * pad_multiple)
        tokens = np.full((len(rows), length), pad_id, dtype=np.int64)
        targets = np.full((len(rows), length), IGNORE, dtype=np.int64)
        for r, s in enumerate(rows):
            n = len(s.ids) - 1
            tokens[r, :n] = s.ids[:-1]
            targets[r, :n] = s.ids[1:]
            targets[r, : s.n_context - 1] = IGNORE  # target j is token j+1: the answer starts at n_context
        return tokens, targets


class EpochOrder:
    """Sample order over epochs: a fresh permutation of n items per epoch, seeded by (seed, epoch)."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed = n, seed
        self._perms: OrderedDict[int, np.ndarray] = OrderedDict()

    def __getitem__(self, i: int) -> int:
        e, k = divmod(int(i), self.n)
        if e not in self._perms:
            self._perms[e] = np.random.default_rng([self.seed, e]).permutation(self.n)
            while len(self._perms) > 2:
                self._perms.popitem(last=False)
        return int(self._perms[e][k])


def rank_slice(step: int, global_batch: int, dp_rank: int, dp: int) -> range:
    """Global sample indices of data-parallel rank `dp_rank` at step `step` (0-based)."""
    per = global_batch // dp
    start = step * global_batch + dp_rank * per
    return range(start, start + per)


def describe(obj: Any) -> str:
    if isinstance(obj, BlendedDataset):
        return ", ".join(f"{k} {v:.1%}" for k, v in obj.mixture().items())
    return type(obj).__name__
