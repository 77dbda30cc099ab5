"""PubMedQA PQA-L: the 500-question test split, fold-0 train as the few-shot pool (yes/no/maybe).

The `artificial` split is PQA-A (211k generated yes/no questions, upstream `ori_pqaa.json`), the set
MEDITRON fine-tuned PubMedQA on (MEDITRON.md §4.2); it is not among the offline data.
"""

from __future__ import annotations

from pathlib import Path

from meditron.eval.benchmarks.base import Benchmark, Item, hub_rows, read_json, split_candidates, split_file

FILES = {
    "test": ["pubmedqa/test_set.json"],
    "train": ["pubmedqa/pqal_fold0/train_set.json"],
    "validation": ["pubmedqa/pqal_fold0/dev_set.json"],
    "artificial": ["pubmedqa/ori_pqaa.json"],
}
HUB = {"artificial": ("pubmed_qa_artificial_source", "train")}  # split -> (bigbio config, hub split)


def item(pmid: str, r: dict) -> Item:
    contexts = [str(c) for c in r["CONTEXTS"]]
    # MEDITRON (ClosedPubMedQA): "\n".join(CONTEXTS) + "\n" + QUESTION, no "Question:" label, no options
    text = "\n".join(contexts) + "\n" + r["QUESTION"]
    return Item(id=str(pmid), question=text, options={}, gold=r["final_decision"].strip().lower(),
                explanation=r.get("LONG_ANSWER"), extra={"contexts": contexts, "q": r["QUESTION"]})


def load(split: str, root: Path | None) -> list[Item]:
    names = split_candidates(FILES, split)
    hint = (f"pass --data-dir with {names[0]} (pubmedqa/pubmedqa layout, "
            + ("PQA-A from the upstream data/ folder)" if split == "artificial" else
               "PQA-L split regenerated with fold 0)"))
    path = split_file(names, root, hint)
    if path is None:
        config, hub_split = HUB.get(split, ("pubmed_qa_labeled_fold0_source", split))
        rows = hub_rows("bigbio/pubmed_qa", config, hub_split, hint + " or go online")
        return [item(r["PUBMED_ID"], r) for r in rows]
    data = read_json(path)
    items = [item(k, v) for k, v in data.items()]
    if split == "test" and root is not None and (root / "pubmedqa/test_ground_truth.json").exists():
        truth = read_json(root / "pubmedqa/test_ground_truth.json")
        bad = [i.id for i in items if i.id in truth and truth[i.id] != i.gold]
        if bad:
            from meditron.errors import DataError

            raise DataError(f"{path}: {len(bad)} labels disagree with test_ground_truth.json (e.g. {bad[0]})")
    return items


PUBMEDQA = Benchmark(
    name="pubmedqa", title="PubMedQA (PQA-L test)", kind="yesno", labels=("yes", "no", "maybe"),
    instruction="pubmedqa", loader=load, lm_eval="pubmedqa", sft=True,
    notes="test: test_set.json (500); pool: pqal_fold0/train_set.json (450)",
)
