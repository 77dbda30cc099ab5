"""The training loop: data → micro-batches → forward/backward → clip → AdamW step, with its guards.

One optimizer step consumes global samples [s·G, (s+1)·G); the loss is the mean over every
target token of the global batch (the sum divided by the global count), so any dp × tp × pp
layout computes the same numbers as one process. Non-finite steps are skipped and counted;
`failures.max_consecutive_skips` in a row roll back to the last checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from meditron.config import to_dict
from meditron.errors import ConfigError, MeditronError
from meditron.train.checkpoint import CheckpointManager
from meditron.train.config import TrainConfig
from meditron.train.data import (
    BlendedDataset,
    ByteTokenizer,
    EpochOrder,
    PackedSource,
    SFTDataset,
    check_token_ids,
    corpus_tokenizer,
    make_synthetic_sft,
    make_synthetic_shards,
    rank_slice,
    split_docs,
)
from meditron.train.metrics import MetricsWriter, flops_per_token, memory_gb, peak_flops
from meditron.train.parallel import DistEnv, ParallelModel, build_mesh, init_distributed, reduce_sum, resolve_precision
from meditron.train.stop import StopRequest, TrainingStopped, parse_signals

KILL_ENV = "MEDITRON_KILL_AFTER_STEP"  # test hook: SIGKILL this process after that step is logged


class TrainingError(MeditronError):
    """Training cannot go on (out of memory, repeated non-finite steps with nothing to roll back to)."""


def allocate_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """Create AdamW's moments now, exactly as its first step would (zeros, step 0).

    Allocated lazily, they would land in the middle of the first step's freed activations and
    fragment the heap: on CPU the peak RSS of SmolLM2-135M at 4 × 512 tokens was 0.4 GB higher.
    Done with torch's own code: one step on zero gradients at lr 0 (which leaves every parameter
    bit-identical, weight decay included), then the step counters back to 0.
    """
    lrs = [g["lr"] for g in optimizer.param_groups]
    for g in optimizer.param_groups:
        g["lr"] = 0.0
        for p in g["params"]:
            p.grad = torch.zeros_like(p)
    optimizer.step()
    for g, lr in zip(optimizer.param_groups, lrs):
        g["lr"] = lr
    for state in optimizer.state.values():
        if torch.is_tensor(state.get("step")):
            state["step"].zero_()
        elif "step" in state:
            state["step"] = 0
    optimizer.zero_grad(set_to_none=True)


def lr_at(step: int, peak: float, min_lr: float, warmup: int, total: int) -> float:
    """LR of optimizer step `step` (1-based): linear warmup to `peak`, cosine to `min_lr` at `total`."""
    if warmup > 0 and step <= warmup:
        return peak * step / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_lr + 0.5 * (peak - min_lr) * (1.0 + math.cos(math.pi * progress))


def _barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


class Trainer:
    def __init__(self, cfg: TrainConfig, out: str | Path):
        self.cfg = cfg
        self.out = Path(out)
        self.env = init_distributed(cfg)
        self.main = self.env.rank == 0
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
        _barrier(self.env)
        torch.manual_seed(cfg.train.seed)
        self.mesh = build_mesh(self.env, cfg)
        model, self.tokenizer = self._load_model()
        self.sft = cfg.data.mode == "sft"
        self.corpus_tok = None
        if self.sft:
            self._prepare_chat_tokens(model)
        elif not cfg.data.synthetic:
            self._prepare_corpus_tokens(model)
        self.model_config = dataclasses.replace(model.config)
        self._build_data()
        if cfg.lora.enabled:
            from meditron.train.lora import inject_lora

            inject_lora(model, dataclasses.asdict(cfg.lora))
        self.adapter_params = (sum(p.numel() for p in model.parameters() if p.requires_grad)
                               if cfg.lora.enabled else None)  # MFU: the frozen base gets no weight grads
        self.pm = ParallelModel(model, cfg, self.env, self.mesh)
        self.optimizer = self._build_optimizer()
        self.ckpt = CheckpointManager(self.out, self.env.rank, self.env.distributed, cfg.checkpoint.keep)
        self.step, self.tokens_seen, self.skipped, self.consecutive, self.rollbacks = 0, 0, 0, 0, 0
        # failures.max_rollbacks: rollbacks with fewer than checkpoint.interval good steps between them
        self.rollbacks_in_a_row, self.finite_run = 0, 0
        self._save_pending = False  # a periodic checkpoint fell due on a skipped step
        self._resume()
        self._save_run_files()
        self.metrics = MetricsWriter(self.out, self.main, cfg.log.tensorboard, self.step)
        self.dtype = resolve_precision(cfg, self.env)
        self.peak, self.peak_source = peak_flops(self.env.device, self.dtype, cfg.log.peak_flops)

    # -- setup ------------------------------------------------------------------------------------
    def _load_model(self):
        from meditron.model.config import preset
        from meditron.model.llama import Transformer

        mc = self.cfg.model
        tok = None
        if self.cfg.checkpoint.init_from:
            # Start from an earlier run (e.g. fine-tune a pretraining run): its architecture and weights,
            # loaded whole on CPU before any resizing or sharding; its tokenizer unless model.tokenizer says.
            from meditron.train.checkpoint import load_checkpoint_model

            model, meta, ckpt = load_checkpoint_model(self.cfg.checkpoint.init_from)
            tok_dir = ckpt.parents[1] / (meta.get("tokenizer_dir") or "tokenizer")
            if tok_dir.is_dir() and not mc.tokenizer:
                from meditron.model.tokenizer import load_tokenizer

                tok = load_tokenizer(tok_dir)
        elif mc.init == "random":
            try:
                config = preset(mc.preset, **mc.overrides)
            except TypeError as e:
                raise ConfigError(f"model.overrides: {e}") from None
            model = Transformer(config)
            model.init_weights(mc.seed)
        elif self.cfg.parallel.pp > 1:
            model, tok = self._load_stage(mc.init)
        elif str(mc.init).endswith(".gguf"):
            from meditron.model.hub import load_model

            model, tok = load_model(mc.init, dtype=torch.float32)
        else:
            from meditron.model.hub import resolve
            from meditron.model.weights import load_hf_folder

            folder = resolve(mc.init)
            model, tok = load_hf_folder(folder, torch.float32), _folder_tokenizer(folder, mc.tokenizer)
        if mc.tokenizer == "bytes":
            tok = ByteTokenizer()
        elif mc.tokenizer:
            from meditron.model.tokenizer import load_tokenizer

            tok = load_tokenizer(mc.tokenizer)
        model.train()
        return model, tok

    def _load_stage(self, ref: str):
        """Only this pipeline stage's tensors, read lazily from the safetensors (a 70B stage, not 70B)."""
        from safetensors import safe_open

        from meditron.model.hub import resolve
        from meditron.model.llama import Transformer
        from meditron.model.weights import read_hf_config, safetensors_files, to_hf_name
        from meditron.train.parallel import coords, split_stage

        folder = resolve(ref)
        config = read_hf_config(folder)
        with torch.device("meta"):
            model = split_stage(Transformer(config), self.cfg.parallel.pp, coords(self.mesh, self.cfg).pp_rank)
        wanted = {to_hf_name(n): n for n in model.state_dict()}
        state = {}
        for f in safetensors_files(folder):
            with safe_open(str(f), framework="pt") as handle:
                for hf_name in handle.keys():
                    if hf_name in wanted:
                        state[wanted[hf_name]] = handle.get_tensor(hf_name).to(torch.float32)
        missing = sorted(set(wanted.values()) - set(state))
        if missing:
            raise MeditronError(f"{folder} lacks {len(missing)} tensors of this stage (first: {missing[0]})")
        model.load_state_dict(state, assign=True)
        model.reset_rope("cpu")
        return model, _folder_tokenizer(folder, self.cfg.model.tokenizer)

    def _prepare_chat_tokens(self, model) -> None:
        tok = self.tokenizer
        if tok is None:
            raise ConfigError("data.mode=sft needs a tokenizer: set model.tokenizer (or 'bytes' for tiny runs)")
        if isinstance(tok, ByteTokenizer):
            return
        from meditron.model.tokenizer import add_chat_tokens

        add_chat_tokens(tok)
        _grow_vocab(model, tok.vocab_size)

    def _prepare_corpus_tokens(self, model) -> None:
        """Match the model to the vocabulary the corpus was tokenized with (its datacard says which).

        MEDITRON's own corpus adds 17 tokens to Llama-2's 32,000 (MEDITRON.md §4.1): the model's
        tokenizer gets the same additions and its embeddings grow to 32,017 rows, as the paper's did.
        """
        d = self.cfg.data
        info = corpus_tokenizer([s.path for s in d.sources] + [v.path for v in d.valid])
        self.corpus_tok = info
        tok = self.tokenizer
        real_tok = tok is not None and not isinstance(tok, ByteTokenizer)
        if info is None:  # shards made elsewhere: trust model.tokenizer when it names a larger vocabulary
            if real_tok:
                _grow_vocab(model, tok.vocab_size)
            return
        vocab, grows = info["vocab_size"], info["vocab_size"] > model.config.vocab_size
        if tok is None and not grows:
            return  # a random model without a tokenizer: the ids fit, nothing to compare
        if info.get("meditron_tokens") and real_tok:
            from meditron.model.tokenizer import add_meditron_tokens

            add_meditron_tokens(tok)
        # the tokenizer must be the card's; when the model grows, its additions must line up (same EOD)
        if tok is None or tok.vocab_size != vocab or (grows and tok.eod_id != info.get("eod_id")):
            raise ConfigError(
                f"{info['card']}: the corpus was tokenized with {info.get('ref')!r} ({info['vocab_size']} ids, EOD "
                f"{info.get('eod_id')}) but the model has {model.config.vocab_size} ids and its tokenizer "
                f"{'is unknown' if tok is None else f'gives {tok.vocab_size} ids, EOD {tok.eod_id}'}; "
                "set model.tokenizer to the corpus's tokenizer"
            )
        _grow_vocab(model, tok.vocab_size)

    def _eod(self) -> int:
        if self.cfg.data.eod_id is not None:
            return self.cfg.data.eod_id
        if self.corpus_tok is not None and self.corpus_tok.get("eod_id") is not None:
            return int(self.corpus_tok["eod_id"])
        if self.tokenizer is not None and getattr(self.tokenizer, "eod_id", None) is not None:
            return int(self.tokenizer.eod_id)
        eos = self.model_config.eos_token_id
        eos = eos[0] if isinstance(eos, list) else eos
        if eos is None:
            raise ConfigError("no end-of-document token known; set data.eod_id")
        return int(eos)

    def _build_data(self) -> None:
        from meditron.corpus.shards import IndexedDataset

        cfg, d = self.cfg, self.cfg.data
        G, S = cfg.train.global_batch, cfg.train.seq_len
        data_dir = self.out / "data"
        self.valid_sets: dict[str, Any] = {}
        if self.sft:
            train_file = d.train_file
            if d.synthetic:
                if self.main:
                    make_synthetic_sft(data_dir / "sft-synthetic.jsonl", seed=d.seed)
                _barrier(self.env)
                train_file = str(data_dir / "sft-synthetic.jsonl")
            bos = getattr(self.tokenizer, "bos_id", None)
            self.train_set = SFTDataset(train_file, self.tokenizer, S, d.add_bos, bos)
            if self.main and (self.train_set.rejected or self.train_set.truncated):
                print(f"meditron: {train_file}: set aside {dict(self.train_set.rejected)}, "
                      f"truncated {self.train_set.truncated} to train.seq_len", file=sys.stderr)
            if d.valid_file:
                self.valid_sets["valid"] = SFTDataset(d.valid_file, self.tokenizer, S, d.add_bos, bos)
            self.order = EpochOrder(len(self.train_set), d.seed)
            n_per_epoch = len(self.train_set)
            pad = getattr(self.tokenizer, "pad_id", None)
            self.pad_id = int(pad if pad is not None else self._eod())
        else:
            sources = [(s.name or Path(s.path).name, s.path, s.weight) for s in d.sources]
            if d.synthetic:
                if self.main:
                    make_synthetic_shards(data_dir, self.model_config.vocab_size, S, d.seed)
                _barrier(self.env)
                sources = make_synthetic_shards(data_dir, self.model_config.vocab_size, S, d.seed)
            eod = self._eod()
            packed, weights = [], []
            for name, path, weight in sources:
                ds = IndexedDataset(path)
                train_ids, valid_ids = split_docs(ds, d.valid_fraction)
                packed.append(PackedSource(name, ds, train_ids, S, eod, d.append_eod, d.seed))
                weights.append(weight)
                if len(valid_ids):
                    self.valid_sets[name] = PackedSource(name, ds, valid_ids, S, eod, d.append_eod, d.seed, shuffle=False)
            origin = {n: f"the held-out split of source {n!r} (data.valid_fraction={d.valid_fraction})"
                      for n in self.valid_sets}
            for i, v in enumerate(d.valid):
                ds = IndexedDataset(v.path)
                name = v.name or Path(v.path).name
                if name in origin:   # results are keyed by name: one set would silently replace the other
                    raise ConfigError(f"data.valid[{i}]: the name {name!r} is already {origin[name]}; "
                                      "give each validation set its own name")
                origin[name] = f"the name of data.valid[{i}]"
                self.valid_sets[name] = PackedSource(name, ds, np.arange(len(ds)), S, eod, d.append_eod, d.seed,
                                                     shuffle=False)
            n_per_epoch = sum(len(p) for p in packed)
            self.packed, self.weights = packed, weights
        t = cfg.train
        self.total_steps = t.steps if t.steps is not None else max(1, math.ceil(t.epochs * n_per_epoch / G))
        self.schedule_steps = cfg.schedule_length(self.total_steps)
        self.warmup_steps = cfg.warmup(self.schedule_steps)
        if not self.sft:
            self.train_set = BlendedDataset(self.packed, self.weights, self.total_steps * G)

    def _build_optimizer(self):
        o = self.cfg.optim
        params = self.pm.parameters()
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        groups = [{"params": decay, "weight_decay": o.weight_decay}]
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0})
        # The fused kernel (one pass, no full-size temporaries) on plain tensors; foreach on DTensors.
        fused = not self.env.distributed
        optimizer = torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas), eps=o.eps,
                                      weight_decay=o.weight_decay, **({"fused": True} if fused else {"foreach": True}))
        allocate_optimizer_state(optimizer)
        return optimizer

    def _meta(self) -> dict[str, Any]:
        return {
            "model_config": dataclasses.asdict(self.model_config),
            "config": to_dict(self.cfg),
            "lora": dataclasses.asdict(self.cfg.lora) if self.cfg.lora.enabled else None,
            "tokenizer_dir": "tokenizer" if (self.out / "tokenizer").is_dir() else None,
            "layout": {"dp": self.cfg.parallel.dp, "tp": self.cfg.parallel.tp, "pp": self.cfg.parallel.pp},
        }

    def _save_run_files(self) -> None:
        if not self.main:
            return
        import yaml

        (self.out / "config.yaml").write_text(yaml.safe_dump(to_dict(self.cfg), sort_keys=False))
        if self.tokenizer is not None and hasattr(self.tokenizer, "save") and not (self.out / "tokenizer").is_dir():
            self.tokenizer.save(self.out / "tokenizer")

    def _resume(self) -> None:
        """Continue from the latest checkpoint in OUT; refuse what would silently corrupt the run."""
        c = self.cfg.checkpoint
        latest = self.ckpt.latest()
        if latest is not None and not c.resume:
            raise ConfigError(
                f"{self.out} holds checkpoints of an earlier run (latest {latest.name}); with checkpoint.resume=false "
                "they would mix with this run's: choose another --out, delete them, or set checkpoint.resume=true"
            )
        if latest is None:
            return
        saved = json.loads((latest / "train_state.json").read_text())  # checked before a long load
        G, steps = self.cfg.train.global_batch, int(saved["step"])
        if saved.get("samples") is not None and int(saved["samples"]) != steps * G:
            raise ConfigError(
                f"train.global_batch: {latest} read {saved['samples']} samples in {steps} steps, but "
                f"train.global_batch={G} would resume at sample {steps * G} and re-read or skip data; "
                "set it back to the checkpoint's value"
            )
        self._check_same_data_order(latest)
        state = self.ckpt.load(latest, self.pm.state_module, self.optimizer)
        self.step = int(state["step"])
        self.tokens_seen = int(state.get("tokens", 0))
        self.skipped = int(state.get("skipped", 0))
        self.rollbacks = int(state.get("rollbacks", 0))
        if self.main:
            print(f"meditron: resumed from {latest} at step {self.step}", file=sys.stderr)

    def _check_same_data_order(self, latest: Path) -> None:
        """Refuse to resume with a setting that decides which sample a step reads (window length, seeds,
        document ends, the held-out split, the sources and their weights): the run would go on with other
        data than an uninterrupted one. Paths may change (a moved corpus); the step count may grow."""
        meta_file = latest / "meta.json"
        if not meta_file.is_file():
            return
        before = json.loads(meta_file.read_text()).get("config") or {}
        now = to_dict(self.cfg)
        d = self.cfg.data
        for key in _DATA_ORDER_KEYS[d.mode]:
            if key == "data.sources" and d.synthetic:    # the shards are made by the run, always the same way
                continue
            section, name = key.split(".")
            if name not in before.get(section, {}):
                continue
            old, new = before[section][name], now[section][name]
            if name == "sources":
                old, new = _blend(old), _blend(new)
            if old != new:
                raise ConfigError(
                    f"{key}: {latest} was trained with {old!r}, this config has {new!r}; resuming would read "
                    f"other data than the run so far. Set it back, or start a new stage from these weights with "
                    f"checkpoint.init_from={latest} and another --out"
                )

    def _train_state(self) -> dict[str, Any]:
        return {"tokens": self.tokens_seen, "skipped": self.skipped, "rollbacks": self.rollbacks,
                "samples": self.step * self.cfg.train.global_batch}

    # -- batches ----------------------------------------------------------------------------------
    def _micro_batches(self, step: int) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], float, int, float]:
        """This rank's micro-batches for `step`, the loss scale (1 / global target tokens), global tokens,
        and the sequence length attention FLOPs are counted at (Σ len² / Σ len over SFT's varied samples)."""
        cfg = self.cfg
        G, mb = cfg.train.global_batch, cfg.train.micro_batch
        idx = list(rank_slice(step, G, self.pm.c.dp_rank, cfg.parallel.dp))
        batches = []
        if self.sft:
            order = [self.order[i] for i in idx]
            pad_to = cfg.train.seq_len if cfg.parallel.pp > 1 else cfg.data.pad_multiple
            for s in range(0, len(order), mb):
                tok, tgt = self.train_set.batch(order[s: s + mb], self.pad_id, pad_to)
                if cfg.parallel.pp > 1 and tok.shape[1] < cfg.train.seq_len:
                    tok, tgt = _pad(tok, tgt, cfg.train.seq_len, self.pad_id)
                batches.append((torch.from_numpy(tok), torch.from_numpy(tgt)))
            glob = [self.order[i] for i in range(step * G, (step + 1) * G)]
            n_targets = sum(self.train_set.loss_tokens(i) for i in glob)
            lengths = [len(self.train_set.samples[i].ids) - 1 for i in glob]
            n_tokens = sum(lengths)
            attention_len = sum(n * n for n in lengths) / max(1, n_tokens)
        else:
            for s in range(0, len(idx), mb):
                tok, tgt = self.train_set.batch(idx[s: s + mb])
                check_token_ids(tok, self.model_config.vocab_size)
                check_token_ids(tgt[:, -1], self.model_config.vocab_size)  # the rest of tgt is tok shifted
                batches.append((torch.from_numpy(np.ascontiguousarray(tok)), torch.from_numpy(np.ascontiguousarray(tgt))))
            n_targets = n_tokens = G * cfg.train.seq_len
            attention_len = cfg.train.seq_len
        return batches, 1.0 / max(1, n_targets), n_tokens, attention_len

    @property
    def _contributes(self) -> bool:
        """Ranks whose loss counts once in a global sum: tp rank 0 of the last pipeline stage."""
        return self.pm.c.tp_rank == 0 and self.pm.last

    # -- the step ---------------------------------------------------------------------------------
    def train_step(self) -> dict[str, Any]:
        cfg = self.cfg
        t0 = time.perf_counter()
        step = self.step + 1
        lr = lr_at(step, cfg.optim.lr, cfg.optim.min_lr, self.warmup_steps, self.schedule_steps)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        batches, scale, n_tokens, attention_len = self._micro_batches(self.step)
        if step in cfg.failures.inject_nan_steps:
            scale = float("nan")
        self.optimizer.zero_grad(set_to_none=True)
        self.pm.train(True)
        with self._out_of_memory_names_the_knobs("training"):
            local = self.pm.forward_backward(batches, scale)
            loss = reduce_sum(local if self._contributes else torch.zeros_like(local), self.env).item()
            gnorm = float(self.pm.grad_norm_and_clip(cfg.optim.clip))
        finite = math.isfinite(loss) and math.isfinite(gnorm)
        if finite:
            self.optimizer.step()
            self.consecutive = 0
            self.finite_run += 1
            if self.finite_run >= max(1, cfg.checkpoint.interval):
                self.rollbacks_in_a_row = 0  # the run has recovered: a later rollback starts a new streak
        else:
            self.optimizer.zero_grad(set_to_none=True)
            self.skipped += 1
            self.consecutive += 1
            self.finite_run = 0
        self.step = step
        self.tokens_seen += n_tokens
        if self.env.device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        tps = n_tokens / dt
        row = {
            "step": step, "loss": loss, "lr": lr, "grad_norm": gnorm, "tokens_per_s": tps,
            "mfu": tps * flops_per_token(self.model_config, attention_len, self.adapter_params)
            / (self.peak * self.env.world),
            "step_time_s": dt, "tokens": self.tokens_seen, "memory_gb": memory_gb(self.env.device),
            "skipped": not finite, "n_skipped": self.skipped, "n_rollbacks": self.rollbacks,
        }
        if self.consecutive >= cfg.failures.max_consecutive_skips:
            try:
                row["rollback_to"] = self._rollback()
            except TrainingError:
                self.metrics.write(row)  # the step that ends the run is on record too
                raise
            row["n_rollbacks"] = self.rollbacks
        return row

    @contextlib.contextmanager
    def _out_of_memory_names_the_knobs(self, phase: str):
        """Turn an allocator failure (CUDA OOM, or CPU's "can't allocate memory") into the settings to change."""
        t = self.cfg.train
        try:
            yield
        except (torch.OutOfMemoryError, RuntimeError) as e:
            if isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e) or "can't allocate" in str(e):
                raise TrainingError(
                    f"out of memory in {phase} at train.micro_batch={t.micro_batch}, train.seq_len={t.seq_len}: "
                    "lower train.micro_batch (accumulation keeps train.global_batch), set "
                    "parallel.activation_checkpoint=full, lower train.loss_chunk (tokens per loss chunk), "
                    "or raise parallel.tp/pp/dp"
                ) from None
            raise

    def _rollback(self) -> int:
        latest = self.ckpt.latest()
        if latest is None:
            raise TrainingError(
                f"{self.consecutive} non-finite steps in a row and no checkpoint to roll back to; "
                "lower optim.lr, check the data, or set checkpoint.interval"
            )
        if self.rollbacks_in_a_row >= self.cfg.failures.max_rollbacks:
            raise TrainingError(
                f"{self.consecutive} non-finite steps in a row after {self.rollbacks_in_a_row} rollbacks in a row "
                f"(failures.max_rollbacks) at step {self.step}: going back again would not help; "
                "lower optim.lr or check the data these steps read"
            )
        state = self.ckpt.load(latest, self.pm.state_module, self.optimizer)
        self.consecutive = 0
        self.rollbacks += 1
        self.rollbacks_in_a_row += 1
        if self.main:
            print(f"meditron: rolled back weights to {latest} (data continues at step {self.step})", file=sys.stderr)
        return int(state["step"])

    # -- validation -------------------------------------------------------------------------------
    def validate(self) -> dict[str, float]:
        """Loss and perplexity per validation source over the same windows whatever the layout.

        eval.batches × train.micro_batch windows are split over the data-parallel ranks; every rank
        runs the same number of micro-batches (collectives must match), surplus rows being masked.
        """
        cfg = self.cfg
        out: dict[str, float] = {}
        mb, dp = cfg.train.micro_batch, cfg.parallel.dp
        group = cfg.accumulation if cfg.parallel.pp > 1 else 1
        self.pm.train(False)
        for name, vs in self.valid_sets.items():
            n_windows = min(cfg.eval.batches * mb, len(vs))
            chunk = mb * group
            per_rank = -(-(-(-n_windows // dp)) // chunk) * chunk
            mine = [self.pm.c.dp_rank * per_rank + k for k in range(per_rank)]
            loss_sum = torch.zeros((), device=self.env.device)
            count = torch.zeros((), device=self.env.device)
            ok = True
            for b in range(0, per_rank, chunk):
                rows = mine[b: b + chunk]
                real = np.array([r < n_windows for r in rows])
                rows = [r if r < n_windows else 0 for r in rows]
                if self.sft:
                    pad_to = cfg.train.seq_len if cfg.parallel.pp > 1 else cfg.data.pad_multiple
                    tok, tgt = vs.batch(rows, self.pad_id, pad_to)
                    if cfg.parallel.pp > 1 and tok.shape[1] < cfg.train.seq_len:
                        tok, tgt = _pad(tok, tgt, cfg.train.seq_len, self.pad_id)
                else:
                    arr = np.stack([vs.window(r) for r in rows])
                    check_token_ids(arr, self.model_config.vocab_size)
                    tok, tgt = arr[:, :-1], arr[:, 1:].copy()
                tgt[~real] = -100
                tok, tgt = torch.from_numpy(np.ascontiguousarray(tok)), torch.from_numpy(np.ascontiguousarray(tgt))
                with self._out_of_memory_names_the_knobs("validation"):
                    value = self.pm.evaluate(tok, tgt)
                if value is None:
                    ok = False
                    break
                if self._contributes:
                    loss_sum += value
                    count += (tgt != -100).sum().to(count.device)
            if not ok:
                continue
            loss_sum, count = reduce_sum(loss_sum, self.env), reduce_sum(count, self.env)
            mean = (loss_sum / count.clamp(min=1)).item()
            out[f"valid/{name}/loss"] = mean
            out[f"valid/{name}/ppl"] = math.exp(min(mean, 50.0))
        self.pm.train(True)
        return out

    # -- the run ----------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        from tqdm import tqdm

        if self.main:
            print(f"meditron: {self.model_config.n_params / 1e6:.1f}M parameters, {self.total_steps} steps "
                  f"(schedule {self.schedule_steps}, warmup {self.warmup_steps}), layout {self._layout()}, "
                  f"{self.dtype}, peak {self.peak / 1e12:.3g} TFLOP/s/device ({self.peak_source})", file=sys.stderr)
        bar = tqdm(total=self.total_steps, initial=self.step, disable=not (self.main and cfg.log.progress),
                   desc="train", unit="step", dynamic_ncols=True)
        last: dict[str, Any] = {}
        self._kill_after = int(os.environ.get(KILL_ENV, "0") or 0)
        with StopRequest(parse_signals(cfg.checkpoint.on_signal), announce=self.main) as stop:
            while self.step < self.total_steps:
                last = self._step_and_record(stop, bar)
            bar.close()
            # From here a stop signal is noted and ignored: the final validation and save finish the run.
            if self.valid_sets and not (cfg.eval.interval and self.step % cfg.eval.interval == 0):
                final_valid = self.validate()
                if final_valid:
                    last = {**last, **final_valid}
                    self.metrics.write({"step": self.step, **final_valid})
            if cfg.checkpoint.save_final:
                self._save()
        self.metrics.close()
        return last

    def _step_and_record(self, stop: StopRequest, bar) -> dict[str, Any]:
        """One step with its validation, metrics row, progress and periodic checkpoint.

        When the ranks agree that a stop signal came (checked after the step, and again after a
        periodic save, so a signal during the save stops at that checkpoint rather than one step and
        one save later), this step is saved and TrainingStopped raised.
        """
        cfg = self.cfg
        row = self.train_step()
        validated = bool(cfg.eval.interval and self.step % cfg.eval.interval == 0 and self.valid_sets)
        if validated:
            row.update(self.validate())
        signum = stop.agreed(self.env.distributed, self.env.device)
        logged = self.step % cfg.log.interval == 0 or self.step == self.total_steps or signum
        if logged or validated or row["skipped"] or "rollback_to" in row:  # whatever log.interval
            self.metrics.write(row)
        bar.update(1)
        bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.2e}", tok_s=f"{row['tokens_per_s']:.0f}")
        if signum:
            self._stop_with_checkpoint(signum, bar)
        if cfg.checkpoint.interval and self.step % cfg.checkpoint.interval == 0 and self.step < self.total_steps:
            self._save_pending = True
        # No periodic checkpoint while steps fail: it would hold the weights that failed (skipped steps
        # change nothing) and become the rollback's target. The save waits for the next finite step.
        # (A stop signal's save and the final save still happen, to keep the data position.)
        if self._save_pending and not row["skipped"] and self.step < self.total_steps:
            self._save_pending = False
            saved = self._save()
            signum = stop.agreed(self.env.distributed, self.env.device)
            if signum:
                self._stop_with_checkpoint(signum, bar, saved)
        if self.step == self._kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
        return row

    def _save(self) -> Path:
        return self.ckpt.save(self.step, self.pm.state_module, self.optimizer, self._train_state(), self._meta())

    def _stop_with_checkpoint(self, signum: int, bar, saved: Path | None = None) -> None:
        """Stop after this step: save it (unless just saved) and leave (`train` closes the process group)."""
        bar.close()
        path = saved or self._save()
        self.metrics.close()
        raise TrainingStopped(signum, self.step, path)

    def _layout(self) -> str:
        p = self.cfg.parallel
        hsdp = f"(replicate {p.dp_replicate})" if p.dp_replicate > 1 else ""
        return f"dp{p.dp}{hsdp}×tp{p.tp}×pp{p.pp}"

    def close(self) -> None:
        if self.env.distributed and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def _blend(sources: list[dict[str, Any]]) -> list[tuple[str, float]]:
    """Sources as (name, share of the blend): what orders the data, without the folder a moved corpus
    changes (an unnamed source is known by its file name) or the scale of the weights."""
    total = sum(float(s.get("weight", 1.0)) for s in sources) or 1.0
    return [(s.get("name") or Path(s.get("path", "")).name, round(float(s.get("weight", 1.0)) / total, 12))
            for s in sources]


# Settings that decide which sample a given step reads, per data mode (compared across a resume).
_COMMON_ORDER_KEYS = ("train.seq_len", "data.mode", "data.seed", "data.synthetic")
_DATA_ORDER_KEYS = {
    "pretrain": _COMMON_ORDER_KEYS + ("data.valid_fraction", "data.append_eod", "data.eod_id", "data.sources"),
    "sft": _COMMON_ORDER_KEYS + ("data.add_bos",),
}


def _folder_tokenizer(folder: Path, override: str | None):
    """The tokenizer stored with a model folder, unless model.tokenizer names one (loaded later)."""
    if override or not ((folder / "tokenizer.json").is_file() or (folder / "tokenizer.model").is_file()):
        return None
    from meditron.model.tokenizer import load_tokenizer

    return load_tokenizer(folder)


def _grow_vocab(model, new_vocab: int) -> None:
    """Grow the whole model's embeddings, or those of the pipeline stage that holds them."""
    if new_vocab <= model.config.vocab_size:
        return
    if model.tok_embeddings is not None and model.output is not None:
        from meditron.model.weights import resize_embeddings

        resize_embeddings(model, new_vocab)
    else:
        _resize_stage(model, new_vocab)


def _resize_stage(model, new_vocab: int) -> None:
    """Grow the embedding or output matrix a pipeline stage holds (new rows = mean of the old)."""
    old = model.config.vocab_size
    for module in (model.tok_embeddings, model.output):
        if module is None:
            continue
        w = module.weight.detach()
        module.weight = torch.nn.Parameter(torch.cat([w, w.mean(0, keepdim=True).expand(new_vocab - old, -1)], 0))
    model.config.vocab_size = new_vocab


def _pad(tok: np.ndarray, tgt: np.ndarray, length: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    extra = length - tok.shape[1]
    return (np.pad(tok, ((0, 0), (0, extra)), constant_values=pad_id),
            np.pad(tgt, ((0, 0), (0, extra)), constant_values=-100))


def train(cfg: TrainConfig, out: str | Path) -> dict[str, Any]:
    """Run (or resume) training; returns the last step's metrics."""
    trainer = Trainer(cfg, out)
    try:
        result = trainer.run()
    except TrainingStopped:
        trainer.close()     # every rank stopped at the same step, so the final barrier is met
        raise
    trainer.close()
    return result
