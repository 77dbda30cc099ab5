"""Log-probability scoring: continuation log-likelihoods and next-token log-probs, batched.

What evaluation asks of a model is mostly "how likely is this continuation after that prompt",
for several continuations of one prompt, and for many prompts that start the same way (a system
instruction, few-shot demonstrations). The engine does as little work as possible for that:

- a shared token prefix (`prefix`) is encoded once into a KV cache and reused by every batch
  (`KVCache.expand`), so few-shot demonstrations cost one forward pass per seed, not per question;
- all continuations of one request are packed into ONE row after their shared context, with an
  attention mask that lets each continuation see the context and itself only (a tree), and
  positions that restart after the context for every continuation;
- single-token continuations need no extra input tokens at all: they are all read from the
  last context position;
- the vocabulary projection is applied only at the positions that predict a scored token
  (`hidden_only=True` + `model.logits`), never over the whole sequence;
- the rows of a batch are concatenated into ONE sequence under a token budget, with no
  padding at all, and attention runs per row (`PackedSegments`): the matmuls see one large
  batch while attention costs what each row alone would cost, not the square of the batch.

This module knows nothing of benchmarks or prompts (it must not import `meditron.eval`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from meditron.infer.cache import KVCache
from meditron.model.llama import PackedSegments, causal_mask


@dataclass
class ScoreRequest:
    """A context (full token ids, starting with the prefix when one is given) and what to score after it."""

    context: list[int]
    continuations: list[list[int]] = field(default_factory=list)
    candidates: list[int] = field(default_factory=list)  # token ids whose next-token log-prob is wanted


@dataclass
class ScoreResult:
    continuation_logprobs: list[float]  # sum of log-probs of each continuation's tokens
    continuation_greedy: list[bool]  # whether each continuation is the greedy (argmax) decoding
    candidate_logprobs: list[float]  # next-token log-prob of each candidate id after the context
    top_token: int | None = None  # argmax next token after the context (when candidates were asked)


def common_prefix(seqs: Sequence[Sequence[int]]) -> list[int]:
    """The longest token prefix shared by all sequences."""
    if not seqs:
        return []
    first = seqs[0]
    n = min(len(s) for s in seqs)
    for s in seqs[1:]:
        i = 0
        while i < n and s[i] == first[i]:
            i += 1
        n = i
        if n == 0:
            break
    return list(first[:n])


@dataclass
class _Row:
    index: int
    tokens: list[int]
    positions: list[int]
    # for each input position j (relative to the row), the relative index it may attend up to:
    # `segment[j]` = -1 for context tokens (causal over the context), else the continuation id
    segment: list[int]
    ctx_len: int
    # (row position predicting, target token, continuation id) for every scored token
    targets: list[tuple[int, int, int]]


class LogProbScorer:
    """Scores requests with a `meditron.model.llama.Transformer` (or anything with its forward/logits API)."""

    def __init__(self, model, max_batch_tokens: int = 4096, min_prefix: int = 8):
        self.model = model
        self.max_batch_tokens = max_batch_tokens
        self.min_prefix = min_prefix
        self._prefix_key: tuple[int, ...] | None = None
        self._prefix_cache: KVCache | None = None
        self.stats = {"forward_tokens": 0, "prefix_tokens": 0, "logit_rows": 0, "batches": 0}

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    # -- prefix -----------------------------------------------------------------------------------
    @torch.inference_mode()
    def _prefix(self, prefix: list[int]) -> KVCache:
        """The KV cache of a prefix, computed once and kept while the same prefix is asked for."""
        key = tuple(prefix)
        if self._prefix_key != key:
            cache = KVCache(self.model.config, 1, len(prefix), dtype=self.dtype, device=self.device)
            tokens = torch.tensor([prefix], device=self.device)
            positions = torch.arange(len(prefix), device=self.device)[None]
            mask = causal_mask(len(prefix), len(prefix), self.device)[None, None]
            self.model(tokens, positions=positions, mask=mask, cache=cache, hidden_only=True)
            cache.advance(len(prefix))
            self._prefix_key, self._prefix_cache = key, cache
            self.stats["prefix_tokens"] += len(prefix)
        return self._prefix_cache

    # -- rows -------------------------------------------------------------------------------------
    @staticmethod
    def _row(index: int, req: ScoreRequest, start: int) -> _Row:
        ctx = req.context[start:]
        if not ctx:
            raise ValueError("a request's context must extend past the shared prefix by at least one token")
        tokens = list(ctx)
        positions = list(range(start, start + len(ctx)))
        segment = [-1] * len(ctx)
        targets: list[tuple[int, int, int]] = []
        last_ctx = len(ctx) - 1
        base = start + len(ctx)
        for c, cont in enumerate(req.continuations):
            if not cont:
                raise ValueError("empty continuation")
            targets.append((last_ctx, cont[0], c))
            # inputs: every continuation token but the last (its prediction is not needed)
            for k, tok in enumerate(cont[:-1]):
                tokens.append(tok)
                positions.append(base + k)
                segment.append(c)
                targets.append((len(tokens) - 1, cont[k + 1], c))
        return _Row(index, tokens, positions, segment, len(ctx), targets)

    def _batches(self, rows: list[_Row]) -> list[list[_Row]]:
        """Rows (longest first) grouped into forward passes of at most `max_batch_tokens` tokens."""
        batches: list[list[_Row]] = []
        cur: list[_Row] = []
        used = 0
        for r in sorted(rows, key=lambda r: -len(r.tokens)):
            if cur and used + len(r.tokens) > self.max_batch_tokens:
                batches.append(cur)
                cur, used = [], 0
            cur.append(r)
            used += len(r.tokens)
        if cur:
            batches.append(cur)
        return batches

    # -- scoring ----------------------------------------------------------------------------------
    @torch.inference_mode()
    def score(
        self,
        requests: Sequence[ScoreRequest],
        prefix: Sequence[int] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> list[ScoreResult]:
        """Score every request; `prefix`, when given and shared by a request, is encoded once and reused."""
        prefix = list(prefix or [])
        use_prefix = len(prefix) >= self.min_prefix
        groups: dict[bool, list[_Row]] = {True: [], False: []}
        for i, req in enumerate(requests):
            shared = use_prefix and len(req.context) > len(prefix) and req.context[: len(prefix)] == prefix
            groups[shared].append(self._row(i, req, len(prefix) if shared else 0))
        results: list[ScoreResult | None] = [None] * len(requests)
        for shared, rows in groups.items():
            if not rows:
                continue
            cache = self._prefix(prefix) if shared else None
            for batch in self._batches(rows):
                for row, res in zip(batch, self._run(batch, requests, cache)):
                    results[row.index] = res
                if progress is not None:
                    progress(len(batch))
        return results  # type: ignore[return-value]

    def _run(self, batch: list[_Row], requests: Sequence[ScoreRequest],
             prefix_cache: KVCache | None) -> list[ScoreResult]:
        """One forward pass over the rows concatenated into a single sequence; results in row order."""
        dev = self.device
        P = prefix_cache.length if prefix_cache is not None else 0
        offsets, starts, ends, masks = [], [], [], []
        tokens: list[int] = []
        positions: list[int] = []
        for r in batch:
            offsets.append(len(tokens))
            starts.append(len(tokens))
            tokens += r.tokens
            positions += r.positions
            ends.append(len(tokens))
            masks.append(self._tree_mask(r, P))
        T = len(tokens)
        self.stats["forward_tokens"] += T
        self.stats["batches"] += 1
        segments = PackedSegments(starts, ends, P, masks, device=dev)
        cache = prefix_cache.expand(1, P + T) if prefix_cache is not None else None
        h = self.model(torch.tensor([tokens], device=dev), positions=torch.tensor([positions], device=dev),
                       mask=segments, cache=cache, hidden_only=True)[0]
        # Project onto the vocabulary only where a next-token distribution is needed.
        want = sorted({j for r, off in zip(batch, offsets)
                       for j in [off + r.ctx_len - 1] + [off + t[0] for t in r.targets]})
        where = {j: k for k, j in enumerate(want)}
        logprobs = torch.log_softmax(self.model.logits(h[torch.tensor(want, device=dev)]).float(), dim=-1)
        argmax = logprobs.argmax(dim=-1).tolist()
        self.stats["logit_rows"] += len(want)
        out: list[ScoreResult] = []
        for r, off in zip(batch, offsets):
            req = requests[r.index]
            n_c = len(req.continuations)
            sums = [0.0] * n_c
            greedy = [True] * n_c
            if r.targets:
                sel = [where[off + j] for (j, _, _) in r.targets]
                lp = logprobs[torch.tensor(sel, device=dev), torch.tensor([t for (_, t, _) in r.targets], device=dev)].tolist()
                for (j, t, c), v, k in zip(r.targets, lp, sel):
                    sums[c] += v
                    if argmax[k] != t:
                        greedy[c] = False
            last = where[off + r.ctx_len - 1]
            cand = (logprobs[last, torch.tensor(req.candidates, dtype=torch.long, device=dev)].tolist()
                    if req.candidates else [])
            out.append(ScoreResult(sums, greedy, cand, argmax[last] if req.candidates else None))
        return out

    @staticmethod
    def _tree_mask(r: _Row, prefix_len: int) -> torch.Tensor | None:
        """(n, prefix_len + n) attention mask of one row, or None when it is a plain context
        (`PackedSegments` then attends causally after the prefix).

        A token sees the prefix, the context causally, and of the continuations only its own.
        """
        n = len(r.tokens)
        if n == r.ctx_len:
            return None
        seg = torch.tensor(r.segment)
        idx = torch.arange(n)
        allowed = (idx[None, :] <= idx[:, None]) & ((seg[None, :] == -1) | (seg[None, :] == seg[:, None]))
        return torch.cat((torch.ones(n, prefix_len, dtype=torch.bool), allowed), dim=1)
