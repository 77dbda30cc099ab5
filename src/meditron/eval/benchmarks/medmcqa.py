"""MedMCQA: the validation split is the test set (test labels are hidden), as in MEDITRON."""

from __future__ import annotations

from pathlib import Path

from meditron.eval.benchmarks.base import Benchmark, Item, hub_rows, read_jsonl, split_candidates, split_file

# .jsonl files use the Hugging Face schema (cop 0..3); the upstream release .json files use cop 1..4.
FILES = {
    "test": ["medmcqa/validation.jsonl", "medmcqa/dev.json"],
    "validation": ["medmcqa/validation.jsonl", "medmcqa/dev.json"],
    "train": ["medmcqa/train.jsonl", "medmcqa/train.json", "medmcqa/train_subset1000.jsonl"],
}


def _items(rows: list[dict], split: str, one_based: bool) -> list[Item]:
    items = []
    for i, r in enumerate(rows):
        cop = int(r["cop"]) - (1 if one_based else 0)
        opts = {L: str(r[k]) for L, k in zip("ABCD", ("opa", "opb", "opc", "opd"))}
        exp = r.get("exp")
        items.append(Item(id=str(r.get("id") or f"{split}-{i}"), question=r["question"], options=opts,
                          gold="ABCD"[cop], group=r.get("subject_name"), explanation=exp))
    return items


def load(split: str, root: Path | None) -> list[Item]:
    names = split_candidates(FILES, split)
    hint = f"pass --data-dir with {names[0]} (HF schema) or the upstream {names[1]}"
    path = split_file(names, root, hint)
    if path is None:
        hub_split = "validation" if split == "test" else split
        return _items(hub_rows("openlifescienceai/medmcqa", None, hub_split, hint + " or go online"), split, False)
    return _items(read_jsonl(path), split, one_based=path.suffix == ".json")


MEDMCQA = Benchmark(
    name="medmcqa", title="MedMCQA (validation)", kind="mcq", labels=tuple("ABCD"), instruction="medmcqa",
    loader=load, group_name="subject", lm_eval="medmcqa", sft=True,
    notes="test: validation.jsonl / dev.json (4,183); pool: train.jsonl|train.json|train_subset1000.jsonl",
)
