"""Peer agreement with lm-evaluation-harness 0.4 (HF backend, local task YAML, offline).

`meditron eval --mode loglik --prompt-style lm-eval --shots 0` on MMLU-Medical must predict what
lm-eval predicts (>= 99.5% of questions) with the same accuracy (within 0.5 points). Here on a
40-question subset: the 40 shortest questions, so that it fits the test budget.
"""

import pytest

pytestmark = pytest.mark.lmeval


def test_mmlu_loglik_agrees_with_lm_eval(tmp_path, smollm):
    pytest.importorskip("lm_eval", reason="lm-eval is a test dependency: pip install lm-eval==0.4.13")
    from meditron.eval.backends.native import NativeBackend
    from meditron.eval.benchmarks import get
    from meditron.eval.peer import run_lm_eval, write_mmlu_task
    from meditron.eval.prompts import build_prompt
    from meditron.eval.runner import EvalConfig, Runner, read_predictions
    from meditron.model.hub import resolve

    bench = get("mmlu_medical")
    items = bench.load("test", None)
    subset = sorted(items, key=lambda it: len(it.question) + sum(len(o) for o in it.options.values()))[:40]
    subset.sort(key=lambda it: (it.group, it.id))
    task = write_mmlu_task(subset, tmp_path / "task")
    peer = run_lm_eval(resolve("smollm2-135m"), tmp_path / "task", task, batch_size=8)

    # the same prompt text, character for character
    for it in subset:
        assert build_prompt(it, bench, [], "lm-eval").text == peer["contexts"][it.id]

    backend = NativeBackend(loaded=smollm)
    cfg = EvalConfig(mode="loglik", prompt_style="lm-eval", shots=0, out=str(tmp_path / "ours"))
    runner = Runner(cfg, backend, progress=False)
    import meditron.eval.runner as runner_mod

    plan = runner_mod.plan_benchmark(cfg, "mmlu_medical")
    plan.items = subset
    original = runner_mod.plan_benchmark
    runner_mod.plan_benchmark = lambda cfg, name: plan
    try:
        res = runner.run()
    finally:
        runner_mod.plan_benchmark = original
    ours = read_predictions(tmp_path / "ours" / "predictions.jsonl")
    agree = sum(ours[("mmlu_medical", it.id, 1234)]["pred"] == peer["preds"][it.id] for it in subset)
    assert agree / len(subset) >= 0.995, f"{agree}/{len(subset)} agree"
    assert abs(res["benchmarks"]["mmlu_medical"]["accuracy"] - peer["acc"]) <= 0.005
    for it in subset:  # the log-likelihoods themselves
        mine = ours[("mmlu_medical", it.id, 1234)]["scores"]
        assert [mine[k] for k in "ABCD"] == pytest.approx(peer["lls"][it.id], abs=2e-3)
