"""The training config: one dataclass tree, loaded from YAML with dotted `--set` overrides.

Sections mirror the recipe of MEDITRON.md §4: model (what to start from), data (Megatron shards or
ChatML JSONL), train (batch, length, precision), optim (AdamW + cosine), parallel (dp × tp × pp),
checkpoint, eval, log, failures and lora.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from meditron.config import load_config
from meditron.errors import ConfigError
from meditron.train.stop import parse_signals


@dataclass
class ModelSection:
    init: str = "random"  # "random" (preset + seed) or a model reference: HF folder, .gguf, alias, hub name
    preset: str = "tiny"  # architecture for random init (meditron.model.config presets)
    overrides: dict[str, Any] = field(default_factory=dict)  # ModelConfig fields replaced on the preset
    tokenizer: str | None = None  # tokenizer reference; default: the model reference's; "bytes" for tiny
    seed: int = 0  # random-init seed


@dataclass
class SourceSection:
    name: str = ""
    path: str = ""  # prefix of a Megatron .bin/.idx pair
    weight: float = 1.0


@dataclass
class DataSection:
    mode: Literal["pretrain", "sft"] = "pretrain"
    sources: list[SourceSection] = field(default_factory=list)  # blended by weight
    valid: list[SourceSection] = field(default_factory=list)  # separate validation shards, one loss each
    valid_fraction: float = 0.0  # else: hold out the last fraction of each training source's documents
    synthetic: bool = False  # make deterministic tiny shards (or ChatML JSONL) under OUT/data
    append_eod: bool | None = None  # None: add EOD after each document unless documents already end with it
    eod_id: int | None = None  # default: the tokenizer's EOD/EOS
    seed: int = 1234  # document and window order
    train_file: str | None = None  # sft: JSONL with "question" and "answer"
    valid_file: str | None = None
    pad_multiple: int = 16  # sft: pad each micro-batch to a multiple of this (Megatron-LLM)
    add_bos: bool = True  # sft: start each sample with BOS


@dataclass
class TrainSection:
    steps: int | None = None  # optimizer steps to run; None: epochs × dataset / global batch
    epochs: float | None = None  # used when steps is None (MEDITRON SFT: 3, configs/meditron-7b-sft.yaml)
    seq_len: int = 2048
    micro_batch: int = 1  # sequences per forward/backward on one data-parallel rank
    global_batch: int = 8  # sequences per optimizer step (accumulation fills the gap)
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 on GPU, fp32 on CPU
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compile: bool = False  # torch.compile each transformer block
    loss_chunk: int | None = None  # tokens per cross-entropy chunk (None: ~64 MB of fp32 logits on CPU, ~1 GB on GPU)
    seed: int = 0


@dataclass
class OptimSection:
    lr: float = 3e-4
    min_lr: float = 1e-6
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-5
    weight_decay: float = 0.1  # not applied to norms and biases (Megatron)
    clip: float = 1.0  # gradient norm clip; 0 disables
    warmup_steps: int | None = None
    warmup_fraction: float = 0.0  # used when warmup_steps is None (MEDITRON SFT: 0.1)
    schedule_factor: float = 1.0  # cosine sized for factor × run steps (MEDITRON: 2.0 = "2 epochs, stop at 1")
    schedule_steps: int | None = None  # explicit schedule length (overrides schedule_factor)


@dataclass
class ParallelSection:
    dp: int = 1  # data parallel (FSDP2); = dp_replicate × shard group size
    dp_replicate: int = 1  # >1: HSDP (replicate across groups, shard within)
    tp: int = 1  # tensor parallel with sequence parallel
    pp: int = 1  # pipeline stages (layers split evenly by hand)
    pp_schedule: Literal["1f1b", "gpipe"] = "1f1b"
    activation_checkpoint: Literal["none", "full", "selective"] = "none"
    backend: Literal["auto", "gloo", "nccl"] = "auto"


@dataclass
class CheckpointSection:
    interval: int = 0  # save every N steps (0: only at the end)
    keep: int = 3  # keep the last N checkpoints
    resume: bool = True  # continue from the latest checkpoint in OUT/checkpoints
    init_from: str | None = None  # start weights from this checkpoint (no optimizer, step 0)
    save_final: bool = True
    # these signals finish the current step, save a checkpoint and exit 128+signal (train/stop.py); [] = die
    on_signal: list[str] = field(default_factory=lambda: ["SIGTERM", "SIGINT", "SIGUSR1"])


@dataclass
class EvalSection:
    interval: int = 0  # validation every N steps (0: never, except at the end when valid data exists)
    batches: int = 8  # micro-batches per validation source


@dataclass
class LogSection:
    interval: int = 1
    tensorboard: bool = True
    progress: bool = True
    peak_flops: float | None = None  # per device; None: device table (GPU) or measured matmul (CPU)


@dataclass
class FailureSection:
    max_consecutive_skips: int = 5  # this many non-finite steps in a row roll back to the last checkpoint
    max_rollbacks: int = 3  # a run that needs more rollbacks than this stops with an error
    inject_nan_steps: list[int] = field(default_factory=list)  # testing: make these steps' loss NaN


@dataclass
class LoraSection:
    enabled: bool = False  # single-device fine-tuning through peft
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    targets: list[str] = field(default_factory=lambda: ["wq", "wk", "wv", "wo", "w1", "w2", "w3"])


@dataclass
class TrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)
    optim: OptimSection = field(default_factory=OptimSection)
    parallel: ParallelSection = field(default_factory=ParallelSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    eval: EvalSection = field(default_factory=EvalSection)
    log: LogSection = field(default_factory=LogSection)
    failures: FailureSection = field(default_factory=FailureSection)
    lora: LoraSection = field(default_factory=LoraSection)
    out: str | None = None  # run directory (the CLI's --out wins)

    @property
    def world_size(self) -> int:
        return self.parallel.dp * self.parallel.tp * self.parallel.pp

    def validate(self) -> None:
        """Checks that need several keys at once; each error names the key to change."""
        p, t = self.parallel, self.train
        self._check_ranges()
        parse_signals(self.checkpoint.on_signal)
        if p.dp % p.dp_replicate:
            raise ConfigError(f"parallel.dp {p.dp} is not a multiple of parallel.dp_replicate {p.dp_replicate}")
        if t.global_batch % (t.micro_batch * p.dp):
            raise ConfigError(
                f"train.global_batch {t.global_batch} must be a multiple of train.micro_batch × parallel.dp "
                f"= {t.micro_batch * p.dp}"
            )
        if p.pp > 1 and self.accumulation < p.pp and p.pp_schedule == "1f1b":
            raise ConfigError(
                f"1F1B needs at least parallel.pp={p.pp} micro-batches per step; raise train.global_batch "
                f"or lower train.micro_batch (now {self.accumulation})"
            )
        if t.seq_len % p.tp:
            raise ConfigError(f"train.seq_len {t.seq_len} must be a multiple of parallel.tp {p.tp} (sequence parallel)")
        if self.data.mode == "sft" and p.tp > 1 and self.data.pad_multiple % p.tp:
            raise ConfigError(f"data.pad_multiple {self.data.pad_multiple} must be a multiple of parallel.tp {p.tp}")
        if self.lora.enabled and self.world_size > 1:
            raise ConfigError("lora.enabled is for single-device fine-tunes; set parallel.dp=tp=pp=1")
        if self.optim.warmup_fraction < 0 or self.optim.warmup_fraction >= 1:
            raise ConfigError("optim.warmup_fraction must be in [0, 1)")
        if len(self.optim.betas) != 2:
            raise ConfigError("optim.betas must have two values, e.g. [0.9, 0.95]")
        if self.data.mode == "pretrain" and not self.data.sources and not self.data.synthetic:
            raise ConfigError("data.sources is empty; list Megatron shards (name, path, weight) or set data.synthetic=true")
        if self.data.mode == "sft" and not self.data.train_file and not self.data.synthetic:
            raise ConfigError("data.train_file is empty; give a JSONL of question/answer or set data.synthetic=true")
        if t.steps is None and t.epochs is None:
            raise ConfigError("set train.steps or train.epochs")

    # (key, smallest allowed value); None values mean "use the default" and are not checked
    MINIMUMS = (("parallel.dp", 1), ("parallel.tp", 1), ("parallel.pp", 1), ("parallel.dp_replicate", 1),
                ("train.micro_batch", 1), ("train.global_batch", 1), ("train.seq_len", 2), ("train.steps", 1),
                ("train.loss_chunk", 1), ("data.pad_multiple", 1), ("optim.lr", 0.0), ("optim.min_lr", 0.0),
                ("optim.eps", 0.0), ("optim.clip", 0.0), ("optim.warmup_steps", 0),
                ("checkpoint.interval", 0), ("checkpoint.keep", 1), ("eval.interval", 0), ("eval.batches", 1),
                ("log.interval", 1), ("failures.max_consecutive_skips", 1), ("failures.max_rollbacks", 0),
                ("lora.r", 1))

    def _check_ranges(self) -> None:
        """Values that load as the right type but cannot work (a zero pad multiple divides by zero)."""
        for key, low in self.MINIMUMS:
            section, name = key.split(".")
            value = getattr(getattr(self, section), name)
            if value is not None and value < low:
                raise ConfigError(f"{key} must be >= {low} (got {value})")
        if self.optim.min_lr > self.optim.lr:
            raise ConfigError(f"optim.min_lr {self.optim.min_lr} is above optim.lr {self.optim.lr}")
        if self.train.epochs is not None and self.train.epochs <= 0:
            raise ConfigError(f"train.epochs must be > 0 (got {self.train.epochs})")

    @property
    def accumulation(self) -> int:
        """Micro-batches per optimizer step on each data-parallel rank."""
        return self.train.global_batch // (self.train.micro_batch * self.parallel.dp)

    def schedule_length(self, run_steps: int) -> int:
        if self.optim.schedule_steps:
            return self.optim.schedule_steps
        return max(1, round(run_steps * self.optim.schedule_factor))

    def warmup(self, schedule_steps: int) -> int:
        if self.optim.warmup_steps is not None:
            return self.optim.warmup_steps
        return int(math.ceil(self.optim.warmup_fraction * schedule_steps))


def load_train_config(path, overrides: list[str] | None = None) -> TrainConfig:
    cfg = load_config(TrainConfig, path, overrides)
    cfg.validate()
    return cfg
