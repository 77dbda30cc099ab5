"""A Llama-family decoder in plain torch: RMSNorm, RoPE, GQA attention through SDPA, SwiGLU.

No parallelism lives here. Module and parameter names are regular (torchtitan style) so that
FSDP2, tensor parallelism and pipeline stages are applied from the outside (`meditron.train.parallel`):
`layers` is a ModuleDict so a pipeline stage can delete the layers it does not own, and
`tok_embeddings`, `norm` and `output` may be set to None on stages that do not hold them.

RoPE uses the Hugging Face "rotate half" layout, so Hugging Face weights load without permutation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from meditron.model import lean
from meditron.model.config import ModelConfig


class KVCacheLike(Protocol):
    """What attention needs from a KV cache (implemented in `meditron.infer.cache`)."""

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, n_kv, T, hd) for this step; return all keys and values so far."""
        ...


@dataclass
class PackedSegments:
    """Independent sequences concatenated into one row (batch 1), for attention without padding.

    Scoring many short prompts wants the matmuls of one large batch but the attention of
    many small ones: a block-diagonal mask over a packed row would cost attention quadratic
    in the row's length, nearly all of it masked. Segment i covers query positions
    `starts[i]:ends[i]` of the row; it sees the first `prefix_len` keys (a shared prefix already
    in the KV cache) and its own keys, under `masks[i]` ((n, prefix_len + n) bool, True =
    attend), or causally (prefix included) when that mask is None. Segments must tile the row.
    """

    starts: list[int]
    ends: list[int]
    prefix_len: int = 0
    masks: list[torch.Tensor | None] = field(default_factory=list)
    device: torch.device | str = "cpu"

    def __post_init__(self) -> None:
        # Masks reach the device, and causal-after-a-prefix masks are built, once per forward pass
        # here rather than once per layer in `attend`.
        P = self.prefix_len
        masks = self.masks or [None] * len(self.starts)
        self.masks = [m.to(self.device) if m is not None else
                      causal_mask(b - a, P + b - a, self.device) if P else None
                      for m, a, b in zip(masks, self.starts, self.ends)]

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gqa: bool) -> torch.Tensor:
        """q (1, H, T, hd); k, v (1, n_kv, prefix_len + T, hd) -> (1, H, T, hd)."""
        P = self.prefix_len
        outs = []
        for a, b, mask in zip(self.starts, self.ends, self.masks):
            if P:
                ks = torch.cat((k[:, :, :P], k[:, :, P + a: P + b]), dim=2)
                vs = torch.cat((v[:, :, :P], v[:, :, P + a: P + b]), dim=2)
            else:
                ks, vs = k[:, :, a:b], v[:, :, a:b]
            if mask is None:
                outs.append(F.scaled_dot_product_attention(q[:, :, a:b], ks, vs, is_causal=True, enable_gqa=gqa))
            else:
                outs.append(F.scaled_dot_product_attention(q[:, :, a:b], ks, vs, attn_mask=mask, enable_gqa=gqa))
        return torch.cat(outs, dim=2)


def causal_mask(n_queries: int, n_keys: int, device: torch.device | str) -> torch.Tensor:
    """(n_queries, n_keys) bool, True = attend: the queries are the last n_queries positions of the
    n_keys, each seeing itself and everything before it (lower-right aligned causal mask)."""
    return torch.ones(n_queries, n_keys, dtype=torch.bool, device=device).tril(n_keys - n_queries)


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gqa: bool) -> torch.Tensor:
    """Causal self-attention, q (B, H, T, hd), k, v (B, n_kv, T, hd).

    PyTorch's CPU flash kernel tiles keys in blocks of 512, so below about 1k tokens it computes
    the whole T x T score matrix and masks half of it away. On CPU, for 256 <= T <= 1024, each of
    4 query blocks here sees only the keys it may attend to (the first causally, the others under
    an explicit lower-right causal mask), which skips 3/8 of that work. Forward + backward of
    SmolLM2-135M's attention at 4 x 512 tokens: 157 -> 112 ms per layer on a 2-core EPYC (-23% at
    256 tokens, -10% at 1024, nothing at 2048). GPU kernels skip masked tiles themselves, and an
    explicit mask would cost them the flash kernel, so they keep one call.
    """
    T = q.shape[2]
    if q.device.type != "cpu" or not 256 <= T <= 1024:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
    bounds = [T * i // 4 for i in range(5)]
    outs = []
    for a, b in zip(bounds, bounds[1:]):
        mask = None if a == 0 else causal_mask(b - a, b, q.device)
        outs.append(F.scaled_dot_product_attention(q[:, :, a:b], k[:, :, :b], v[:, :, :b], attn_mask=mask,
                                                   is_causal=mask is None, enable_gqa=gqa))
    return torch.cat(outs, dim=2)


def rope_inv_freq(config: ModelConfig) -> torch.Tensor:
    """Inverse frequencies of the rotary embedding, with llama3 or linear scaling applied.

    Computed in float32 exactly as the Hugging Face reference does, so logits match bit for bit.
    """
    hd = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
    scaling = config.rope_scaling or {}
    kind = scaling.get("rope_type")
    if kind == "linear":
        inv_freq = inv_freq / scaling["factor"]
    elif kind == "llama3":
        factor = scaling["factor"]
        low, high = scaling.get("low_freq_factor", 1.0), scaling.get("high_freq_factor", 4.0)
        old_ctx = scaling.get("original_max_position_embeddings", 8192)
        low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
        smooth = (old_ctx / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        is_medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        inv_freq = torch.where(is_medium, smoothed, scaled)
    return inv_freq


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (B, T, H, hd) by cos/sin (B|1, T, 1, hd) in the rotate-half layout.

    `sin` comes from the model's tables with its first half negated, so rotate-half
    (cat(-x2, x1) * sin) is a roll: 4 calls instead of 7, the same bits (a sign flip is exact).
    Decoding calls this once or twice per layer and token (q and k together when projections are
    fused), where each small op costs microseconds.
    """
    return x * cos + x.roll(x.shape[-1] // 2, dims=-1) * sin


def few_rows_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x @ weight.T (+ bias), fast for the few rows that decoding and scoring feed at every step.

    On CPU, MKL handles these shapes badly, and both fixes below are measured on SmolLM2's
    weights (2 cores):
    - one row: MKL's GEMV runs on a single thread (11 GB/s of weights read, whatever the thread
      count). The weight is therefore split into one row block per thread and run as a batched
      matmul, which MKL spreads over the threads: a whole decode step's matmuls take 31 ms, not 48.
    - 2-64 rows: MKL's small-M GEMM re-packs the weight on every call. (weight @ x.T).T does
      not, and is 1.5-4x faster (the LM head at 8 rows: 11.5 ms, not 45).
    """
    rows = x.numel() // x.shape[-1]
    if x.device.type != "cpu" or rows > 64:
        return F.linear(x, weight, bias)
    n_out, n_in = weight.shape
    if rows == 1:
        blocks = torch.get_num_threads()
        if blocks < 2 or n_out % blocks or not weight.is_contiguous() or not x.is_contiguous():
            return F.linear(x, weight, bias)
        # x as an (n_in, 1) column with strides (1, n_in): with strides (1, 1) MKL takes a 4x slower path
        column = x.as_strided((blocks, n_in, 1), (0, 1, n_in))
        out = torch.bmm(weight.view(blocks, n_out // blocks, n_in), column)
        out = out.view(*x.shape[:-1], n_out)
    else:
        out = (weight @ x.reshape(rows, -1).T).T.reshape(*x.shape[:-1], n_out)
    return out if bias is None else out + bias


def _fuse_linears(*linears: nn.Linear) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Concatenate the weights (and biases) of linears with the same input; re-point each
    linear's parameters at its slice so no memory is duplicated and state dicts are unchanged."""
    weight = torch.cat([lin.weight.detach() for lin in linears], dim=0)
    has_bias = linears[0].bias is not None
    bias = torch.cat([lin.bias.detach() for lin in linears]) if has_bias else None
    start = 0
    for lin in linears:
        n = lin.out_features
        lin.weight = nn.Parameter(weight[start:start + n], requires_grad=lin.weight.requires_grad)
        if has_bias:
            lin.bias = nn.Parameter(bias[start:start + n], requires_grad=lin.bias.requires_grad)
        start += n
    return weight, bias


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in fp32 like the reference, then scale in the input dtype (bf16 rounds like HF's).
        if x.dtype == torch.float32:
            if lean.usable(x, self.weight):
                return lean.rms_norm(x, self.weight, self.eps)   # training: saves x and 1/rms only
            if type(x) is torch.Tensor and type(self.weight.data) is torch.Tensor:
                # the same arithmetic in one call (bit-identical in fp32); DTensors take the explicit path
                return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)


class Attention(nn.Module):
    def __init__(self, config: ModelConfig, layer_id: int):
        super().__init__()
        self.layer_id = layer_id
        self.head_dim = config.head_dim
        self.n_heads, self.n_kv_heads = config.n_heads, config.n_kv_heads
        hd, bias = config.head_dim, config.qkv_bias
        self.wq = nn.Linear(config.dim, config.n_heads * hd, bias=bias)
        self.wk = nn.Linear(config.dim, config.n_kv_heads * hd, bias=bias)
        self.wv = nn.Linear(config.dim, config.n_kv_heads * hd, bias=bias)
        self.wo = nn.Linear(config.n_heads * hd, config.dim, bias=False)
        self._fused: tuple[torch.Tensor, torch.Tensor | None] | None = None

    def fuse(self) -> None:
        """Hold wq|wk|wv as one matrix (the three weights become views of it): one matmul, not three."""
        self._fused = _fuse_linears(self.wq, self.wk, self.wv)

    def qkv_heads(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v as (B, heads, T, hd), RoPE applied to q and k."""
        B, T, _ = x.shape
        if self._fused is not None and self._fused[0].data_ptr() == self.wq.weight.data_ptr():
            # one matmul, then RoPE over the q and k heads at once (decoding pays per op, not per byte)
            heads = few_rows_linear(x, *self._fused).view(B, T, -1, self.head_dim)
            nq, nqk = self.n_heads, self.n_heads + self.n_kv_heads
            qk = apply_rope(heads[:, :, :nqk], cos, sin)
            return qk[:, :, :nq].transpose(1, 2), qk[:, :, nq:].transpose(1, 2), heads[:, :, nqk:].transpose(1, 2)
        # -1 heads: under tensor parallelism each rank holds a slice of the heads.
        q = apply_rope(self.wq(x).view(B, T, -1, self.head_dim), cos, sin).transpose(1, 2)
        k = apply_rope(self.wk(x).view(B, T, -1, self.head_dim), cos, sin).transpose(1, 2)
        return q, k, self.wv(x).view(B, T, -1, self.head_dim).transpose(1, 2)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | PackedSegments | None = None,
        cache: KVCacheLike | None = None,
    ) -> torch.Tensor:
        B, T, _ = x.shape
        q, k, v = self.qkv_heads(x, cos, sin)
        if cache is not None:
            k, v = cache.update(self.layer_id, k, v)
        gqa = q.shape[1] != k.shape[1]
        if isinstance(mask, PackedSegments):
            out = mask.attend(q, k, v, gqa)
        elif mask is None and cache is None:
            out = causal_attention(q, k, v, gqa)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
        out = out.transpose(1, 2).reshape(B, T, -1)
        return few_rows_linear(out, self.wo.weight) if self._fused is not None else self.wo(out)


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        self._fused: tuple[torch.Tensor, torch.Tensor | None] | None = None

    def fuse(self) -> None:
        """Hold w1|w3 as one matrix (both weights become views of it)."""
        self._fused = _fuse_linears(self.w1, self.w3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._fused is not None and self._fused[0].data_ptr() == self.w1.weight.data_ptr():
            gate, up = few_rows_linear(x, *self._fused).chunk(2, dim=-1)
            return few_rows_linear(F.silu(gate) * up, self.w2.weight)
        if type(self.w2) is nn.Linear and lean.usable(x, self.w2.weight):
            return lean.swiglu_down(self.w1(x), self.w3(x), self.w2.weight)   # training: saves gate, up
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class TransformerBlock(nn.Module):
    def __init__(self, config: ModelConfig, layer_id: int):
        super().__init__()
        self.attention_norm = RMSNorm(config.dim, config.norm_eps)
        self.attention = Attention(config, layer_id)
        self.ffn_norm = RMSNorm(config.dim, config.norm_eps)
        self.feed_forward = FeedForward(config.dim, config.ffn_dim)

    def forward(self, x, cos, sin, mask=None, cache=None):
        h = x + self.attention(self.attention_norm(x), cos, sin, mask, cache)
        return h + self.feed_forward(self.ffn_norm(h))


class Transformer(nn.Module):
    """The decoder. `forward` returns logits, or final hidden states with `hidden_only=True`."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.tok_embeddings: nn.Embedding | None = nn.Embedding(config.vocab_size, config.dim)
        self.layers = nn.ModuleDict({str(i): TransformerBlock(config, i) for i in range(config.n_layers)})
        self.norm: RMSNorm | None = RMSNorm(config.dim, config.norm_eps)
        self.output: nn.Linear | None = nn.Linear(config.dim, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight
        self.register_buffer("rope_cos", torch.empty(0), persistent=False)
        self.register_buffer("rope_sin", torch.empty(0), persistent=False)
        self.reset_rope()

    def reset_rope(self, device: torch.device | str | None = None) -> None:
        """(Re)compute the RoPE tables; call after materialising a model built on the meta device."""
        inv_freq = rope_inv_freq(self.config)
        t = torch.arange(self.config.max_seq_len, dtype=torch.float32)
        freqs = torch.outer(t, inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        device = device if device is not None else self.rope_cos.device
        self.rope_cos = emb.cos().to(device)
        self.rope_sin = torch.cat((-freqs.sin(), freqs.sin()), dim=-1).to(device)  # signed: see apply_rope

    def rope(self, positions: torch.Tensor | None, seq_len: int, dtype: torch.dtype):
        """cos/sin for the given positions (B, T), or for 0..seq_len-1 when positions is None."""
        if positions is None:
            if seq_len > self.rope_cos.shape[0]:
                raise ValueError(f"sequence of {seq_len} tokens exceeds max_seq_len {self.rope_cos.shape[0]}")
            cos, sin = self.rope_cos[:seq_len][None], self.rope_sin[:seq_len][None]
        else:
            cos, sin = self.rope_cos[positions], self.rope_sin[positions]
        return cos[:, :, None, :].to(dtype), sin[:, :, None, :].to(dtype)

    @torch.no_grad()
    def init_weights(self, seed: int | None = None, std: float = 0.02) -> None:
        """Random init like Hugging Face Llama (normal(0, std) for matrices, ones for norms)."""
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                w = torch.empty(module.weight.shape).normal_(0.0, std, generator=gen)
                module.weight.copy_(w)
                if getattr(module, "bias", None) is not None:
                    module.bias.zero_()
            elif isinstance(module, RMSNorm):
                module.reset_parameters()

    def forward(
        self,
        tokens: torch.Tensor,
        positions: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        cache: KVCacheLike | None = None,
        hidden_only: bool = False,
    ) -> torch.Tensor:
        """tokens (B, T) ids — or hidden states (B, T, dim) on a pipeline stage without embeddings.

        positions (B, T) and a boolean mask (B, 1, T, S) are needed for padded batches and
        cached decoding; without them attention is plain causal over 0..T-1. `mask` may instead be
        `PackedSegments` (batch 1): several sequences in one row, each attending to itself only.
        """
        h = self.tok_embeddings(tokens) if self.tok_embeddings is not None else tokens
        cos, sin = self.rope(positions, h.shape[1], h.dtype)
        for layer in self.layers.values():
            h = layer(h, cos, sin, mask, cache)
        if self.norm is not None:
            h = self.norm(h)
        if hidden_only or self.output is None:
            return h
        return self.output(h)

    @torch.no_grad()
    def fuse_projections(self) -> "Transformer":
        """Inference layout: one matmul for Q|K|V and one for gate|up in every layer.

        Parameters keep their names and values (they become views into the fused matrices), so
        saving and state dicts are unaffected. Not for training under FSDP/TP.
        """
        for layer in self.layers.values():
            layer.attention.fuse()
            layer.feed_forward.fuse()
        return self

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Project final hidden states to vocabulary logits (only where they are needed)."""
        if isinstance(self.output.weight, torch.nn.Parameter) and type(self.output.weight.data) is torch.Tensor:
            return few_rows_linear(hidden, self.output.weight)
        return self.output(hidden)

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in {id(p): p for p in self.parameters()}.values())
