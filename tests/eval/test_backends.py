"""The hf backend (transformers) agrees with the native one on the same prompts."""

import pytest

PROMPTS = [
    "Question: Which organ pumps blood through the body?\n\nOptions:\nA. Heart\nB. Liver\nC. Lung\nD. Skin\nThe answer is:",
    "The following are multiple choice questions (with answers) about anatomy.\n\nWhat bone is in the thigh?\n"
    "A. Femur\nB. Ulna\nC. Radius\nD. Skull\nAnswer:",
]


@pytest.fixture(scope="module")
def backends(smollm):
    from meditron.eval.backends.hf import HFBackend
    from meditron.eval.backends.native import NativeBackend

    return NativeBackend(loaded=smollm), HFBackend("smollm2-135m", device="cpu")


def test_hf_matches_native_scores(backends):
    native, hf = backends
    labels = [list("ABCD")] * 2
    assert hf.top_token(PROMPTS, labels) == [pytest.approx(x, abs=2e-3) for x in native.top_token(PROMPTS, labels)]
    choices = [[" A. Heart", " B. Liver", " C. Lung", " D. Skin"], [" A", " B", " C", " D"]]
    a = native.loglik(PROMPTS, choices)
    b = hf.loglik(PROMPTS, choices)
    for x, y in zip(a, b):
        assert x.logliks == pytest.approx(y.logliks, abs=2e-3) and x.n_tokens == y.n_tokens


def test_hf_and_native_greedy_generation_agree(backends):
    from meditron.eval.backends.base import GenParams

    native, hf = backends
    p = GenParams(max_new_tokens=4, frequency_penalty=1.0)
    assert hf.generate(PROMPTS[:1], p) == native.generate(PROMPTS[:1], p)
