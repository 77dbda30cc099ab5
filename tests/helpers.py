"""Small shared test utilities (not fixtures): tiny random models and their transformers twins."""

from __future__ import annotations

import torch

from meditron.model.config import ModelConfig, preset
from meditron.model.llama import Transformer


def tiny_model(name: str = "tiny-gqa", seed: int = 0, **overrides) -> Transformer:
    config = preset(name, **overrides)
    model = Transformer(config)
    model.init_weights(seed)
    return model.eval()


def hf_twin(model: Transformer, tmp_path):
    """The same weights as a transformers model, through a folder written by meditron."""
    import transformers

    from meditron.model.weights import save_hf

    folder = save_hf(model, tmp_path / "hf_twin")
    return transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


def random_tokens(config: ModelConfig, batch: int, length: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, config.vocab_size, (batch, length), generator=torch.Generator().manual_seed(seed))
