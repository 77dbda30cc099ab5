"""Any transformers causal LM (CPU or GPU): the straightforward way, for cross-checks.

Continuations are scored from full-sequence logits, one row per (context, continuation)
(one row per context when every continuation is a single token), without prefix reuse.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from meditron.errors import ModelError
from meditron.eval.backends.base import Backend, GenParams, default_device_dtype
from meditron.infer.scoring import ScoreRequest, ScoreResult


def _stop(text: str, stops: Sequence[str]) -> str:
    cut = min((text.find(s) for s in stops if s and s in text), default=-1)
    return text[:cut] if cut >= 0 else text


class HFBackend(Backend):
    name = "hf"

    def __init__(self, model="smollm2-135m", device: str | None = None, dtype: str | None = None, batch_size: int = 8,
                 loaded=None):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device, dtype = default_device_dtype(device, dtype)
        torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
        if loaded is not None:
            self.model, self.tok = loaded
        else:
            from pathlib import Path

            ref = str(model)
            if not Path(ref).is_dir():
                from meditron.model.hub import resolve

                ref = str(resolve(ref))
            try:
                self.tok = AutoTokenizer.from_pretrained(ref)
                self.model = AutoModelForCausalLM.from_pretrained(ref, dtype=torch_dtype).to(self.device)
            except OSError as e:
                raise ModelError(f"transformers cannot load {ref}: {e}".splitlines()[0]) from None
        self.model.eval()
        self.model_name = str(model)
        self.batch_size = batch_size
        probe = self.tok("a")["input_ids"]
        self.bos_id = self.tok.bos_token_id
        self.add_bos = bool(probe) and probe[0] == self.tok.bos_token_id and self.tok.bos_token_id is not None
        self.pad_id = self.tok.pad_token_id if self.tok.pad_token_id is not None else (self.tok.eos_token_id or 0)

    def encode(self, text: str) -> list[int]:
        return self.tok(text)["input_ids"]

    def chat_template(self):
        if not getattr(self.tok, "chat_template", None):
            return None
        return lambda m: self.tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True)

    @torch.inference_mode()
    def _score(self, requests: list[ScoreRequest], prefix, progress) -> list[ScoreResult]:
        rows: list[tuple[int, int, list[int], int]] = []  # (request, continuation or -1, tokens, ctx_len)
        for i, r in enumerate(requests):
            if all(len(c) == 1 for c in r.continuations):
                rows.append((i, -1, list(r.context), len(r.context)))
            else:
                rows.extend((i, c, (r.context + cont)[:-1], len(r.context)) for c, cont in enumerate(r.continuations))
        order = sorted(range(len(rows)), key=lambda k: -len(rows[k][2]))
        results = [ScoreResult([0.0] * len(r.continuations), [True] * len(r.continuations), [], None) for r in requests]
        done = set()
        for s in range(0, len(order), self.batch_size):
            batch = [rows[k] for k in order[s:s + self.batch_size]]
            T = max(len(b[2]) for b in batch)
            ids = torch.full((len(batch), T), self.pad_id, dtype=torch.long)
            att = torch.zeros((len(batch), T), dtype=torch.long)
            for b, (_, _, toks, _) in enumerate(batch):
                ids[b, : len(toks)] = torch.tensor(toks)
                att[b, : len(toks)] = 1
            logits = self.model(input_ids=ids.to(self.device), attention_mask=att.to(self.device)).logits
            lp = torch.log_softmax(logits.float(), dim=-1)
            for b, (i, c, toks, n_ctx) in enumerate(batch):
                req, res = requests[i], results[i]
                last = lp[b, n_ctx - 1]
                if c == -1:
                    for k, cont in enumerate(req.continuations):
                        res.continuation_logprobs[k] = last[cont[0]].item()
                        res.continuation_greedy[k] = int(last.argmax()) == cont[0]
                else:
                    cont = req.continuations[c]
                    pos = torch.arange(n_ctx - 1, n_ctx - 1 + len(cont))
                    tgt = torch.tensor(cont)
                    res.continuation_logprobs[c] = lp[b, pos, tgt].sum().item()
                    res.continuation_greedy[c] = bool((lp[b, pos].argmax(-1) == tgt).all())
                if req.candidates and not res.candidate_logprobs:
                    res.candidate_logprobs = last[torch.tensor(req.candidates)].tolist()
                    res.top_token = int(last.argmax())
                if progress and i not in done and (c == -1 or c == len(req.continuations) - 1):
                    done.add(i)
                    progress(1)
        return results

    @torch.inference_mode()
    def generate(self, prompts: Sequence[str], params: GenParams, seeds: Sequence[int] | None = None,
                 progress: Callable[[int], None] | None = None) -> list[list[str]]:
        from transformers import LogitsProcessor, LogitsProcessorList

        class FrequencyPenalty(LogitsProcessor):
            def __init__(self, penalty: float, start: int):
                self.penalty, self.start = penalty, start

            def __call__(self, input_ids, scores):
                gen = input_ids[:, self.start:]
                if gen.shape[1] and self.penalty:
                    counts = torch.zeros_like(scores).scatter_add_(1, gen, torch.ones_like(gen, dtype=scores.dtype))
                    scores = scores - self.penalty * counts
                return scores

        self.tok.padding_side = "left"
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        out: list[list[str]] = []
        sampled = params.temperature > 0
        step = 1 if sampled else self.batch_size
        for s in range(0, len(prompts), step):
            chunk = list(prompts[s:s + step])
            if sampled:
                chunk = chunk * params.n
                if seeds is not None:
                    torch.manual_seed(seeds[s])
            enc = self.tok(chunk, return_tensors="pt", padding=True).to(self.device)
            T = enc["input_ids"].shape[1]
            kw = dict(do_sample=True, temperature=params.temperature, top_k=0, top_p=1.0) if sampled else dict(do_sample=False)
            gen = self.model.generate(**enc, max_new_tokens=params.max_new_tokens, pad_token_id=self.pad_id,
                                      logits_processor=LogitsProcessorList([FrequencyPenalty(params.frequency_penalty, T)]),
                                      **kw)
            texts = [_stop(self.tok.decode(g[T:], skip_special_tokens=True), params.stop) for g in gen]
            out.extend([texts] if sampled else [[t] for t in texts])
            if progress:
                progress(len(prompts[s:s + step]))
        return out
