"""Run lm-evaluation-harness on the same questions, offline, for peer agreement and benchmarks.

`lm_eval` is a test/bench dependency, imported only here and only when called. The task is a
local YAML (`dataset_path: json`) over a JSONL written from our own items, with lm-eval's MMLU
prompt: a per-subject description, "{question}\\nA. ..\\nAnswer:", choices " A".." D".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from meditron.eval.benchmarks import Item

TASK = "meditron_mmlu_medical_peer"


def write_mmlu_task(items: Sequence[Item], folder: str | Path, fewshot: Sequence[Item] = (), name: str = TASK) -> str:
    """Write the test (and few-shot) JSONL and a task YAML into `folder`; returns the task name."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    def row(it: Item) -> dict:
        return {"id": it.id, "question": it.question, "choices": [it.options[k] for k in "ABCD"],
                "answer": "ABCD".index(it.gold), "subject": (it.group or "").replace("_", " ")}

    with open(folder / "test.jsonl", "w", encoding="utf-8") as f:
        for it in items:
            f.write(json.dumps(row(it)) + "\n")
    files = {"test": str(folder / "test.jsonl")}
    fewshot_lines = ""
    if fewshot:
        with open(folder / "dev.jsonl", "w", encoding="utf-8") as f:
            for it in fewshot:
                f.write(json.dumps(row(it)) + "\n")
        files["dev"] = str(folder / "dev.jsonl")
        fewshot_lines = "fewshot_split: dev\nfewshot_config:\n  sampler: first_n\n"
    yaml = (
        f"task: {name}\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n" + "".join(f"    {k}: {json.dumps(v)}\n" for k, v in files.items()) +
        "test_split: test\n" + fewshot_lines +
        "output_type: multiple_choice\n"
        'description: "The following are multiple choice questions (with answers) about {{subject}}.\\n\\n"\n'
        'doc_to_text: "{{question.strip()}}\\nA. {{choices[0]}}\\nB. {{choices[1]}}\\nC. {{choices[2]}}\\nD. {{choices[3]}}\\nAnswer:"\n'
        'doc_to_choice: ["A", "B", "C", "D"]\n'
        "doc_to_target: answer\n"
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
        "metadata:\n  version: 1.0\n"
    )
    (folder / f"{name}.yaml").write_text(yaml)
    return name


def run_lm_eval(model_dir, task_dir: str | Path, task: str = TASK, batch_size: int = 8,
                num_fewshot: int = 0, device: str = "cpu") -> dict:
    """lm_eval.simple_evaluate with the HF backend; returns {"acc", "preds": {id: letter}, "contexts"}."""
    import lm_eval
    import numpy as np
    from lm_eval.tasks import TaskManager

    tm = TaskManager(include_path=str(task_dir), include_defaults=False)
    if isinstance(model_dir, (str, Path)):
        kw = dict(model="hf", model_args=f"pretrained={model_dir},dtype=float32", batch_size=batch_size, device=device)
    else:  # an lm_eval model instance (HFLM), reused across calls
        kw = dict(model=model_dir)
    out = lm_eval.simple_evaluate(tasks=[task], num_fewshot=num_fewshot, task_manager=tm, log_samples=True,
                                  verbosity="ERROR", **kw)
    samples = out["samples"][task]
    preds, contexts = {}, {}
    for s in samples:
        lls = [r[0] for r in s["filtered_resps"]]
        preds[s["doc"]["id"]] = "ABCD"[int(np.argmax(lls))]
        contexts[s["doc"]["id"]] = s["arguments"][0][0] if isinstance(s["arguments"][0], (list, tuple)) else s["arguments"]["gen_args_0"]["arg_0"]
    acc = out["results"][task]["acc,none"]
    return {"acc": acc, "preds": preds, "contexts": contexts, "lls": {s["doc"]["id"]: [r[0] for r in s["filtered_resps"]] for s in samples}}
