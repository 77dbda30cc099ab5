"""PubMedQA PQA-L: the 500-question test split, fold-0 train as the few-shot pool (yes/no/maybe)."""

from __future__ import annotations

from pathlib import Path

from meditron.eval.benchmarks.base import Benchmark, Item, hub_rows, read_json, split_candidates, split_file

FILES = {
    "test": ["pubmedqa/test_set.json"],
    "train": ["pubmedqa/pqal_fold0/train_set.json"],
    "validation": ["pubmedqa/pqal_fold0/dev_set.json"],
}


def item(pmid: str, r: dict) -> Item:
    contexts = [str(c) for c in r["CONTEXTS"]]
    # MEDITRON (ClosedPubMedQA): "\n".join(CONTEXTS) + "\n" + QUESTION, no "Question:" label, no options
    text = "\n".join(contexts) + "\n" + r["QUESTION"]
    return Item(id=str(pmid), question=text, options={}, gold=r["final_decision"].strip().lower(),
                explanation=r.get("LONG_ANSWER"), extra={"contexts": contexts, "q": r["QUESTION"]})


def load(split: str, root: Path | None) -> list[Item]:
    names = split_candidates(FILES, split)
    hint = f"pass --data-dir with {names[0]} (pubmedqa/pubmedqa layout, PQA-L split regenerated with fold 0)"
    path = split_file(names, root, hint)
    if path is None:
        rows = hub_rows("bigbio/pubmed_qa", "pubmed_qa_labeled_fold0_source", split, hint + " or go online")
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
