"""Mixing: seeded per-source validation splits, replay fraction, upsampling, the mixture table.

Every choice is a pure function of (seed, document id), so it does not depend on how the work
was split across tasks or workers:
- split: `u(seed, "split", id) < val_fraction` of the document's source goes to validation;
- replay: documents of `role: replay` sources are ranked by `u(seed, "replay", id)` and taken in
  that order until replay makes `replay_fraction` of the train tokens (paper: ~1%, 0 validation);
- upsampling: a train document of a source with weight w is written floor(w) times, plus once
  more when `u(seed, "repeat", id) < w - floor(w)` (MEDITRON's stochastic rounding).
"""

from __future__ import annotations

import hashlib
import math


def u(seed: int, purpose: str, doc_id: str) -> float:
    """A uniform number in [0, 1) fixed by (seed, purpose, id)."""
    h = hashlib.blake2b(f"{seed}\x00{purpose}\x00{doc_id}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2**64


def split_of(seed: int, doc_id: str, val_fraction: float) -> str:
    return "validation" if val_fraction > 0 and u(seed, "split", doc_id) < val_fraction else "train"


def repeats(seed: int, doc_id: str, weight: float) -> int:
    whole = math.floor(weight)
    return whole + (1 if u(seed, "repeat", doc_id) < weight - whole else 0)


def replay_budget(medical_train_tokens: int, fraction: float) -> int:
    """Replay tokens so that replay / (medical + replay) == fraction."""
    return int(round(medical_train_tokens * fraction / (1.0 - fraction))) if fraction > 0 else 0


def mixture_table(rows: list[dict]) -> str:
    """Markdown in the form of the paper's Table 1 (docs and tokens per source and split)."""
    def fmt(n: int) -> str:
        return f"{n:,}"
    lines = ["| Dataset | Train samples | Val samples | Train tokens | Val tokens | Share of train tokens |",
             "|---|---:|---:|---:|---:|---:|"]
    total_train_tok = sum(r["train_tokens"] for r in rows) or 1
    tot = {"train_docs": 0, "validation_docs": 0, "train_tokens": 0, "validation_tokens": 0}
    for r in rows:
        vd = r["validation_docs"]
        share_val = (f" ({100 * vd / max(1, vd + r['train_docs']):.1f}%)" if vd else "")
        lines.append(f"| {r['source']} | {fmt(r['train_docs'])} | {fmt(vd)}{share_val} | {fmt(r['train_tokens'])} | "
                     f"{fmt(r['validation_tokens'])} | {100 * r['train_tokens'] / total_train_tok:.2f}% |")
        for k in tot:
            tot[k] += r[k]
    lines.append(f"| **Total** | {fmt(tot['train_docs'])} | {fmt(tot['validation_docs'])} | **{fmt(tot['train_tokens'])}** | "
                 f"{fmt(tot['validation_tokens'])} | 100.00% |")
    return "\n".join(lines) + "\n"
