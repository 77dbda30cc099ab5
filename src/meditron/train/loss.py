"""Cross-entropy from final hidden states, chunked, never holding the full-vocabulary logits.

`linear_cross_entropy(h, W, targets, scale)` equals `scale * cross_entropy(h @ W.T, targets, reduction="sum")`
(ignoring targets of -100). It walks the tokens in chunks; for each chunk it forms the logits,
the loss and, in the same pass, the gradients with respect to h and W, so the (tokens × vocab)
matrix exists one chunk at a time and is computed once (no recomputation in backward).

Under tensor parallelism W is this rank's vocabulary shard; the max, the normaliser and the
target logit are combined across the tensor-parallel group (vocabulary-parallel cross-entropy).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from meditron.train.data import IGNORE

# fp32 logits held per chunk. On a CPU larger chunks than 64 MiB measured no faster. On a GPU each
# chunk costs a pass over the whole (vocab × dim) weight gradient, so a few large chunks are far cheaper
# than many small ones (128k vocabulary: 8 chunks at 16k tokens, not 127).
CHUNK_BYTES = {"cpu": 64 * 2**20, "cuda": 2**30}


def default_chunk(vocab_local: int, device_type: str = "cpu") -> int:
    """Rows per chunk so that one chunk's fp32 logits take about CHUNK_BYTES of this device type."""
    return max(16, CHUNK_BYTES.get(device_type, CHUNK_BYTES["cpu"]) // (4 * vocab_local))


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, w, targets, scale, chunk, vocab_offset, group, compute_dtype):
        device_type = h.device.type
        with torch.autocast(device_type=device_type, enabled=False):
            n, v_local = h.shape[0], w.shape[0]
            wc = w.to(compute_dtype)
            need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
            grad_h = torch.empty(h.shape, dtype=compute_dtype, device=h.device) if need_h else None
            grad_w = torch.zeros(w.shape, dtype=torch.float32, device=w.device) if need_w else None
            total = torch.zeros((), dtype=torch.float32, device=h.device)
            for s in range(0, n, chunk):
                hc = h[s: s + chunk].to(compute_dtype)
                t = targets[s: s + chunk]
                valid = t != IGNORE
                local_t = t - vocab_offset
                # the rows whose target lies in this rank's vocabulary shard; gather/scatter over all rows
                # (a clamped column where the target is elsewhere) keeps the loop free of host syncs
                mine = valid & (local_t >= 0) & (local_t < v_local)
                cols = local_t.clamp(0, v_local - 1)[:, None]
                logits = (hc @ wc.t()).float()
                m = logits.max(dim=-1).values
                if group is not None:
                    dist.all_reduce(m, op=dist.ReduceOp.MAX, group=group)
                logits.sub_(m[:, None])
                target_logit = torch.where(mine, logits.gather(1, cols)[:, 0], 0.0)
                logits.exp_()
                sumexp = logits.sum(dim=-1)
                if group is not None:
                    dist.all_reduce(target_logit, group=group)
                    dist.all_reduce(sumexp, group=group)
                total += ((sumexp.log() - target_logit) * valid).sum()
                if not (need_h or need_w):
                    continue
                # d loss / d logits = scale × (softmax − onehot(target)), zero on ignored rows: one pass
                factor = valid.float() * scale
                logits.mul_((factor / sumexp)[:, None])
                logits.scatter_add_(1, cols, torch.where(mine, -factor, 0.0)[:, None])
                g = logits.to(compute_dtype)
                if need_h:
                    torch.matmul(g, wc, out=grad_h[s: s + chunk])
                if need_w:
                    if compute_dtype == torch.float32:
                        grad_w.addmm_(g.t(), hc)
                    else:   # accumulate in fp32; add_ promotes without an fp32 copy of the product
                        grad_w.add_(g.t() @ hc)
            if need_h and group is not None:
                dist.all_reduce(grad_h, group=group)
        ctx.save_for_backward(
            grad_h.to(h.dtype) if need_h else None, grad_w.to(w.dtype) if need_w else None
        )
        return total * scale

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w = ctx.saved_tensors
        if grad_out.item() != 1.0:   # the loss is usually the root of backward (grad 1): no copy then
            grad_h = grad_h * grad_out if grad_h is not None else None
            grad_w = grad_w * grad_out if grad_w is not None else None
        return grad_h, grad_w, None, None, None, None, None, None


def linear_cross_entropy(
    h: torch.Tensor,
    w: torch.Tensor,
    targets: torch.Tensor,
    scale: float = 1.0,
    chunk: int | None = None,
    vocab_offset: int = 0,
    group=None,
    shard_rows: int | None = None,
) -> torch.Tensor:
    """scale × summed cross-entropy of `h @ w.T` against `targets` (-100 ignored), chunked over tokens.

    h (..., D) hidden states, w (V_local, D) this rank's rows of the output matrix. Under tensor
    parallelism every rank must cut the same chunks (each chunk's statistics are all-reduced), so the
    default chunk is sized from `shard_rows`, the full shard's row count, not from this rank's rows,
    which are fewer on the last rank when tp does not divide the vocabulary.
    """
    h2 = h.reshape(-1, h.shape[-1])
    t = targets.reshape(-1).to(h.device)
    device_type = h.device.type
    if torch.is_autocast_enabled(device_type):
        compute_dtype = torch.get_autocast_dtype(device_type)
    else:
        compute_dtype = w.dtype
    if group is not None and not (chunk or shard_rows):
        raise ValueError("a vocabulary-parallel loss needs chunk or shard_rows, so that every rank cuts the same chunks")
    chunk = chunk or default_chunk(shard_rows or w.shape[0], device_type)
    return _LinearCrossEntropy.apply(h2, w, t, float(scale), int(chunk), int(vocab_offset), group, compute_dtype)


def logits_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """The plain form (for pipeline stages, which must return logits): scale × summed cross-entropy."""
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1).to(logits.device),
        ignore_index=IGNORE, reduction="sum",
    ) * scale
