"""Answer extraction on hostile outputs: ours (bugs fixed) and MEDITRON's (bugs kept)."""

import pytest

from meditron.eval.scoring import extract_answer, extract_meditron

MCQ = list("ABCD")
YN = ["yes", "no", "maybe"]


@pytest.mark.parametrize("output, expected", [
    ("", None),
    ("   \n\n  ", None),
    ("The answer is: (C).", "C"),
    ("c) because the nerve is compressed", "C"),
    (" B", "B"),
    ("B.\n\nQuestion: next one... The answer is: D", "B"),  # few-shot run-on: first paragraph wins
    ("D\u200b\u00e9\u2603", "D"),  # non-ASCII noise after the letter
    ("\u00ab\u00a0A\u00a0\u00bb", "A"),  # non-ASCII noise around it
    ("a patient with chest pain should", None),  # the article, not option A
    ("Question: Which nerve?\n\nOptions:\nA. facial\nB. vagus\nThe answer is:", None),  # echoed prompt
    ("Question: Which nerve?\n\nOptions:\nA. facial\nB. vagus\nThe answer is: B", "B"),
    ("The correct option is D", "D"),
    ("[b]", "B"),
    ("E", None),  # not one of this question's labels
    ("foo bar", None),
])
def test_extract_mcq_hostile(output, expected):
    assert extract_answer(output, MCQ, shots=3) == expected


@pytest.mark.parametrize("output, expected", [
    ("Maybe.", "maybe"), ("maybe", "maybe"), ("yes", "yes"), (" No, because", "no"), ("yesyes", "yes"),
    ("The answer is: no", "no"), ("", None), ("nothing", None), ("Yes\u00e9", "yes"),
])
def test_extract_yesno(output, expected):
    assert extract_answer(output, YN) == expected


def test_cot_uses_last_answer_is():
    text = "Let's see. The answer is not obvious. A is wrong... so the answer is (B)."
    assert extract_answer(text, MCQ, cot=True) == "B"
    assert extract_answer("I think it is B", MCQ, cot=True) is None  # no stated answer


def test_option_text_answer():
    opts = {"A": "Facial nerve", "B": "Vagus nerve", "C": "Optic", "D": "Ulnar"}
    assert extract_answer("Vagus nerve.", MCQ, options=opts) == "B"


def test_meditron_faithful_bugs():
    # 'maybe' is not a valid answer in evaluate.py
    assert extract_meditron("Maybe.", "yesno") is None
    # the first character after cleaning: "the answer is c" -> "t" -> invalid
    assert extract_meditron("The answer is: (C).", "mcq") is None
    # "a patient ..." -> 'a' -> A
    assert extract_meditron("a patient with", "mcq") == "A"
    assert extract_meditron("c) because", "mcq") == "C"
    assert extract_meditron("", "mcq") is None
    assert extract_meditron("B\n\nQuestion: ...", "mcq", shots=3) == "B"
    assert extract_meditron("so the answer is b", "mcq", cot=True) == "B"
