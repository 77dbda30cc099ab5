"""SFT data from benchmark train splits, as MEDITRON's finetune_preprocessing.py (MEDITRON.md §2.7).

Each line is {"id", "question", "answer"}: the question is the zero-shot MEDITRON prompt with
its system instruction (`{system}\\n{question}\\n{user}\\n`); the answer is the label, or with
--cot `{explanation}.\\nThe answer is: {label}` (MEDITRON appends " ###"; the trainer's ChatML
`<|im_end|>` ends the answer instead, so we leave it out). The trainer wraps these in ChatML.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Iterable

from meditron.errors import DataError
from meditron.eval import benchmarks as registry
from meditron.eval.prompts import build_prompt

SFT_BENCHMARKS = ("medqa", "medmcqa", "pubmedqa")
# The splits `meditron eval` scores (MedMCQA's test labels are hidden, so its validation set is the test):
# fine-tuning on them would contaminate the benchmark.
SCORED_SPLITS = {"medqa": ("test",), "medmcqa": ("test", "validation"), "pubmedqa": ("test",)}


def build_sft(name: str, data_dir: str | None = None, cot: bool = False, split: str = "train") -> list[dict]:
    bench = registry.get(name)
    if bench.name not in SFT_BENCHMARKS:
        raise DataError(f"sft-data supports {', '.join(SFT_BENCHMARKS)}, not {name}")
    if split in SCORED_SPLITS.get(bench.name, (bench.test_split,)):
        raise DataError(f"{name}'s {split} split is the one evaluation scores: fine-tuning on it would contaminate "
                        "the benchmark; use --split train")
    items = bench.load(split, data_dir)
    rows, skipped = [], 0
    for it in items:
        prompt = build_prompt(it, bench, [], "meditron", cot=cot).text
        if cot:
            exp = (it.explanation or "").strip()
            if not exp or exp.lower() == "none":
                skipped += 1  # MEDITRON drops rows without an explanation (paper Table 3)
                continue
            answer = f"{exp.rstrip('.')}.\nThe answer is: {it.gold}"
        else:
            answer = it.gold
        rows.append({"id": f"{bench.name}-{it.id}", "question": prompt, "answer": answer})
    if cot and not rows:
        raise DataError(f"{name} {split}: no row has an explanation for --cot"
                        + (" (MedQA CoT used an unreleased qbank set)" if name == "medqa" else ""))
    if skipped:
        print(f"{name}: {skipped} rows without an explanation left out", file=sys.stderr)
    return rows


def write_jsonl(rows: Iterable[dict], out: str | None) -> int:
    """One JSON object per line to `out` (its folders made first, as `--out sft/x.jsonl` expects) or stdout."""
    n = 0
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)  # before open(), which needs the folder
    f = open(out, "w", encoding="utf-8") if out else sys.stdout
    try:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
            n += 1
    finally:
        if out:
            f.close()
    return n
