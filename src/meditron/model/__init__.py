"""The model and its weights: knows nothing of data, training or parallelism."""

from meditron.model.config import ModelConfig, preset
from meditron.model.llama import Transformer

__all__ = ["ModelConfig", "Transformer", "preset"]
