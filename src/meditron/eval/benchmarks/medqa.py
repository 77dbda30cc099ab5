"""MedQA (USMLE, English): 5-option `medqa` and 4-option `medqa4` (jind11/MedQA `US/` layout)."""

from __future__ import annotations

import sys
from pathlib import Path

from meditron.errors import DataError
from meditron.eval.benchmarks.base import Benchmark, Item, hub_rows, read_jsonl, split_candidates, split_file

LETTERS = "ABCDE"


def _items(rows: list[dict], split: str, n_opts: int, source: str) -> list[Item]:
    items, other = [], 0
    for i, r in enumerate(rows):
        opts = r["options"]
        if isinstance(opts, list):  # bigbio: [{"key","value"}]
            opts = {o["key"]: o["value"] for o in opts}
        opts = {k: str(v) for k, v in sorted(opts.items())}
        if len(opts) != n_opts:
            other += 1  # a 4-option row in a 5-option file (or vice versa) is not this benchmark
            continue
        gold = r.get("answer_idx")
        if gold not in opts:
            gold = next((k for k, v in opts.items() if v == r.get("answer")), None)
        if gold is None:
            raise DataError(f"{source} row {i + 1}: no gold answer (answer_idx or an option equal to answer)")
        items.append(Item(id=f"{split}-{i}", question=r["question"], options=opts, gold=gold,
                          group=r.get("meta_info")))
    if other:
        print(f"{source}: {other} rows without exactly {n_opts} options set aside", file=sys.stderr)
    if not items:
        raise DataError(f"{source} has no {n_opts}-option question; is this the right MedQA file?")
    return items


def _loader(n_opts: int):
    base = "medqa/US" if n_opts == 5 else "medqa/US/4_options"
    files = {
        5: {"test": ["medqa/US/test.jsonl"], "train": ["medqa/US/train.jsonl", "medqa/US/train_first1000.jsonl"],
            "dev": ["medqa/US/dev.jsonl"]},
        4: {"test": ["medqa/US/4_options/phrases_no_exclude_test.jsonl"],
            "train": ["medqa/US/4_options/phrases_no_exclude_train.jsonl", "medqa/US/4_options/train_subset.jsonl"],
            "dev": ["medqa/US/4_options/phrases_no_exclude_dev.jsonl"]},
    }[n_opts]
    hub = ("bigbio/med_qa", "med_qa_en_source") if n_opts == 5 else ("GBaker/MedQA-USMLE-4-options", None)

    def load(split: str, root: Path | None) -> list[Item]:
        names = split_candidates(files, split)
        hint = (f"pass --data-dir with {names[0]} (jind11/MedQA layout)"
                + (" or go online for the Hugging Face copy" if root is None else ""))
        path = split_file(names, root, hint)
        if path is None:
            return _items(hub_rows(*hub, split, hint), split, n_opts, f"{hub[0]}:{split}")
        return _items(read_jsonl(path), split, n_opts, str(path))

    return load


MEDQA = Benchmark(
    name="medqa", title="MedQA (5 options)", kind="mcq", labels=tuple("ABCDE"), instruction="medqa",
    loader=_loader(5), group_name="step", lm_eval="medqa", sft=True,
    notes="test: US/test.jsonl (1,273); few-shot pool: US/train.jsonl (falls back to train_first1000.jsonl)",
)
MEDQA4 = Benchmark(
    name="medqa4", title="MedQA (4 options)", kind="mcq", labels=tuple("ABCD"), instruction="medqa",
    loader=_loader(4), group_name="step", lm_eval="medqa",
    notes="test: US/4_options/phrases_no_exclude_test.jsonl; pool: phrases_no_exclude_train.jsonl or train_subset.jsonl",
)
