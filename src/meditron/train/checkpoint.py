"""Checkpoints with torch.distributed.checkpoint: sharded, reshardable, atomic, last N kept; export to HF.

Layout of a run directory:

    OUT/checkpoints/step_00000500/   DCP shards (model + optimizer moments, plain parameter names),
                                     train_state.json (step, data position, counters), meta.json
                                     (model config, run config, LoRA settings)
    OUT/tokenizer/                   the tokenizer the run used (copied into exports)

Each save goes to `step_NNNNNNNN.tmp` and is renamed only once every rank has written, so a crash never
leaves a checkpoint that looks complete. Tensors only go through DCP; everything else is JSON.
The optimizer's hyperparameters are not stored (the config and the LR schedule set them), so no
pickled objects are written or read.
"""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from meditron.errors import MeditronError

STEP_DIR = re.compile(r"step_(\d+)")


def _barrier(distributed: bool) -> None:
    if distributed:
        dist.barrier()


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under `root`, oldest first."""
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = STEP_DIR.fullmatch(p.name)
        if m and p.is_dir() and (p / "train_state.json").is_file():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder, or the latest one of a run folder (or of its checkpoints/)."""
    p = Path(path)
    if (p / "train_state.json").is_file():
        return p
    for root in (p / "checkpoints", p):
        found = list_checkpoints(root)
        if found:
            return found[-1]
    raise MeditronError(f"no complete checkpoint in {p}; pass a run folder or a checkpoints/step_NNNNNNNN folder")


class CheckpointManager:
    def __init__(self, out: Path, rank: int, distributed: bool, keep: int):
        self.root = out / "checkpoints"
        self.rank, self.distributed, self.keep = rank, distributed, keep

    def latest(self) -> Path | None:
        found = list_checkpoints(self.root)
        return found[-1] if found else None

    def save(self, step: int, model: nn.Module, optimizer, train_state: dict[str, Any], meta: dict[str, Any]) -> Path:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

        final = self.root / f"step_{step:08d}"
        tmp = self.root / f"step_{step:08d}.tmp"
        if self.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        _barrier(self.distributed)
        state = {"model": get_model_state_dict(model)}
        if optimizer is not None:
            state["optim"] = get_optimizer_state_dict(model, optimizer)["state"]
        with warnings.catch_warnings():  # single process: DCP warns that it runs without a process group
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.save(state, checkpoint_id=str(tmp))
        _barrier(self.distributed)
        if self.rank == 0:
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
            (tmp / "train_state.json").write_text(json.dumps({**train_state, "step": step}, indent=2))
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
            for old in list_checkpoints(self.root)[: -self.keep]:  # keep >= 1 (config check)
                shutil.rmtree(old, ignore_errors=True)
            for stale in self.root.glob("step_*.tmp"):
                shutil.rmtree(stale, ignore_errors=True)
        _barrier(self.distributed)
        return final

    def load(self, path: Path, model: nn.Module, optimizer=None) -> dict[str, Any]:
        """Load model (and optimizer moments) into the live, possibly sharded, model; returns train_state."""
        load_weights(path, model, optimizer)
        return json.loads((path / "train_state.json").read_text())


def load_weights(path: Path, model: nn.Module, optimizer=None) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    state = {"model": get_model_state_dict(model)}
    if optimizer is not None:
        osd = get_optimizer_state_dict(model, optimizer)
        state["optim"] = osd["state"]
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.load(state, checkpoint_id=str(path))
    except Exception as e:  # a different model, or a checkpoint from another architecture
        raise MeditronError(f"checkpoint {path} does not fit this model/optimizer: {str(e).splitlines()[0][:300]}") from None
    set_model_state_dict(model, state["model"])
    if optimizer is not None:
        set_optimizer_state_dict(model, optimizer, {"state": state["optim"], "param_groups": osd["param_groups"]})


# -- export ---------------------------------------------------------------------------------------
def load_checkpoint_model(path: str | Path, dtype: torch.dtype = torch.float32):
    """The full (unsharded) Transformer of a checkpoint on CPU, LoRA adapters merged; and its meta."""
    import torch.distributed.checkpoint as dcp

    from meditron.model.config import ModelConfig
    from meditron.model.llama import Transformer

    ckpt = resolve_checkpoint(path)
    meta = json.loads((ckpt / "meta.json").read_text())
    config = ModelConfig(**meta["model_config"])
    with torch.device("meta"):
        model = Transformer(config)
    lora = meta.get("lora")
    if lora:
        from meditron.train.lora import inject_lora

        inject_lora(model, lora)
    model.to_empty(device="cpu")
    model.to(dtype)
    if config.tie_embeddings:
        model.output.weight = model.tok_embeddings.weight
    model.reset_rope("cpu")
    stored = set(dcp.FileSystemReader(str(ckpt)).read_metadata().state_dict_metadata)
    sd = {k: v for k, v in model.state_dict().items() if f"model.{k}" in stored}
    missing = [k for k in model.state_dict() if f"model.{k}" not in stored and not k.endswith("output.weight")]
    if missing:
        raise MeditronError(f"checkpoint {ckpt} lacks {len(missing)} tensors (first: {missing[0]})")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load({"model": sd}, checkpoint_id=str(ckpt))
    if lora:
        from meditron.train.lora import merge_lora

        model = merge_lora(model, config)
    return model.eval(), meta, ckpt


def export_checkpoint(path: str | Path, out_dir: str | Path, dtype: str = "float32") -> Path:
    """Write a Hugging Face folder (safetensors, config, tokenizer) from a training checkpoint."""
    from meditron.model.weights import check_hf_target, parse_dtype, save_hf

    ckpt = resolve_checkpoint(path)
    check_hf_target(out_dir, [ckpt])  # before loading: a 70B load is wasted on a refused folder
    torch_dtype = parse_dtype(dtype)
    model, meta, ckpt = load_checkpoint_model(ckpt, torch_dtype)
    tokenizer = None
    tok_dir = meta.get("tokenizer_dir")
    if tok_dir and (ckpt.parents[1] / tok_dir).is_dir():
        from meditron.model.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(ckpt.parents[1] / tok_dir)
        if _was_sft(meta):
            _chat_eos(model, tokenizer)
    return save_hf(model, out_dir, tokenizer=tokenizer, dtype=torch_dtype, protect=[ckpt])


def _was_sft(meta: dict[str, Any]) -> bool:
    """Whether the checkpoint's run fine-tuned on ChatML conversations (data.mode=sft)."""
    return ((meta.get("config") or {}).get("data") or {}).get("mode") == "sft"


def _chat_eos(model: nn.Module, tokenizer) -> None:
    """End generation at `<|im_end|>`: a ChatML fine-tune ends its answers there, not at `</s>`.

    As MEDITRON's converter does for fine-tuned models (`--override_special_tokens eos=<|im_end|>`);
    the tokenizer and the model config (hence config.json and generation_config.json) both change.
    """
    from meditron.model.tokenizer import CHAT_TOKENS

    im_end = CHAT_TOKENS[1]
    eos_id = tokenizer.token_to_id(im_end)
    if eos_id is None:
        return
    tokenizer.eos_token = im_end
    model.config = model.config.replace(eos_token_id=eos_id)
