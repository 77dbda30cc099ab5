"""Answer extraction, self-consistency voting and metrics (accuracy, bootstrap CI, ECE).

`extract_meditron` reproduces `evaluate.py::eval` rule by rule, bugs included (MEDITRON.md §2.6);
`extract_answer` is the one we score with: the same idea with the bugs fixed (docs/evaluation.md
lists each fix). Both return a label or None (unparseable).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from typing import Sequence

import numpy as np

MEDITRON_VALID = ("a", "b", "c", "d", "e", "yes", "no")  # 'maybe' missing: the original bug


def extract_meditron(output: str, kind: str, shots: int = 0, cot: bool = False) -> str | None:
    """evaluate.py::eval, faithfully: None where the original reports 'unable to find answer'."""
    out = output.lower()
    if "\n##" in out:
        out = out.split("\n##")[1].split("\n")[0].strip()
    if shots > 0:
        out = out.split("\n\n")[0].strip()
    out = re.sub(r"[^a-zA-Z0-9]", " ", out).strip()
    out = re.sub(" +", " ", out)
    if cot:
        parts = out.split("answer is")[-1].split()
        out = parts[0] if parts else ""
    if kind == "yesno":
        for a, b in (("yesyes", "yes"), ("nono", "no"), ("yesno", "yes"), ("noyes", "no")):
            out = out.replace(a, b)
        out = out.encode("ascii", "ignore").decode()
    else:
        out = out.encode("ascii", "ignore").decode()
        out = out[0] if out else ""
    if out not in MEDITRON_VALID:
        return None
    return out.upper() if kind == "mcq" else out


_ANSWER_IS = re.compile(r"answer\s+is\s*:?", re.I)
_LEAD_LETTER = re.compile(r"^[\s\W_]*?(?:\(|\[)?\s*([A-Ea-e])\s*(?:\)|\])?(?=$|[\s.:,;)\]!])")
_NAMED = re.compile(r"\b(?:option|answer|choice)\s*(?:is)?\s*:?\s*\(?([A-E])\b\)?")
_ECHO = re.compile(r"^\s*(question\s*:|options\s*:)", re.I)


def _normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    text = "".join(ch for ch in text if ch.isascii())
    return text


def extract_answer(output: str, labels: Sequence[str], shots: int = 0, cot: bool = False,
                   options: dict[str, str] | None = None) -> str | None:
    """The answer label in a model's output, or None.

    Fixes over the original: 'maybe' is a valid answer; the answer after the *last* "answer is"
    is used in CoT, the first one otherwise (not only in CoT); an echoed prompt is not read as an answer;
    an answer given as the option's text is recognised; a lone article "a" starting a sentence is
    not the letter A; non-ASCII noise is dropped before matching, not after taking the first char.
    """
    text = _normalise(output or "")
    if "###" in text:
        text = text.split("###")[0]
    text = text.strip()
    if not text:
        return None
    if shots > 0 and not cot:
        paras = [q for q in text.split("\n\n") if q.strip()]
        if paras and not _ECHO.match(paras[0]):
            text = paras[0].strip()  # the model went on to invent the next demonstration
    hits = list(_ANSWER_IS.finditer(text))
    if hits:
        # CoT: the conclusion is the last statement; otherwise the first answer given
        text = text[(hits[-1] if cot else hits[0]).end():].strip()
    elif cot:
        return None  # a chain of thought that never states its answer
    if not text or (_ECHO.match(text) and not hits):
        return None
    yesno = set(labels) <= {"yes", "no", "maybe"}
    if yesno:
        m = re.match(r"^[\W_]*([A-Za-z]+)", text)
        if not m:
            return None
        word = m.group(1).lower()
        for lab in ("yes", "no", "maybe"):
            if lab in labels and (word == lab or (lab != "no" and word.startswith(lab))
                                  or word in (lab * 2, "yesno" if lab == "yes" else "")):
                return lab
        return None
    m = _LEAD_LETTER.match(text)
    if m:
        letter = m.group(1)
        after = text[m.end():]
        # lower-case "a" followed by a word is the article, not option A
        is_article = letter == "a" and re.match(r"^\s+[a-z]", after) is not None
        if letter.upper() in labels and not is_article:
            return letter.upper()
    m = _NAMED.search(text)
    if m and m.group(1) in labels:
        return m.group(1)
    if options:
        low = text.lower()
        for lab, opt in options.items():
            o = opt.strip().lower().rstrip(".")
            if o and low.startswith(o) and lab in labels:
                return lab
    return None


def majority_vote(answers: Sequence[str | None]) -> str | None:
    """Most frequent parsed answer; ties go to the answer that appeared first; None if nothing parsed."""
    valid = [a for a in answers if a is not None]
    if not valid:
        return None
    counts = Counter(valid)
    best = max(counts.values())
    return next(a for a in valid if counts[a] == best)


# -- metrics -----------------------------------------------------------------------------------------
def softmax(scores: Sequence[float]) -> list[float]:
    m = max(scores)
    e = [math.exp(s - m) for s in scores]
    z = sum(e)
    return [x / z for x in e]


def bootstrap_ci(correct: Sequence[float], n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of per-item scores (items resampled with replacement)."""
    x = np.asarray(correct, dtype=np.float64)
    if x.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(n_boot, x.size))
    means = x[idx].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def ece(confidences: Sequence[float], correct: Sequence[float], n_bins: int = 10) -> float:
    """Expected calibration error with equal-width confidence bins."""
    c = np.asarray(confidences, dtype=np.float64)
    y = np.asarray(correct, dtype=np.float64)
    if c.size == 0:
        return float("nan")
    bins = np.minimum((c * n_bins).astype(int), n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        sel = bins == b
        if sel.any():
            total += sel.sum() / c.size * abs(c[sel].mean() - y[sel].mean())
    return float(total)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0
