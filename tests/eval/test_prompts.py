"""MEDITRON prompt assembly, few-shot sampling, wrappers, lm-eval style."""

import numpy as np

from meditron.eval.benchmarks import Item, get
from meditron.eval.prompts import INSTRUCTIONS, build_prompt, chatml, format_mcq, sample_demos

POOL = [Item(id=f"t{i}", question=f"Question number {i}", options={"A": "x", "B": "y", "C": "z", "D": "w"},
             gold="ABCD"[i % 4]) for i in range(50)]
ITEM = Item(id="q", question="Which nerve is compressed", options={"A": "Facial", "B": "Vagus", "C": "Optic",
                                                                   "D": "Ulnar"}, gold="A", group="anatomy")


def test_format_mcq_appends_question_mark():
    assert format_mcq("Which nerve", {"A": "x", "B": "y"}) == "Question: Which nerve?\n\nOptions:\nA. x\nB. y"
    assert format_mcq("Pick one.", {"A": "x"}).startswith("Question: Pick one.\n")


def test_few_shot_same_for_seed_different_across_seeds():
    a = [d.id for d in sample_demos(POOL, 3, 1234)]
    assert a == [d.id for d in sample_demos(POOL, 3, 1234)]
    sets = {tuple(d.id for d in sample_demos(POOL, 3, s)) for s in (1234, 432, 32)}
    assert len(sets) == 3
    # Hugging Face datasets' shuffle(seed): numpy PCG64 permutation
    assert a == [f"t{i}" for i in np.random.default_rng(1234).permutation(50)[:3]]


def test_meditron_zero_and_few_shot_prompts():
    bench = get("mmlu_medical")
    system = INSTRUCTIONS["mmlu_medical"]["system"]
    p0 = build_prompt(ITEM, bench, [], "meditron")
    assert p0.text == f"{system}\nQuestion: Which nerve is compressed?\n\nOptions:\nA. Facial\nB. Vagus\nC. Optic\nD. Ulnar\nThe answer is:\n"
    demos = sample_demos(POOL, 2, 432)
    p2 = build_prompt(ITEM, bench, demos, "meditron", seed=432)
    d0, d1 = demos
    shot = lambda d: f"Question: {d.question}?\n\nOptions:\nA. x\nB. y\nC. z\nD. w\nThe answer is: {d.gold}"
    assert p2.text == (f"{system}\n{shot(d0)}\n\n{shot(d1)}\n\nQuestion: Which nerve is compressed?\n\nOptions:\n"
                       "A. Facial\nB. Vagus\nC. Optic\nD. Ulnar\nThe answer is:")  # final newline dropped
    assert p2.choices[0] == " A. Facial" and p0.choices[0] == "A. Facial"
    assert build_prompt(ITEM, bench, [], "chatml").text == chatml(p0.text)
    assert chatml("P") == "<|im_start|>question\nP<|im_end|>\n<|im_start|>answer\n"


def test_cot_and_pubmedqa_prompts():
    bench = get("pubmedqa")
    item = Item(id="1", question="ctx one\nctx two\nIs it?", options={}, gold="maybe",
                extra={"contexts": ["ctx one", "ctx two"], "q": "Is it?"})
    p = build_prompt(item, bench, [], "meditron", cot=True)
    assert p.text.endswith("ctx one\nctx two\nIs it?\nLet\u2019s think step by step.\n")
    assert p.labels == ["yes", "no", "maybe"]
    lm = build_prompt(item, bench, [], "lm-eval")
    assert lm.text == "Abstract: ctx one\nctx two\nQuestion: Is it?\nAnswer:" and lm.choices == [" yes", " no", " maybe"]


def test_lm_eval_mmlu_prompt():
    p = build_prompt(ITEM, get("mmlu_medical"), [], "lm-eval", seed=1)
    assert p.text == ("The following are multiple choice questions (with answers) about anatomy.\n\n"
                      "Which nerve is compressed\nA. Facial\nB. Vagus\nC. Optic\nD. Ulnar\nAnswer:")
    assert p.choices == [" A", " B", " C", " D"]


def test_chat_template_style():
    seen = {}

    def template(messages):
        seen["m"] = messages
        return "<s>" + "|".join(m["content"] for m in messages)

    p = build_prompt(ITEM, get("medqa"), [], "chat", chat_template=template)
    assert seen["m"][0]["role"] == "system" and seen["m"][1]["content"].endswith("The answer is:")
    assert p.text.startswith("<s>You are a medical doctor taking the US Medical Licensing Examination.")
