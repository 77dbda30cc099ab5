"""Evaluation backends: native (meditron.infer), hf (transformers), vllm (GPU, optional)."""

from meditron.eval.backends.base import Backend, GenParams, OptionScores, make_backend

__all__ = ["Backend", "GenParams", "OptionScores", "make_backend"]
