"""Model architecture configs: one dataclass for every Llama-family decoder, plus named presets.

The field names are ours; `from_hf` / `to_hf` translate to and from a Hugging Face `config.json`
so that a folder written by meditron loads in `transformers` and vice versa.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from meditron.errors import ModelError


@dataclass
class ModelConfig:
    """Shape and numerics of a Llama-family decoder (RMSNorm, RoPE, GQA, SwiGLU)."""

    vocab_size: int = 32000
    dim: int = 4096
    n_layers: int = 32
    n_heads: int = 32
    n_kv_heads: int | None = None  # None = multi-head attention (n_kv_heads == n_heads)
    ffn_dim: int = 11008
    head_dim: int | None = None  # None = dim // n_heads
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None  # {"rope_type": "llama3"|"linear", "factor": ..., ...}
    max_seq_len: int = 4096
    tie_embeddings: bool = False
    qkv_bias: bool = False
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    pad_token_id: int | None = None
    architecture: str = "llama"  # the HF model_type written on export: llama | mistral | qwen2

    def __post_init__(self) -> None:
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if self.head_dim is None:
            if self.dim % self.n_heads:
                raise ModelError(f"dim {self.dim} is not divisible by n_heads {self.n_heads}; set head_dim")
            self.head_dim = self.dim // self.n_heads
        if self.n_heads % self.n_kv_heads:
            raise ModelError(f"n_heads {self.n_heads} is not a multiple of n_kv_heads {self.n_kv_heads}")

    @property
    def n_params(self) -> int:
        """Parameter count, counting tied embeddings once."""
        hd, d = self.head_dim, self.dim
        attn = d * hd * (self.n_heads * 2 + self.n_kv_heads * 2)
        if self.qkv_bias:
            attn += hd * (self.n_heads + 2 * self.n_kv_heads)
        layer = attn + 3 * d * self.ffn_dim + 2 * d
        emb = self.vocab_size * d * (1 if self.tie_embeddings else 2)
        return self.n_layers * layer + emb + d

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    # -- Hugging Face config.json -------------------------------------------------------------
    @classmethod
    def from_hf(cls, hf: dict[str, Any]) -> "ModelConfig":
        """Build from a Hugging Face `config.json` dict (llama, mistral, qwen2 model types)."""
        model_type = hf.get("model_type", "llama")
        if model_type not in ("llama", "mistral", "qwen2"):
            raise ModelError(
                f"model_type {model_type!r} is not a Llama-family decoder; supported: llama, mistral, qwen2"
            )
        try:
            n_heads = hf["num_attention_heads"]
            return cls(
                vocab_size=hf["vocab_size"],
                dim=hf["hidden_size"],
                n_layers=hf["num_hidden_layers"],
                n_heads=n_heads,
                n_kv_heads=hf.get("num_key_value_heads") or n_heads,
                ffn_dim=hf["intermediate_size"],
                head_dim=hf.get("head_dim"),
                norm_eps=hf.get("rms_norm_eps", 1e-5),
                rope_theta=_rope_theta(hf),
                rope_scaling=_rope_scaling(hf),
                max_seq_len=hf.get("max_position_embeddings", 4096),
                tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
                qkv_bias=bool(hf.get("attention_bias", model_type == "qwen2")),
                bos_token_id=hf.get("bos_token_id"),
                eos_token_id=hf.get("eos_token_id"),
                pad_token_id=hf.get("pad_token_id"),
                architecture=model_type,
            )
        except KeyError as e:
            raise ModelError(f"config.json lacks the key {e.args[0]!r}; is it a causal LM config?") from None

    def to_hf(self, dtype: str = "float32") -> dict[str, Any]:
        """A `config.json` dict that `transformers.AutoConfig` reads."""
        arch = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}
        hf: dict[str, Any] = {
            "architectures": [arch[self.architecture]],
            "model_type": self.architecture,
            "vocab_size": self.vocab_size,
            "hidden_size": self.dim,
            "intermediate_size": self.ffn_dim,
            "num_hidden_layers": self.n_layers,
            "num_attention_heads": self.n_heads,
            "num_key_value_heads": self.n_kv_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "max_position_embeddings": self.max_seq_len,
            "rms_norm_eps": self.norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": self.rope_scaling,
            "tie_word_embeddings": self.tie_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
            "torch_dtype": dtype,
            "use_cache": True,
        }
        if self.architecture == "llama":
            hf["attention_bias"] = self.qkv_bias
            hf["mlp_bias"] = False
        elif self.architecture == "qwen2" and not self.qkv_bias:
            raise ModelError("a qwen2 export needs qkv_bias=True")
        elif self.architecture == "mistral" and self.qkv_bias:
            raise ModelError("mistral has no QKV bias; export it as llama")
        return hf


def _rope_theta(hf: dict[str, Any]) -> float:
    params = hf.get("rope_parameters") or {}
    return float(hf.get("rope_theta") or params.get("rope_theta") or 10000.0)


def _rope_scaling(hf: dict[str, Any]) -> dict[str, Any] | None:
    scaling = hf.get("rope_scaling") or hf.get("rope_parameters")
    if not scaling:
        return None
    scaling = {k: v for k, v in scaling.items() if k != "rope_theta"}
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind in (None, "default"):
        return None
    if kind not in ("llama3", "linear"):
        raise ModelError(f"rope scaling type {kind!r} is not supported; supported: llama3, linear")
    scaling["rope_type"] = kind
    scaling.pop("type", None)
    return scaling


_LLAMA2_7B = dict(vocab_size=32000, dim=4096, n_layers=32, n_heads=32, ffn_dim=11008, max_seq_len=4096)
_LLAMA2_70B = dict(
    vocab_size=32000, dim=8192, n_layers=80, n_heads=64, n_kv_heads=8, ffn_dim=28672, max_seq_len=4096
)

PRESETS: dict[str, dict[str, Any]] = {
    "smollm2-135m": dict(
        vocab_size=49152, dim=576, n_layers=30, n_heads=9, n_kv_heads=3, ffn_dim=1536,
        rope_theta=100000.0, max_seq_len=8192, tie_embeddings=True, bos_token_id=1, eos_token_id=2,
        pad_token_id=2,
    ),
    "llama-2-7b": _LLAMA2_7B,
    "llama-2-70b": _LLAMA2_70B,
    # MEDITRON: Llama-2 with 17 extra tokens (Megatron's 5 + 12 S2ORC tags), MEDITRON.md §3.4.
    "meditron-7b": {**_LLAMA2_7B, "vocab_size": 32017, "max_seq_len": 2048},
    "meditron-70b": {**_LLAMA2_70B, "vocab_size": 32017},
    "llama-3-8b": dict(
        vocab_size=128256, dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, ffn_dim=14336,
        rope_theta=500000.0, max_seq_len=8192, bos_token_id=128000, eos_token_id=128001,
    ),
    "llama-3.2-1b": dict(
        vocab_size=128256, dim=2048, n_layers=16, n_heads=32, n_kv_heads=8, ffn_dim=8192,
        rope_theta=500000.0, max_seq_len=8192, tie_embeddings=True, bos_token_id=128000, eos_token_id=128001,
        rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
    ),
    "mistral-7b": dict(
        vocab_size=32000, dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, ffn_dim=14336,
        max_seq_len=32768, architecture="mistral",
    ),
    # Tiny random models for tests and smoke runs.
    "tiny": dict(vocab_size=512, dim=64, n_layers=2, n_heads=4, ffn_dim=128, max_seq_len=256),
    "tiny-gqa": dict(vocab_size=512, dim=64, n_layers=4, n_heads=4, n_kv_heads=2, ffn_dim=160, max_seq_len=256),
}


def preset(name: str, **overrides: Any) -> ModelConfig:
    """The named architecture, e.g. `preset("llama-2-70b")`; overrides replace fields."""
    if name not in PRESETS:
        raise ModelError(f"unknown model config {name!r}; known: {', '.join(sorted(PRESETS))}")
    return ModelConfig(**{**PRESETS[name], **overrides})


def default_presets() -> list[str]:
    return sorted(PRESETS)


__all__ = ["ModelConfig", "PRESETS", "preset", "default_presets"]
