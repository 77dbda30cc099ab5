"""Weights in and out: Hugging Face folders (safetensors, single or sharded) and GGUF files.

Safetensors only — nothing here unpickles. Names are mapped between our torchtitan-style
parameter names and Hugging Face Llama names; GGUF tensors are dequantised with the `gguf`
package and the Q/K rows are un-permuted (llama.cpp stores them in the interleaved RoPE layout).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from meditron.errors import ModelError
from meditron.model.config import ModelConfig
from meditron.model.llama import Transformer

DTYPES = {
    "fp32": torch.float32, "float32": torch.float32,
    "fp16": torch.float16, "float16": torch.float16,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
}
DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}

_LAYER_MAP = {  # ours (inside layers.N.) -> Hugging Face (inside model.layers.N.)
    "attention.wq": "self_attn.q_proj",
    "attention.wk": "self_attn.k_proj",
    "attention.wv": "self_attn.v_proj",
    "attention.wo": "self_attn.o_proj",
    "feed_forward.w1": "mlp.gate_proj",
    "feed_forward.w2": "mlp.down_proj",
    "feed_forward.w3": "mlp.up_proj",
    "attention_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_TOP_MAP = {"tok_embeddings": "model.embed_tokens", "norm": "model.norm", "output": "lm_head"}
_GGUF_LAYER_MAP = {
    "attn_q": "attention.wq", "attn_k": "attention.wk", "attn_v": "attention.wv",
    "attn_output": "attention.wo", "ffn_gate": "feed_forward.w1", "ffn_down": "feed_forward.w2",
    "ffn_up": "feed_forward.w3", "attn_norm": "attention_norm", "ffn_norm": "ffn_norm",
}
_GGUF_TOP_MAP = {"token_embd": "tok_embeddings", "output_norm": "norm", "output": "output"}
SUPPORTED_GGUF_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1",
                        "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")


def parse_dtype(name: str | torch.dtype | None) -> torch.dtype | None:
    if name is None or isinstance(name, torch.dtype):
        return name
    if name not in DTYPES:
        raise ModelError(f"unknown dtype {name!r}; use one of fp32, fp16, bf16")
    return DTYPES[name]


# -- name maps ---------------------------------------------------------------------------------
def to_hf_name(name: str) -> str:
    """`layers.3.attention.wq.weight` -> `model.layers.3.self_attn.q_proj.weight`."""
    m = re.fullmatch(r"layers\.(\d+)\.(.+)\.(weight|bias)", name)
    if m and m.group(2) in _LAYER_MAP:
        return f"model.layers.{m.group(1)}.{_LAYER_MAP[m.group(2)]}.{m.group(3)}"
    head, _, leaf = name.rpartition(".")
    if head in _TOP_MAP:
        return f"{_TOP_MAP[head]}.{leaf}"
    raise ModelError(f"parameter {name!r} has no Hugging Face name")


def from_hf_name(name: str) -> str | None:
    """The inverse of `to_hf_name`; None for tensors we do not use (e.g. rotary inv_freq)."""
    m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)\.(weight|bias)", name)
    if m:
        inverse = {v: k for k, v in _LAYER_MAP.items()}
        if m.group(2) in inverse:
            return f"layers.{m.group(1)}.{inverse[m.group(2)]}.{m.group(3)}"
        return None
    head, _, leaf = name.rpartition(".")
    inverse_top = {v: k for k, v in _TOP_MAP.items()}
    return f"{inverse_top[head]}.{leaf}" if head in inverse_top else None


def hf_state_dict(state_dict: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """Our state dict under Hugging Face names (the tied output matrix is written once)."""
    out = {}
    for name, tensor in state_dict.items():
        if config.tie_embeddings and name == "output.weight":
            continue
        out[to_hf_name(name)] = tensor
    return out


def from_hf_state_dict(hf: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """A Hugging Face state dict under our names (unused tensors dropped)."""
    out = {}
    for name, tensor in hf.items():
        ours = from_hf_name(name)
        if ours is not None:
            out[ours] = tensor
    if config.tie_embeddings:
        out.pop("output.weight", None)
    return out


# -- building a model from a state dict ----------------------------------------------------------
def build_model(
    config: ModelConfig, state: dict[str, torch.Tensor], source: str, device: str | torch.device = "cpu",
) -> Transformer:
    """A model holding exactly `state` (our names); shape and completeness are checked."""
    with torch.device("meta"):
        model = Transformer(config)
    expected = {n: p for n, p in model.state_dict().items()}
    if config.tie_embeddings:
        expected.pop("output.weight", None)
    missing = sorted(set(expected) - set(state))
    if missing:
        raise ModelError(
            f"{source} lacks {len(missing)} tensors (first: {missing[0]}); the files are partial or the config is wrong"
        )
    for name, param in expected.items():
        if tuple(state[name].shape) != tuple(param.shape):
            raise ModelError(
                f"{source}: tensor {name} has shape {tuple(state[name].shape)} but the config expects "
                f"{tuple(param.shape)}; config.json does not match the weights"
            )
    state = {n: t.to(device) for n, t in state.items() if n in expected}
    model.load_state_dict(state, strict=False, assign=True)
    if config.tie_embeddings:
        model.output.weight = model.tok_embeddings.weight
    model.reset_rope(torch.device(device))
    return model.eval()


# -- Hugging Face folders ------------------------------------------------------------------------
def read_hf_config(folder: Path) -> ModelConfig:
    path = folder / "config.json"
    if not path.is_file():
        raise ModelError(f"{folder} has no config.json; is it a Hugging Face model folder?")
    try:
        return ModelConfig.from_hf(json.loads(path.read_text()))
    except json.JSONDecodeError as e:
        raise ModelError(f"{path} is not valid JSON ({e.msg}); re-download or re-export the model") from None


def safetensors_files(folder: Path) -> list[Path]:
    """The weight files of a folder, from index.json when sharded; refuses pickles."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text()).get("weight_map", {})
        files = sorted({folder / f for f in weight_map.values()})
        absent = [f.name for f in files if not f.is_file()]
        if absent:
            raise ModelError(f"{folder}: shard {absent[0]} listed in the index is missing; the download is partial")
        return files
    single = folder / "model.safetensors"
    if single.is_file():
        return [single]
    if any(folder.glob("*.bin")) or any(folder.glob("*.pt")):
        raise ModelError(
            f"{folder} holds only pickled weights (.bin/.pt), which meditron never loads; "
            "convert them to safetensors with transformers' save_pretrained(safe_serialization=True)"
        )
    raise ModelError(f"{folder} has no model.safetensors or model.safetensors.index.json")


def read_safetensors(files: Iterable[Path], dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    from safetensors import safe_open
    from safetensors import SafetensorError

    out = {}
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as handle:
                for name in handle.keys():
                    t = handle.get_tensor(name)
                    out[name] = t if dtype is None else t.to(dtype)
        except (SafetensorError, OSError) as e:
            raise ModelError(f"cannot read {f}: {e}; the file is truncated or not safetensors") from None
    return out


def load_hf_folder(folder: str | os.PathLike, dtype: torch.dtype | None = None, device="cpu") -> Transformer:
    """Load a Hugging Face Llama-family folder. dtype None keeps the stored dtype."""
    folder = Path(folder)
    config = read_hf_config(folder)
    hf = read_safetensors(safetensors_files(folder), dtype)
    return build_model(config, from_hf_state_dict(hf, config), str(folder), device)


def save_hf(
    model: Transformer,
    out_dir: str | os.PathLike,
    tokenizer: Any = None,
    dtype: torch.dtype | str | None = None,
    max_shard_bytes: int = 2 * 1024**3,
    protect: Iterable[str | os.PathLike] = (),
) -> Path:
    """Write a folder that `transformers.AutoModelForCausalLM.from_pretrained` loads.

    config.json, generation_config.json, safetensors (sharded with an index above
    `max_shard_bytes`) and the tokenizer files. Written to a temporary folder, then renamed over
    `out_dir`, which `check_hf_target` first vets against `protect` (the folders being read).
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    check_hf_target(out, protect)
    dtype = parse_dtype(dtype) or next(model.parameters()).dtype
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    state = hf_state_dict({n: _standalone(t.detach().to("cpu", dtype)) for n, t in model.state_dict().items()},
                          model.config)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += nbytes
    metadata = {"format": "pt"}
    if len(shards) == 1:
        save_file(shards[0], str(tmp / "model.safetensors"), metadata=metadata)
    else:
        weight_map = {}
        for i, shard in enumerate(shards, 1):
            fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, str(tmp / fname), metadata=metadata)
            weight_map.update({n: fname for n in shard})
        total = sum(t.numel() * t.element_size() for t in state.values())
        (tmp / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2)
        )
    cfg = model.config
    (tmp / "config.json").write_text(json.dumps(cfg.to_hf(DTYPE_NAMES[dtype]), indent=2))
    gen = {"bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id, "pad_token_id": cfg.pad_token_id}
    (tmp / "generation_config.json").write_text(json.dumps({k: v for k, v in gen.items() if v is not None}, indent=2))
    if tokenizer is not None:
        tokenizer.save(tmp)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


def check_hf_target(out: str | os.PathLike, protect: Iterable[str | os.PathLike] = ()) -> None:
    """Refuse an `out` whose replacement would destroy data; writing a model deletes `out` first.

    An empty or absent folder is fine, and so is a previous Hugging Face export (it has config.json).
    Anything else non-empty is refused, as is a folder that is, holds or lies inside one of the
    `protect` folders (e.g. `meditron export runs/x runs/x` would delete the checkpoint it reads).
    """
    out = Path(out)
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    target = out.resolve()
    for folder in protect:
        how = _overlap(target, Path(folder).resolve())
        if how:
            raise ModelError(f"refusing to write {out}: it {how} {folder}, which is being exported, and writing "
                             "deletes the output folder first; choose another folder")
    if not (out / "config.json").is_file():
        raise ModelError(f"refusing to replace {out}: it exists, is not empty and is not a Hugging Face model "
                         "folder (no config.json); choose a new or empty folder")


def _overlap(target: Path, src: Path) -> str:
    """How `target` overlaps `src` ("is", "holds", "is inside"), or "" when deleting it spares `src`."""
    if target == src:
        return "is"
    if target in src.parents:
        return "holds"
    return "is inside" if src in target.parents else ""


def _standalone(t: torch.Tensor) -> torch.Tensor:
    """A tensor owning exactly its storage (safetensors refuses views into shared storage)."""
    if t.is_contiguous() and t.untyped_storage().nbytes() == t.numel() * t.element_size():
        return t
    return t.clone(memory_format=torch.contiguous_format)


# -- GGUF ------------------------------------------------------------------------------------------
def _gguf_field(reader, key: str, default: Any = None) -> Any:
    field = reader.fields.get(key)
    if field is None:
        return default
    return field.contents()


def gguf_config(reader) -> ModelConfig:
    arch = _gguf_field(reader, "general.architecture")
    if arch not in ("llama", "mistral", "qwen2"):
        raise ModelError(f"GGUF architecture {arch!r} is not a Llama-family decoder; supported: llama, mistral, qwen2")
    names = {t.name for t in reader.tensors}

    def key(name, default=None):
        return _gguf_field(reader, f"{arch}.{name}", default)

    n_heads = key("attention.head_count")
    vocab = key("vocab_size") or len(reader.fields["tokenizer.ggml.tokens"].data)
    scaling = None
    if key("rope.scaling.type") == "linear":
        scaling = {"rope_type": "linear", "factor": key("rope.scaling.factor")}
    pad = _gguf_field(reader, "tokenizer.ggml.padding_token_id")
    return ModelConfig(
        vocab_size=int(vocab),
        dim=int(key("embedding_length")),
        n_layers=int(key("block_count")),
        n_heads=int(n_heads),
        n_kv_heads=int(key("attention.head_count_kv", n_heads)),
        ffn_dim=int(key("feed_forward_length")),
        head_dim=int(key("attention.key_length")) if key("attention.key_length") else None,
        norm_eps=float(key("attention.layer_norm_rms_epsilon", 1e-5)),
        rope_theta=float(key("rope.freq_base", 10000.0)),
        rope_scaling=scaling,
        max_seq_len=int(key("context_length", 4096)),
        tie_embeddings="output.weight" not in names,
        qkv_bias="blk.0.attn_q.bias" in names,
        bos_token_id=_gguf_field(reader, "tokenizer.ggml.bos_token_id"),
        eos_token_id=_gguf_field(reader, "tokenizer.ggml.eos_token_id"),
        pad_token_id=pad,
        architecture="qwen2" if arch == "qwen2" else "llama",
    )


def _unpermute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's Q/K row permutation (interleaved RoPE -> rotate-half)."""
    half = w.shape[0] // n_heads // 2
    return w.reshape(n_heads, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _gguf_name(name: str) -> str | None:
    m = re.fullmatch(r"blk\.(\d+)\.(\w+)\.(weight|bias)", name)
    if m:
        ours = _GGUF_LAYER_MAP.get(m.group(2))
        return f"layers.{m.group(1)}.{ours}.{m.group(3)}" if ours else None
    head, _, leaf = name.rpartition(".")
    return f"{_GGUF_TOP_MAP[head]}.{leaf}" if head in _GGUF_TOP_MAP else None


def load_gguf(path: str | os.PathLike, dtype: torch.dtype = torch.float32) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Config and dequantised state dict (our names) of a GGUF file."""
    import gguf
    from gguf import quants

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"GGUF file {path} does not exist")
    try:
        reader = gguf.GGUFReader(str(path))
    except (ValueError, OSError, struct.error) as e:
        raise ModelError(f"{path} is not a readable GGUF file ({e}); it may be truncated") from None
    config = gguf_config(reader)
    state = {}
    for t in reader.tensors:
        name = _gguf_name(t.name)
        if name is None:
            continue
        qtype = t.tensor_type.name
        if qtype not in SUPPORTED_GGUF_TYPES:
            raise ModelError(
                f"{path.name}: tensor {t.name} is stored as {qtype}, which meditron cannot dequantise; "
                f"supported: {', '.join(SUPPORTED_GGUF_TYPES)} — re-quantise with llama.cpp or use safetensors"
            )
        if qtype == "BF16":
            arr = torch.from_numpy(np.array(t.data).view(np.int16)).view(torch.bfloat16)
            arr = arr.reshape([int(d) for d in reversed(t.shape)]).float().numpy()
        else:
            arr = quants.dequantize(t.data, t.tensor_type)
        arr = np.array(arr, dtype=np.float32).reshape([int(d) for d in reversed(t.shape)])
        if t.name.endswith("attn_q.weight") or t.name.endswith("attn_q.bias"):
            arr = _unpermute(arr, config.n_heads)
        elif t.name.endswith("attn_k.weight") or t.name.endswith("attn_k.bias"):
            arr = _unpermute(arr, config.n_kv_heads)
        state[name] = torch.from_numpy(arr).to(dtype)
    return config, state


def load_gguf_model(path: str | os.PathLike, dtype: torch.dtype = torch.float32, device="cpu") -> Transformer:
    config, state = load_gguf(path, dtype)
    return build_model(config, state, str(path), device)


def resize_embeddings(model: Transformer, new_vocab: int) -> None:
    """Grow the embedding (and untied output) matrices; new rows are the mean of the old ones."""
    old = model.config.vocab_size
    if new_vocab == old:
        return
    if new_vocab < old:
        raise ModelError(f"cannot shrink the vocabulary from {old} to {new_vocab}")

    def grown(weight: torch.Tensor) -> torch.nn.Parameter:
        extra = weight.detach().mean(0, keepdim=True).expand(new_vocab - old, -1)
        return torch.nn.Parameter(torch.cat([weight.detach(), extra], 0))

    model.tok_embeddings.weight = grown(model.tok_embeddings.weight)
    model.tok_embeddings.num_embeddings = new_vocab
    if model.config.tie_embeddings:
        model.output.weight = model.tok_embeddings.weight
    else:
        model.output.weight = grown(model.output.weight)
    model.output.out_features = new_vocab
    model.config.vocab_size = new_vocab
