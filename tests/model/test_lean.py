"""The memory-lean training path: same loss and gradients as the plain modules, less saved."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from meditron.model import lean
from meditron.model.config import preset
from meditron.model.llama import Transformer


@pytest.fixture(scope="module")
def model():
    cfg = dataclasses.replace(preset("smollm2-135m"), n_layers=2, vocab_size=512)
    m = Transformer(cfg)
    m.init_weights(seed=0)
    return m


def forward_backward(model, tokens, use_lean: bool, monkeypatch) -> tuple[float, dict, int]:
    """Loss, parameter gradients and the bytes autograd saved (distinct storages, weights excluded)."""
    monkeypatch.setattr(lean, "usable", lean.usable if use_lean else (lambda *a: False))
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in weights:
            saved[s.data_ptr()] = s.nbytes()
        return t

    model.zero_grad(set_to_none=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = torch.nn.functional.cross_entropy(model(tokens[:, :-1]).flatten(0, 1), tokens[:, 1:].flatten())
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}, sum(saved.values())


def test_lean_path_matches_plain_modules_and_saves_less(model, monkeypatch):
    tokens = torch.randint(0, 512, (2, 65), generator=torch.Generator().manual_seed(1))
    loss_lean, grads_lean, bytes_lean = forward_backward(model, tokens, True, monkeypatch)
    loss_plain, grads_plain, bytes_plain = forward_backward(model, tokens, False, monkeypatch)
    assert loss_lean == loss_plain                                  # the forward is the same arithmetic
    for name, g in grads_plain.items():
        assert torch.allclose(grads_lean[name], g, rtol=1e-5, atol=1e-7), name
    # not saved any more: silu(gate) and silu(gate) * up per layer, x / rms(x) per norm (2 a layer + the final one)
    c, n = model.config, tokens[:, :-1].numel()
    assert bytes_plain - bytes_lean == 4 * n * (c.n_layers * (2 * c.ffn_dim + 2 * c.dim) + c.dim)


def test_lean_path_stays_out_of_inference_and_autocast(model):
    x = torch.randn(1, 4, model.config.dim)
    with torch.no_grad():
        assert not lean.usable(x, model.norm.weight)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not lean.usable(x, model.norm.weight)
    assert lean.usable(x, model.norm.weight)


def test_swiglu_backward_in_bf16_is_as_accurate_as_the_plain_ops():
    """FSDP's mixed precision runs the lean path with bf16 activations: its gradients must be no
    further from the exact (fp64) ones than autograd's own bf16 gradients are."""
    gen = torch.Generator().manual_seed(0)
    gate64, up64 = torch.randn(64, 96, generator=gen, dtype=torch.float64), torch.randn(64, 96, generator=gen, dtype=torch.float64)
    w64, grad64 = torch.randn(32, 96, generator=gen, dtype=torch.float64) / 10, torch.randn(64, 32, generator=gen, dtype=torch.float64)

    def grads(dtype, use_lean):
        gate, up, w = (t.detach().to(dtype).clone().requires_grad_() for t in (gate64, up64, w64))
        out = lean.swiglu_down(gate, up, w) if use_lean else (torch.nn.functional.silu(gate) * up) @ w.t()
        out.backward(grad64.to(dtype))
        return [t.grad.double() for t in (gate, up, w)]

    exact = grads(torch.float64, False)
    for ours, plain, ref in zip(grads(torch.bfloat16, True), grads(torch.bfloat16, False), exact):
        err_ours, err_plain = (ours - ref).norm() / ref.norm(), (plain - ref).norm() / ref.norm()
        assert err_ours <= 1.1 * err_plain + 1e-4, (err_ours.item(), err_plain.item())
    assert all(torch.allclose(a, b, rtol=1e-10, atol=1e-12) for a, b in zip(grads(torch.float64, True), exact))
