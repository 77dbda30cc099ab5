"""vLLM backend: GPU machines only."""

import importlib.util

import pytest

pytestmark = pytest.mark.gpu


def test_vllm_top_token_matches_native(smollm):
    if importlib.util.find_spec("vllm") is None:
        print("SKIP: vllm is not installed (GPU machines only)")
        pytest.skip("vllm is not installed (GPU machines only)")
    import torch

    if not torch.cuda.is_available():
        print("SKIP: no CUDA device")
        pytest.skip("no CUDA device")
    from meditron.eval.backends.native import NativeBackend
    from meditron.eval.backends.vllm import VLLMBackend

    prompts = ["Question: Which organ pumps blood?\n\nOptions:\nA. Heart\nB. Liver\nThe answer is:"]
    v = VLLMBackend("smollm2-135m", dtype="fp32").top_token(prompts, [["A", "B"]])
    n = NativeBackend(loaded=smollm).top_token(prompts, [["A", "B"]])
    assert v[0] == pytest.approx(n[0], abs=5e-2)
    gen = VLLMBackend.generate  # the API the runner uses
    assert callable(gen)
