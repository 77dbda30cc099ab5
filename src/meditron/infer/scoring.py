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
- rows are sorted by length and batched under a token budget, so padding stays small.

This module knows nothing of benchmarks or prompts (it must not import `meditron.eval`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from meditron.infer.cache import KVCache


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

    def __init__(self, model, max_batch_tokens: int = 4096, max_batch_rows: int = 64, min_prefix: int = 8,
                 pack_len: int = 384):
        self.model = model
        self.pack_len = pack_len  # several questions share one row of this many tokens (0: one per row)
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_rows = max_batch_rows
        self.min_prefix = min_prefix
        self._prefix_key: tuple[int, ...] | None = None
        self._prefix_cache: KVCache | None = None
        self.stats = {"forward_tokens": 0, "prefix_tokens": 0, "padded_tokens": 0, "logit_rows": 0, "batches": 0}

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
            mask = torch.ones(len(prefix), len(prefix), dtype=torch.bool, device=self.device).tril()[None, None]
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

    def _bins(self, rows: list[_Row]) -> list[list[_Row]]:
        """Pack rows into bins of `pack_len` tokens (first-fit decreasing): no padding between questions."""
        rows = sorted(rows, key=lambda r: -len(r.tokens))
        if not rows:
            return []
        total, longest = sum(len(r.tokens) for r in rows), len(rows[0].tokens)
        k = max(1, math.ceil(total / self.pack_len))
        cap = max(longest, math.ceil(total / k * 1.05))  # balanced bins: little padding in the last one
        bins: list[list[_Row]] = []
        room: list[int] = []
        for r in rows:
            n = len(r.tokens)
            for k in range(len(bins)):
                if room[k] >= n:
                    bins[k].append(r)
                    room[k] -= n
                    break
            else:
                bins.append([r])
                room.append(cap - n)
        return bins

    def _batches(self, rows: list[_Row]) -> list[list[list[_Row]]]:
        """Bins grouped into forward passes under the token budget."""
        bins = self._bins(rows) if self.pack_len else [[r] for r in sorted(rows, key=lambda r: -len(r.tokens))]
        bins.sort(key=lambda b: -sum(len(r.tokens) for r in b))
        batches: list[list[list[_Row]]] = []
        cur: list[list[_Row]] = []
        for b in bins:
            n = sum(len(r.tokens) for r in b)
            width = sum(len(r.tokens) for r in cur[0]) if cur else n
            if cur and ((len(cur) + 1) * width > self.max_batch_tokens or len(cur) >= self.max_batch_rows):
                batches.append(cur)
                cur = []
            cur.append(b)
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
                flat = [r for b in batch for r in b]
                for row, res in zip(flat, self._run(batch, requests, cache)):
                    results[row.index] = res
                if progress is not None:
                    progress(len(flat))
        return results  # type: ignore[return-value]

    def _run(self, batch: list[list[_Row]], requests: Sequence[ScoreRequest],
             prefix_cache: KVCache | None) -> list[ScoreResult]:
        """One forward pass over bins (rows of packed questions); results in bin order."""
        dev = self.device
        B = len(batch)
        T = max(sum(len(r.tokens) for r in b) for b in batch)
        P = prefix_cache.length if prefix_cache is not None else 0
        tokens = torch.zeros((B, T), dtype=torch.long)
        single = all(len(b) == 1 and len(b[0].tokens) == b[0].ctx_len for b in batch)
        offsets: list[list[int]] = []
        for i, b in enumerate(batch):
            off, offs = 0, []
            for r in b:
                tokens[i, off: off + len(r.tokens)] = torch.tensor(r.tokens)
                offs.append(off)
                off += len(r.tokens)
            offsets.append(offs)
        used = sum(len(r.tokens) for b in batch for r in b)
        self.stats["forward_tokens"] += used
        self.stats["padded_tokens"] += B * T
        self.stats["batches"] += 1
        tokens = tokens.to(dev)
        if prefix_cache is None and single:
            # one question per row, right padding, plain causal attention: real tokens never see the padding
            h = self.model(tokens, hidden_only=True)
        else:
            positions = torch.zeros((B, T), dtype=torch.long)
            mask = torch.zeros((B, 1, T, P + T), dtype=torch.bool)
            mask[:, :, :, :P] = True
            for i, b in enumerate(batch):
                end = 0
                for r, off in zip(b, offsets[i]):
                    n = len(r.tokens)
                    positions[i, off: off + n] = torch.tensor(r.positions)
                    seg = torch.tensor(r.segment)
                    idx = torch.arange(n)
                    causal = idx[None, :] <= idx[:, None]
                    # j sees i when i <= j and (i is context, or i is in j's own continuation)
                    allowed = causal & ((seg[None, :] == -1) | (seg[None, :] == seg[:, None]))
                    mask[i, 0, off: off + n, P + off: P + off + n] = allowed
                    end = off + n
                # padding attends to itself (an all-False row would make NaNs), at harmless positions
                ar = torch.arange(end, T)
                mask[i, 0, ar, P + ar] = True
                positions[i, end:] = P + torch.arange(T - end)
            positions, mask = positions.to(dev), mask.to(dev)
            cache = prefix_cache.expand(B, P + T) if prefix_cache is not None else None
            h = self.model(tokens, positions=positions, mask=mask, cache=cache, hidden_only=True)
        # Project onto the vocabulary only where a next-token distribution is needed.
        want: list[tuple[int, int]] = []
        for i, b in enumerate(batch):
            for r, off in zip(b, offsets[i]):
                want.append((i, off + r.ctx_len - 1))
                want.extend((i, off + j) for (j, _, _) in r.targets)
        uniq = sorted(set(want))
        where = {bj: k for k, bj in enumerate(uniq)}
        rows_b = torch.tensor([b for b, _ in uniq], device=dev)
        rows_j = torch.tensor([j for _, j in uniq], device=dev)
        logprobs = torch.log_softmax(self.model.logits(h[rows_b, rows_j]).float(), dim=-1)
        argmax = logprobs.argmax(dim=-1).tolist()
        self.stats["logit_rows"] += len(uniq)
        out: list[ScoreResult] = []
        for i, b in enumerate(batch):
            for r, off in zip(b, offsets[i]):
                req = requests[r.index]
                n_c = len(req.continuations)
                sums = [0.0] * n_c
                greedy = [True] * n_c
                if r.targets:
                    sel = [where[(i, off + j)] for (j, _, _) in r.targets]
                    lp = logprobs[torch.tensor(sel, device=dev), torch.tensor([t for (_, t, _) in r.targets], device=dev)].tolist()
                    for (j, t, c), v, k in zip(r.targets, lp, sel):
                        sums[c] += v
                        if argmax[k] != t:
                            greedy[c] = False
                last = where[(i, off + r.ctx_len - 1)]
                cand = (logprobs[last, torch.tensor(req.candidates, dtype=torch.long, device=dev)].tolist()
                        if req.candidates else [])
                out.append(ScoreResult(sums, greedy, cand, argmax[last] if req.candidates else None))
        return out
