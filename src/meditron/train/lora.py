"""LoRA for single-device fine-tunes, through peft's model-agnostic `inject_adapter_in_model`."""

from __future__ import annotations

from typing import Any

from torch import nn

from meditron.errors import ConfigError, ModelError
from meditron.model.config import ModelConfig
from meditron.model.llama import Transformer


def inject_lora(model: nn.Module, settings: dict[str, Any]) -> nn.Module:
    """Add LoRA adapters to the named linear layers; only the adapters stay trainable."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError:
        raise ConfigError("lora.enabled needs peft: pip install peft") from None
    cfg = LoraConfig(
        r=settings["r"], lora_alpha=settings["alpha"], lora_dropout=settings["dropout"],
        target_modules=list(settings["targets"]), bias="none",
    )
    inject_adapter_in_model(cfg, model)
    for name, p in model.named_parameters():
        p.requires_grad = "lora_" in name
    return model


def merge_lora(model: nn.Module, config: ModelConfig) -> Transformer:
    """A plain Transformer with the adapters folded into the base weights (for export)."""
    for module in model.modules():
        if hasattr(module, "base_layer") and hasattr(module, "merge"):
            module.merge()
    state = {}
    for name, tensor in model.state_dict().items():
        if "lora_" in name:
            continue
        state[name.replace(".base_layer.", ".")] = tensor
    plain = Transformer(config).to(next(iter(state.values())).dtype)
    if config.tie_embeddings and "tok_embeddings.weight" in state:
        state.setdefault("output.weight", state["tok_embeddings.weight"])
    _check_names(plain, state)
    plain.load_state_dict(state, strict=True)
    if config.tie_embeddings:
        plain.output.weight = plain.tok_embeddings.weight
    return plain


def _check_names(plain: nn.Module, state: dict) -> None:
    """Every merged tensor must land on a parameter and every parameter must get one.

    A lenient load would skip a misnamed tensor and export that layer's random init; this names
    the first mismatch in a user-facing error instead of torch's list of every key.
    """
    expected = set(plain.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        first = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
        raise ModelError(f"merging LoRA: {len(missing)} parameters missing and {len(unexpected)} unexpected "
                         f"(first: {first}); the adapters do not fit this model config")
