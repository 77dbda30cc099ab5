"""The chunked cross-entropy equals the plain one (value and gradients); the LR schedule."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from meditron.train.loop import lr_at
from meditron.train.loss import linear_cross_entropy


@pytest.mark.parametrize("chunk", [5, 16, 1000])
def test_chunked_loss_and_grads_match_full_logits(chunk):
    g = torch.Generator().manual_seed(0)
    h = torch.randn(3, 11, 24, generator=g, requires_grad=True)
    w = torch.randn(97, 24, generator=g, requires_grad=True)
    t = torch.randint(0, 97, (3, 11), generator=g)
    t[1, :4] = -100
    ours = linear_cross_entropy(h, w, t, scale=0.25, chunk=chunk)
    ours.backward()
    gh, gw = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    ref = F.cross_entropy((h @ w.t()).reshape(-1, 97), t.reshape(-1), ignore_index=-100, reduction="sum") * 0.25
    ref.backward()
    assert ours.item() == pytest.approx(ref.item(), rel=1e-6)
    assert torch.allclose(gh, h.grad, atol=1e-6) and torch.allclose(gw, w.grad, atol=1e-6)


def test_vocabulary_parallel_loss_with_uneven_shards_and_empty_chunks(tmp_path):
    """tp=2 over a 9-token vocabulary (shards of 5 and 4 rows), 2 gloo processes: every rank cuts the same
    chunks (sized from the full shard), and chunks with no target on a rank, or none at all, still agree."""
    import torch.multiprocessing as mp

    from train_helpers import vocab_parallel_loss_inputs, vocab_parallel_loss_worker

    mp.spawn(vocab_parallel_loss_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2)
    h, w, t = vocab_parallel_loss_inputs()
    h.requires_grad_(), w.requires_grad_()
    ref = F.cross_entropy(h @ w.t(), t, ignore_index=-100, reduction="sum") * 0.5
    ref.backward()
    ranks = [torch.load(tmp_path / f"{r}.pt") for r in (0, 1)]
    for name in ("default", "16"):
        (l0, gh0, gw0), (l1, gh1, gw1) = ranks[0][name], ranks[1][name]
        assert l0.item() == pytest.approx(ref.item(), rel=1e-6) and l1.item() == pytest.approx(ref.item(), rel=1e-6)
        assert torch.allclose(gh0, h.grad, atol=1e-6) and torch.allclose(gh1, h.grad, atol=1e-6)
        assert torch.allclose(torch.cat([gw0, gw1]), w.grad, atol=1e-6)


def test_schedule_warmup_cosine_min_and_two_epoch_sizing():
    peak, low = 3e-4, 1e-6
    assert lr_at(1, peak, low, 10, 100) == pytest.approx(3e-5)
    assert lr_at(10, peak, low, 10, 100) == pytest.approx(peak)
    assert lr_at(55, peak, low, 10, 100) == pytest.approx((peak + low) / 2)
    assert lr_at(100, peak, low, 10, 100) == pytest.approx(low)
    assert lr_at(150, peak, low, 10, 100) == pytest.approx(low)
    # sized for 2 epochs, stopped after 1: the last LR is still half-way down the cosine
    end = lr_at(50, peak, low, 0, 100)
    assert end == pytest.approx(low + 0.5 * (peak - low) * (1 + math.cos(math.pi * 0.5)))


@pytest.mark.parametrize("kernel", ["fused", "foreach"])     # single process / distributed (DTensors)
def test_optimizer_state_allocated_up_front_changes_nothing(kernel):
    """allocate_optimizer_state: parameters untouched, and training follows the lazily-initialised path."""
    from meditron.train.loop import allocate_optimizer_state

    g = torch.Generator().manual_seed(0)
    init = [torch.randn(8, 4, generator=g), torch.randn(4, generator=g)]
    grads = [[torch.randn_like(p) for p in init] for _ in range(3)]
    runs = []
    for early in (False, True):
        params = [torch.nn.Parameter(p.clone()) for p in init]
        opt = torch.optim.AdamW([{"params": params[:1], "weight_decay": 0.1}, {"params": params[1:], "weight_decay": 0.0}],
                                lr=1e-2, betas=(0.9, 0.95), eps=1e-5, **{kernel: True})
        if early:
            allocate_optimizer_state(opt)
            assert all(torch.equal(p, q) for p, q in zip(params, init))
            assert len(opt.state) == 2 and all(p.grad is None for p in params)
        for step_grads in grads:
            for p, gr in zip(params, step_grads):
                p.grad = gr.clone()
            opt.step()
        runs.append([p.detach().clone() for p in params])
    assert all(torch.equal(a, b) for a, b in zip(*runs))


def test_chunked_loss_under_bf16_autocast_accumulates_the_weight_gradient_in_fp32():
    """The GPU path (bf16 matmuls and logits, fp32 softmax and weight-gradient sum), run on the CPU.

    The reference is fp32 autograd on the same bf16-rounded inputs and logits. Over 256 chunks the weight
    gradient stays within 0.1% of it (measured 0.06%); a bf16 running sum of the chunk products measured 1.8%.
    """
    g = torch.Generator().manual_seed(1)
    h = torch.randn(2048, 32, generator=g, requires_grad=True)
    w = torch.randn(300, 32, generator=g, requires_grad=True)
    t = torch.randint(0, 300, (2048,), generator=g)
    t[:7] = -100
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = linear_cross_entropy(h, w, t, chunk=8)
    ours.backward()
    assert w.grad.dtype == torch.float32 and h.grad.dtype == torch.float32
    hb, wb = h.detach().bfloat16().float().requires_grad_(), w.detach().bfloat16().float().requires_grad_()
    ref = F.cross_entropy((hb @ wb.t()).bfloat16().float(), t, ignore_index=-100, reduction="sum")
    ref.backward()
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5)
    assert (w.grad - wb.grad).abs().max() < 1e-3 * wb.grad.abs().max()
    assert (h.grad - hb.grad).abs().max() < 1e-2 * hb.grad.abs().max()
