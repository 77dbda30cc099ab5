"""The backend interface evaluation needs, and the text -> token logic all token backends share.

A backend answers three kinds of request (lm-evaluation-harness's request types, plus one):
- `loglik`: log-likelihood of each continuation after a context (acc / acc_norm);
- `top_token`: next-token log-prob of each answer label after a prompt (MEDITRON's "top-token");
- `generate`: text continuations (greedy, or sampled with a seed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

from meditron.errors import ConfigError
from meditron.infer.scoring import ScoreRequest, ScoreResult


@dataclass
class GenParams:
    max_new_tokens: int = 8
    temperature: float = 0.0
    frequency_penalty: float = 1.0
    stop: tuple[str, ...] = ("###",)
    seed: int | None = None
    n: int = 1


@dataclass
class OptionScores:
    logliks: list[float]  # summed log-prob per continuation
    n_tokens: list[int]
    greedy: list[bool]


class Backend:
    """Base class; token backends implement `encode`, `_score` and `generate`."""

    name = "base"
    add_bos: bool = False

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def chat_template(self) -> Callable[[list[dict[str, str]]], str] | None:
        return None

    def _score(self, requests: list[ScoreRequest], prefix: list[int] | None,
               progress: Callable[[int], None] | None) -> list[ScoreResult]:
        raise NotImplementedError

    def generate(self, prompts: Sequence[str], params: GenParams, seeds: Sequence[int] | None = None,
                 progress: Callable[[int], None] | None = None) -> list[list[str]]:
        """params.n texts per prompt; sampled prompts use their own seed from `seeds`."""
        raise NotImplementedError

    # -- shared --------------------------------------------------------------------------------------
    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """lm-evaluation-harness's split: trailing context spaces move to the continuation; the
        continuation is what the whole string adds after the context's own tokens."""
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        whole = self.encode(context + continuation)
        ctx = self.encode(context)
        return ctx, whole[len(ctx):]

    def label_token_ids(self, labels: Sequence[str]) -> list[list[int]]:
        """For each label, the first tokens of its spellings ("A", " A"; "yes", " yes", "Yes", " Yes")."""
        out: list[list[int]] = []
        seen: dict[int, str] = {}
        for lab in labels:
            spellings = [lab, " " + lab]
            if lab.isalpha() and len(lab) > 1:
                spellings += [lab.capitalize(), " " + lab.capitalize()]
            ids: list[int] = []
            for s in spellings:
                toks = self.encode(s)
                if self.add_bos and toks and len(toks) > 1:
                    toks = toks[1:] if toks[0] == getattr(self, "bos_id", None) else toks
                if toks and toks[0] not in ids:
                    ids.append(toks[0])
            for t in ids:
                if t in seen and seen[t] != lab:
                    raise ConfigError(f"answer labels {seen[t]!r} and {lab!r} start with the same token; "
                                      "use --mode loglik for this tokenizer")
                seen[t] = lab
            out.append(ids)
        return out

    def loglik(self, contexts: Sequence[str], choices: Sequence[Sequence[str]], prefix: list[int] | None = None,
               progress: Callable[[int], None] | None = None) -> list[OptionScores]:
        reqs = []
        for ctx, chs in zip(contexts, choices):
            pairs = [self.encode_pair(ctx, c) for c in chs]
            ctx_ids = pairs[0][0]
            reqs.append(ScoreRequest(ctx_ids, [p[1] for p in pairs]))
        res = self._score(reqs, prefix, progress)
        return [OptionScores(r.continuation_logprobs, [len(c) for c in q.continuations], r.continuation_greedy)
                for r, q in zip(res, reqs)]

    def top_token(self, prompts: Sequence[str], labels: Sequence[Sequence[str]], prefix: list[int] | None = None,
                  progress: Callable[[int], None] | None = None) -> list[list[float]]:
        """log P(label) at the next position, each label's spellings merged by logsumexp."""
        cache: dict[tuple[str, ...], list[list[int]]] = {}
        reqs, groups = [], []
        for p, labs in zip(prompts, labels):
            key = tuple(labs)
            if key not in cache:
                cache[key] = self.label_token_ids(labs)
            ids = cache[key]
            flat = [t for g in ids for t in g]
            reqs.append(ScoreRequest(self.encode(p), [], flat))
            groups.append(ids)
        res = self._score(reqs, prefix, progress)
        out = []
        for r, ids in zip(res, groups):
            lp = iter(r.candidate_logprobs)
            scores = []
            for g in ids:
                vals = [next(lp) for _ in g]
                m = max(vals)
                scores.append(m + math.log(sum(math.exp(v - m) for v in vals)))
            out.append(scores)
        return out


def default_device_dtype(device: str | None, dtype: str | None) -> tuple[str, str]:
    """Where the native and hf backends run, and in which precision, when not told: the GPU when there
    is one, in bf16 there and fp32 on a CPU. (The run's identity in eval/runner.py uses it too.)"""
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return device, dtype or ("bf16" if device.startswith("cuda") else "fp32")


def make_backend(name: str, model: str, device: str | None = None, dtype: str | None = None, **kw) -> Backend:
    if name == "native":
        from meditron.eval.backends.native import NativeBackend

        return NativeBackend(model, device=device, dtype=dtype, **kw)
    if name == "hf":
        from meditron.eval.backends.hf import HFBackend

        return HFBackend(model, device=device, dtype=dtype, **kw)
    if name == "vllm":
        from meditron.eval.backends.vllm import VLLMBackend

        return VLLMBackend(model, dtype=dtype, **kw)
    raise ConfigError(f"unknown --backend {name!r}; choose native, hf or vllm")
