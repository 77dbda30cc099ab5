"""The default backend: meditron's own model and inference engine (prefix KV reuse, no wasted LM head)."""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from meditron.eval.backends.base import Backend, GenParams, default_device_dtype
from meditron.infer.generate import Generator, SamplingParams
from meditron.infer.scoring import LogProbScorer, ScoreRequest, ScoreResult
from meditron.model.hub import load_model
from meditron.model.weights import parse_dtype


class NativeBackend(Backend):
    name = "native"

    def __init__(self, model="smollm2-135m", device: str | None = None, dtype: str | None = None,
                 max_batch_tokens: int = 4096, gen_batch: int = 16, loaded=None):
        device, dtype = default_device_dtype(device, dtype)
        torch_dtype = parse_dtype(dtype)
        if loaded is not None:
            self.model, self.tok = loaded
        else:
            self.model, self.tok = load_model(model, dtype=torch_dtype, device=device)
        self.model.eval()
        self.model_name = str(model)
        self.add_bos = self.tok.add_bos
        self.bos_id = self.tok.bos_id
        self.scorer = LogProbScorer(self.model, max_batch_tokens=max_batch_tokens)
        self.generator = Generator(self.model, self.tok)
        self.gen_batch = gen_batch

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text)

    def chat_template(self):
        if not self.tok.chat_template:
            return None
        return lambda messages: self.tok.apply_chat_template(messages, add_generation_prompt=True)

    def _score(self, requests: list[ScoreRequest], prefix, progress) -> list[ScoreResult]:
        return self.scorer.score(requests, prefix=prefix, progress=progress)

    def generate(self, prompts: Sequence[str], params: GenParams, seeds: Sequence[int] | None = None,
                 progress: Callable[[int], None] | None = None) -> list[list[str]]:
        stop = tuple(s for s in params.stop if s)
        out: list[list[str]] = []
        if params.n == 1 and params.temperature == 0:
            sp = SamplingParams(max_new_tokens=params.max_new_tokens, temperature=0.0,
                                frequency_penalty=params.frequency_penalty, stop=stop, seed=params.seed)
            for i in range(0, len(prompts), self.gen_batch):
                chunk = list(prompts[i:i + self.gen_batch])
                out.extend([[g.text] for g in self.generator.generate(chunk, sp)])
                if progress:
                    progress(len(chunk))
            return out
        # sampled: the n samples of one prompt form one batch with a per-prompt seed, so a
        # prompt's samples do not depend on which other prompts run with it (resumable)
        for k, p in enumerate(prompts):
            seed = seeds[k] if seeds is not None else params.seed
            sp = SamplingParams(max_new_tokens=params.max_new_tokens, temperature=params.temperature,
                                frequency_penalty=params.frequency_penalty, stop=stop, seed=seed)
            out.append([g.text for g in self.generator.generate([p] * params.n, sp)])
            if progress:
                progress(1)
        return out
