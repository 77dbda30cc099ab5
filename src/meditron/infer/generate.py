"""Batched text generation with a static KV cache.

Prompts of different lengths are left-padded into one batch; each row gets its own RoPE
positions and a mask that hides its padding. The decode loop does a constant amount of Python
per step (no per-token loops over the vocabulary): penalties are tensor ops on a running
count of generated tokens, sampling is seeded, and stop strings are checked only on the
newly decoded tail of each unfinished row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch

from meditron.errors import ContextLengthError, MeditronError
from meditron.infer.cache import KVCache
from meditron.model.llama import Transformer, causal_mask
from meditron.model.tokenizer import Tokenizer


@dataclass
class SamplingParams:
    """Decoding settings. temperature 0 is greedy; top_k 0 and top_p 1 disable those filters.

    Penalties follow vLLM/OpenAI (what MEDITRON's evaluation used): they apply to tokens already
    generated, not to the prompt: logit -= frequency_penalty * count + presence_penalty * (count > 0).
    """

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: Sequence[str] = ()
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    stop_at_eos: bool = True

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise MeditronError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise MeditronError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise MeditronError(f"top_p must be in (0, 1], got {self.top_p}")


@dataclass
class Generation:
    text: str
    token_ids: list[int]
    logprobs: list[float] = field(default_factory=list)  # model log-prob of each generated token
    finish_reason: str = "length"  # "stop" (EOS or stop string) or "length"


def left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, valid) of shape (B, L): sequences right-aligned, `valid` False on padding."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    valid = torch.zeros((len(seqs), width), dtype=torch.bool)
    for i, s in enumerate(seqs):
        if s:
            ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
            valid[i, width - len(s):] = True
    return ids, valid


def prefill_mask(valid: torch.Tensor) -> torch.Tensor:
    """(B, 1, L, L) causal mask that hides padded keys; a pad query sees itself (no NaN rows)."""
    L = valid.shape[1]
    mask = causal_mask(L, L, valid.device)[None] & valid[:, None, :]
    mask |= torch.eye(L, dtype=torch.bool, device=valid.device)[None]
    return mask[:, None]


def sample(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> torch.Tensor:
    """Next token ids (B,) from (B, V) float logits that already include penalties."""
    if params.temperature == 0:
        return logits.argmax(-1)
    logits = logits / params.temperature
    if params.top_k > 0:
        kth = torch.topk(logits, min(params.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) > params.top_p  # keep the token that crosses top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


class Generator:
    """Generates text from a model and its tokenizer; `generate` for batches, `stream` for chat."""

    def __init__(self, model: Transformer, tokenizer: Tokenizer):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype

    def encode(self, prompts: Sequence[str] | Sequence[Sequence[int]]) -> list[list[int]]:
        if prompts and isinstance(prompts[0], str):
            return self.tokenizer.encode_batch(list(prompts))
        return [list(p) for p in prompts]

    @torch.inference_mode()
    def generate(self, prompts: Sequence[str] | Sequence[Sequence[int]], params: SamplingParams) -> list[Generation]:
        results: list[Generation] = []
        for step in self._decode(self.encode(prompts), params):
            results = step
        return results

    def stream(self, prompt: str, params: SamplingParams) -> Iterator[str]:
        """Yield the text of one prompt's completion piece by piece as it is decoded."""
        shown = 0
        with torch.inference_mode():
            for step in self._decode(self.encode([prompt]), params):
                text = step[0].text
                if len(text) > shown and not text.endswith("\ufffd"):
                    yield text[shown:]
                    shown = len(text)

    def _decode(self, seqs: list[list[int]], params: SamplingParams) -> Iterator[list[Generation]]:
        """Run prefill then decode; yield the generations after every step."""
        model, cfg = self.model, self.model.config
        if any(len(s) == 0 for s in seqs):
            raise MeditronError("empty prompt: give at least one token")
        longest = max(len(s) for s in seqs)
        total = longest + params.max_new_tokens
        if total > cfg.max_seq_len:
            raise ContextLengthError(
                f"prompt of {longest} tokens + {params.max_new_tokens} new tokens exceeds the model's context "
                f"of {cfg.max_seq_len}; shorten the prompt or lower --max-new-tokens"
            )
        B = len(seqs)
        pad = self.tokenizer.pad_id if self.tokenizer.pad_id is not None else 0
        ids, valid = left_pad(seqs, pad)
        ids, valid = ids.to(self.device), valid.to(self.device)
        positions = (valid.long().cumsum(-1) - 1).clamp(min=0)
        cache = KVCache(cfg, B, total, self.dtype, self.device)
        generator = None
        if params.seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(params.seed)
        stop_ids = set()
        if params.stop_at_eos and self.tokenizer.eos_id is not None:
            stop_ids.add(self.tokenizer.eos_id)
        penalise = params.frequency_penalty != 0 or params.presence_penalty != 0
        counts = torch.zeros(B, cfg.vocab_size, device=self.device) if penalise else None

        h = model(ids, positions=positions, mask=prefill_mask(valid), cache=cache, hidden_only=True)
        cache.advance(ids.shape[1])
        logits = model.logits(h[:, -1]).float()
        next_pos = positions[:, -1] + 1
        key_valid = torch.cat([valid, torch.ones(B, params.max_new_tokens, dtype=torch.bool, device=self.device)], 1)

        no_padding = bool(valid.all())
        out = [Generation("", []) for _ in range(B)]
        done = [False] * B
        for step in range(params.max_new_tokens):
            logprobs = logits.log_softmax(-1)
            if counts is not None:
                logits = logits - params.frequency_penalty * counts - params.presence_penalty * (counts > 0)
            token = sample(logits, params, generator)
            token_lp = logprobs.gather(-1, token[:, None]).squeeze(-1).tolist()
            token_list = token.tolist()
            for i in range(B):
                if done[i]:
                    continue
                self._append(out[i], token_list[i], token_lp[i], stop_ids, params)
                done[i] = out[i].finish_reason == "stop"
            yield out
            if all(done) or step == params.max_new_tokens - 1:
                break
            if counts is not None:
                counts.scatter_add_(1, token[:, None], torch.ones(B, 1, device=self.device))
            end = cache.length + 1
            mask = None if no_padding else key_valid[:, None, None, :end]  # one query needs no causal mask
            h = model(token[:, None], positions=next_pos[:, None], mask=mask, cache=cache, hidden_only=True)
            cache.advance(1)
            next_pos = next_pos + 1
            logits = model.logits(h[:, -1]).float()

    def _append(self, gen: Generation, token: int, logprob: float, stop_ids: set[int], params: SamplingParams) -> None:
        """Add one token to a row; detect EOS and stop strings (which are cut from the text)."""
        if token in stop_ids:
            gen.finish_reason = "stop"
            return
        gen.token_ids.append(token)
        gen.logprobs.append(logprob)
        gen.text = self.tokenizer.decode(gen.token_ids)
        for s in params.stop:
            # Only the tail can contain a stop string that was not there one token ago.
            cut = gen.text.find(s, max(0, len(gen.text) - len(s) - 32))
            if cut >= 0:
                gen.text = gen.text[:cut]
                gen.finish_reason = "stop"
                return
