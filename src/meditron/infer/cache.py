"""A static key/value cache for decoding, with prefix sharing.

Keys and values of all layers live in two preallocated tensors (layers, B, n_kv, max_len, hd),
so decoding never reallocates. `update` writes the new step at `length` and returns views of
everything so far; the caller advances `length` once the forward pass is done. A cache computed
for one prompt can be `expand`ed to a batch: few-shot demonstrations are encoded once and
shared by every question that follows them.
"""

from __future__ import annotations

import torch

from meditron.model.config import ModelConfig


class KVCache:
    def __init__(
        self,
        config: ModelConfig,
        batch: int,
        max_len: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        n_layers: int | None = None,
    ):
        n_layers = config.n_layers if n_layers is None else n_layers
        shape = (n_layers, batch, config.n_kv_heads, max_len, config.head_dim)
        self.k = torch.empty(shape, dtype=dtype, device=device)
        self.v = torch.empty(shape, dtype=dtype, device=device)
        self.length = 0

    @property
    def batch(self) -> int:
        return self.k.shape[1]

    @property
    def max_len(self) -> int:
        return self.k.shape[3]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        T = k.shape[2]
        end = self.length + T
        if end > self.max_len:
            raise ValueError(f"KV cache of {self.max_len} positions overflows at {end}")
        # narrow on per-layer views: 3 ops per tensor where indexing costs 6 (decoding calls this 60x a token)
        lk, lv = self._layers()
        lk[layer].narrow(2, self.length, T).copy_(k)
        lv[layer].narrow(2, self.length, T).copy_(v)
        return lk[layer].narrow(2, 0, end), lv[layer].narrow(2, 0, end)

    def _layers(self) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        """Per-layer views of k and v, made once per storage (select/expand replace the storage)."""
        key = (self.k.data_ptr(), self.k.shape)
        if getattr(self, "_views_key", None) != key:
            self._views = (self.k.unbind(0), self.v.unbind(0))
            self._views_key = key
        return self._views

    def advance(self, n: int) -> None:
        self.length += n

    def expand(self, batch: int, max_len: int | None = None) -> "KVCache":
        """A new cache of `batch` rows, each starting with this (batch-1) cache's contents."""
        if self.batch != 1:
            raise ValueError("only a single-row cache can be expanded")
        max_len = max_len or self.max_len
        new = KVCache.__new__(KVCache)
        shape = (self.k.shape[0], batch, self.k.shape[2], max_len, self.k.shape[4])
        new.k = torch.empty(shape, dtype=self.k.dtype, device=self.k.device)
        new.v = torch.empty(shape, dtype=self.v.dtype, device=self.v.device)
        new.k[:, :, :, :self.length] = self.k[:, :, :, :self.length]
        new.v[:, :, :, :self.length] = self.v[:, :, :, :self.length]
        new.length = self.length
        return new

    def select(self, rows: torch.Tensor) -> None:
        """Keep only the given batch rows (finished sequences drop out of the batch)."""
        self.k = self.k[:, rows]
        self.v = self.v[:, rows]
