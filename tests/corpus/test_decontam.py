"""Decontamination: real benchmark items planted in documents are caught; clean text is not."""

from __future__ import annotations

import csv
import json
import random

import pytest

from meditron.corpus.decontam import build_index, read_benchmarks
from meditron.corpus.ngrams import word_hashes

NAMES = ["medqa", "medmcqa", "pubmedqa", "mmlu_medical", "truthfulqa"]


@pytest.fixture(scope="module")
def index(shared_data):
    items = read_benchmarks(shared_data / "benchmarks", NAMES)
    return build_index(items, ngram=13, min_words=8, max_items_per_ngram=3)


def test_benchmark_readers_count_items(index):
    assert index.counts == {"medqa": 1273, "medmcqa": 4183, "pubmedqa": 500, "mmlu_medical": 1871}


def _wrap(text: str) -> str:
    return ("The following passage was found on a study website about medicine and exams. "
            + text + " Readers are encouraged to consult their physician for further advice.")


def test_planted_items_are_caught(index, shared_data):
    b = shared_data / "benchmarks"
    rng = random.Random(1)
    medqa = [json.loads(l) for l in open(b / "medqa/US/4_options/phrases_no_exclude_test.jsonl")]
    medmcqa = [json.loads(l) for l in open(b / "medmcqa/validation.jsonl")]
    pubmedqa = json.loads((b / "pubmedqa/test_set.json").read_text())
    mmlu = list(csv.reader(open(b / "mmlu/test/professional_medicine_test.csv", newline="")))
    planted = []
    for row in rng.sample(medqa, 5):
        planted.append(("medqa", row["question"]))
    for row in rng.sample([r for r in medmcqa if len(r["question"].split()) >= 13], 5):
        planted.append(("medmcqa", row["question"]))
    for row in rng.sample([r for r in medmcqa if len(r["question"].split()) < 13], 3):   # short: question + options
        planted.append(("medmcqa", " ".join([row["question"], row["opa"], row["opb"], row["opc"], row["opd"]])))
    for pmid in rng.sample(sorted(pubmedqa), 5):
        planted.append(("pubmedqa", pubmedqa[pmid]["CONTEXTS"][0]))
    for row in rng.sample(mmlu, 5):
        planted.append(("mmlu_medical", row[0]))
    for bench, text in planted:
        hits = index.match(word_hashes(_wrap(text)))
        assert any(index.items[i][0] == bench for i in hits), (bench, text[:80])


def test_light_rewording_of_whole_item_still_caught(index, shared_data):
    row = json.loads(open(shared_data / "benchmarks/medqa/US/4_options/phrases_no_exclude_test.jsonl").readline())
    text = row["question"].upper().replace(",", " ;")          # case and punctuation do not hide it
    assert index.match(word_hashes(text))


def test_clean_medical_text_not_flagged(index):
    text = ("Hypertension is a common chronic condition in adults. Lifestyle changes such as reduced salt intake, "
            "regular physical activity and weight loss lower blood pressure. Which of the following is the most "
            "likely diagnosis is a phrase many exam questions share, but it is not evidence of contamination.")
    assert index.match(word_hashes(text)) == set()


def test_index_built_in_worker_processes_is_identical(index, shared_data):
    """The setup step hashes the benchmarks in `workers` forked processes; the tables must not change."""
    import numpy as np

    items = read_benchmarks(shared_data / "benchmarks", NAMES)
    par = build_index(items, ngram=13, min_words=8, max_items_per_ngram=3, workers=3)
    assert sorted(par.tables) == sorted(index.tables) and par.items == index.items
    for L, (h, it) in index.tables.items():
        assert np.array_equal(par.tables[L][0], h) and np.array_equal(par.tables[L][1], it), L
