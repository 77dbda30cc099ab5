"""TruthfulQA (MC1) as 4 options, on MEDITRON's four medical categories.

MEDITRON's code draws 3 wrong answers with `random.choices` (with replacement, unseeded) and
shuffles. We draw 3 *without* replacement and shuffle with a per-question RNG seeded from a
fixed seed and the question, so the options do not depend on --limit or run order.

Sources (first found under <data-dir>/truthfulqa/): the upstream `mc_task.json`
(`mc1_targets` as {answer: 0|1}), a Hugging Face `truthful_qa/multiple_choice` export
(`validation.jsonl`, `mc1_targets` as {choices, labels}), or `TruthfulQA.csv` alone (gold = Best
Answer, distractors from Incorrect Answers). Categories come from the row, else from TruthfulQA.csv.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

from meditron.errors import DataError
from meditron.eval.benchmarks.base import Benchmark, Item, hub_rows, read_csv, read_json, read_jsonl

CATEGORIES = ("Health", "Nutrition", "Psychology", "Science")
OPTION_SEED = 1234


def _options(question: str, gold: str, wrong: list[str], seed: int = OPTION_SEED) -> tuple[dict[str, str], str]:
    digest = hashlib.sha256(f"{seed}:{question}".encode()).hexdigest()
    rng = random.Random(int(digest[:16], 16))
    pool = list(dict.fromkeys(w for w in wrong if w != gold))  # unique, stable order
    if len(pool) < 3:
        raise DataError(f"TruthfulQA question {question[:50]!r} has fewer than 3 distinct wrong answers")
    opts = [gold, *rng.sample(pool, 3)]
    rng.shuffle(opts)
    letters = "ABCD"
    return dict(zip(letters, opts)), letters[opts.index(gold)]


def _csv_rows(path: Path) -> list[dict]:
    rows = read_csv(path)
    header = rows[0]
    return [dict(zip(header, r)) for r in rows[1:]]


def load(split: str, root: Path | None) -> list[Item]:
    if split not in ("test", "validation"):
        raise DataError(f"TruthfulQA has no {split} split (MEDITRON uses it zero-shot; pass --shots 0)")
    tq = root / "truthfulqa" if root is not None else None
    hint = ("pass --data-dir with truthfulqa/mc_task.json, truthfulqa/validation.jsonl (HF multiple_choice) "
            "or truthfulqa/TruthfulQA.csv")
    categories: dict[str, str] = {}
    csv_path = tq / "TruthfulQA.csv" if tq is not None else None
    if csv_path is not None and csv_path.is_file():
        csv_rows = _csv_rows(csv_path)
        categories = {r["Question"].strip(): r["Category"] for r in csv_rows}
    else:
        csv_rows = []
    records: list[tuple[str, str, list[str], str | None]] = []  # question, gold, wrong, category
    if tq is not None and (tq / "mc_task.json").is_file():
        for r in read_json(tq / "mc_task.json"):
            answers = r["mc1_targets"]
            gold = next(a for a, v in answers.items() if v == 1)
            records.append((r["question"], gold, [a for a, v in answers.items() if v != 1], r.get("category")))
    elif tq is not None and (tq / "validation.jsonl").is_file():
        for r in read_jsonl(tq / "validation.jsonl"):
            t = r["mc1_targets"]
            gold = t["choices"][t["labels"].index(1)]
            wrong = [c for c, lab in zip(t["choices"], t["labels"]) if lab != 1]
            records.append((r["question"], gold, wrong, r.get("category")))
    elif csv_rows:
        for r in csv_rows:
            wrong = [w.strip() for w in r["Incorrect Answers"].split(";") if w.strip()]
            records.append((r["Question"], r["Best Answer"].strip(), wrong, r["Category"]))
    elif root is None:
        for r in hub_rows("truthful_qa", "multiple_choice", "validation", hint + " or go online"):
            t = r["mc1_targets"]
            gold = t["choices"][t["labels"].index(1)]
            records.append((r["question"], gold, [c for c, lab in zip(t["choices"], t["labels"]) if lab != 1], None))
    else:
        raise DataError(f"{tq} has no TruthfulQA file; {hint}")
    items = []
    missing = 0
    for i, (q, gold, wrong, cat) in enumerate(records):
        cat = cat or categories.get(q.strip())
        if cat is None:
            missing += 1
            continue
        if cat not in CATEGORIES:
            continue
        opts, label = _options(q, gold, wrong)
        items.append(Item(id=f"tqa-{i}", question=q, options=opts, gold=label, group=cat))
    if not items:
        raise DataError(f"no TruthfulQA question in {', '.join(CATEGORIES)}"
                        + (f" ({missing} rows lack a category: add truthfulqa/TruthfulQA.csv)" if missing else ""))
    return items


TRUTHFULQA = Benchmark(
    name="truthfulqa_medical", title="TruthfulQA-Medical (MC1, 4 options)", kind="mcq", labels=tuple("ABCD"),
    instruction="truthfulqa", loader=load, pool_split="", group_name="category", groups=CATEGORIES,
    notes="MC1 gold + 3 distractors without replacement (seed 1234); categories Health, Nutrition, Psychology, Science",
)
