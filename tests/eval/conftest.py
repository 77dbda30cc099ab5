"""Eval fixtures: the SmolLM2 model once per session, a tiny random model with SmolLM2's tokenizer."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def smol_tokenizer():
    from meditron.model.hub import resolve
    from meditron.model.tokenizer import load_tokenizer

    return load_tokenizer(resolve("smollm2-135m"))


@pytest.fixture(scope="session")
def smollm():
    """(model, tokenizer) of the embedded SmolLM2-135M, loaded once."""
    from meditron.model.hub import load_model

    model, tok = load_model("smollm2-135m")
    model.eval()
    return model, tok


@pytest.fixture(scope="session")
def tiny_model():
    from meditron.model.config import preset
    from meditron.model.llama import Transformer

    torch.manual_seed(0)
    model = Transformer(preset("tiny-gqa", vocab_size=49152, max_seq_len=4096))
    model.init_weights(seed=0, std=0.2)
    return model.eval()


@pytest.fixture()
def tiny_backend(tiny_model, smol_tokenizer):
    from meditron.eval.backends.native import NativeBackend

    return NativeBackend(loaded=(tiny_model, smol_tokenizer), max_batch_tokens=512)
