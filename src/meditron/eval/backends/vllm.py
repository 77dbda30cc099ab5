"""vLLM backend (GPU machines, when vllm is importable): generation, top-token and loglik via prompt_logprobs."""

from __future__ import annotations

import math
from typing import Callable, Sequence

from meditron.errors import ConfigError
from meditron.eval.backends.base import Backend, GenParams
from meditron.infer.scoring import ScoreRequest, ScoreResult


def available() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


class VLLMBackend(Backend):
    name = "vllm"

    def __init__(self, model="smollm2-135m", dtype: str | None = None, **kw):
        if not available():
            raise ConfigError("--backend vllm needs the vllm package (GPU machines): pip install vllm")
        from pathlib import Path

        from vllm import LLM

        ref = str(model)
        if not Path(ref).is_dir() and "/" not in ref:
            from meditron.model.hub import resolve

            ref = str(resolve(ref))
        self.llm = LLM(model=ref, dtype={"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}.get(dtype, "auto"),
                       enforce_eager=True, gpu_memory_utilization=kw.get("gpu_memory_utilization", 0.5))
        self.tok = self.llm.get_tokenizer()
        self.model_name = str(model)
        probe = self.tok("a")["input_ids"]
        self.bos_id = self.tok.bos_token_id
        self.add_bos = bool(probe) and probe[0] == self.bos_id and self.bos_id is not None

    def encode(self, text: str) -> list[int]:
        return self.tok(text)["input_ids"]

    def _score(self, requests: list[ScoreRequest], prefix, progress) -> list[ScoreResult]:
        from vllm import SamplingParams, TokensPrompt

        prompts, owners = [], []
        for i, r in enumerate(requests):
            if r.candidates or not r.continuations:
                prompts.append(TokensPrompt(prompt_token_ids=r.context))
                owners.append((i, -1))
            for c, cont in enumerate(r.continuations):
                prompts.append(TokensPrompt(prompt_token_ids=r.context + cont))
                owners.append((i, c))
        vocab = len(self.tok)
        sp_next = SamplingParams(max_tokens=1, temperature=0.0, logprobs=20)
        sp_cont = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=1)
        results = [ScoreResult([0.0] * len(r.continuations), [True] * len(r.continuations), [], None) for r in requests]
        nexts = [p for p, (i, c) in zip(prompts, owners) if c == -1]
        conts = [p for p, (i, c) in zip(prompts, owners) if c != -1]
        outs_n = self.llm.generate(nexts, sp_next, use_tqdm=False) if nexts else []
        outs_c = self.llm.generate(conts, sp_cont, use_tqdm=False) if conts else []
        it_n, it_c = iter(outs_n), iter(outs_c)
        for i, c in owners:
            r = requests[i]
            if c == -1:
                o = next(it_n)
                top = o.outputs[0].logprobs[0]  # {token_id: Logprob} for the top 20 (+ chosen)
                floor = min(v.logprob for v in top.values()) - math.log(vocab)
                results[i].candidate_logprobs = [top[t].logprob if t in top else floor for t in r.candidates]
                results[i].top_token = o.outputs[0].token_ids[0]
            else:
                o = next(it_c)
                cont = r.continuations[c]
                plp = o.prompt_logprobs[len(r.context):]
                results[i].continuation_logprobs[c] = sum(d[t].logprob for d, t in zip(plp, cont))
                results[i].continuation_greedy[c] = all(d[t].rank == 1 for d, t in zip(plp, cont))
        if progress:
            progress(len(requests))
        return results

    def generate(self, prompts: Sequence[str], params: GenParams, seeds: Sequence[int] | None = None,
                 progress: Callable[[int], None] | None = None) -> list[list[str]]:
        from vllm import SamplingParams

        sps = [SamplingParams(n=params.n, max_tokens=params.max_new_tokens, temperature=params.temperature,
                              frequency_penalty=params.frequency_penalty, stop=list(params.stop),
                              seed=(seeds[k] if seeds is not None else params.seed)) for k in range(len(prompts))]
        outs = self.llm.generate(list(prompts), sps, use_tqdm=False)
        if progress:
            progress(len(prompts))
        return [[c.text for c in o.outputs] for o in outs]
