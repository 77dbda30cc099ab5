"""Throughput accounting (tokens/s, MFU), memory, and the metrics writers (JSONL, TensorBoard, PNG plots).

FLOPs per token follow the PaLM appendix: 6·N for the matrix multiplies (N = parameters used
in matmuls: the blocks plus the output projection, not the embedding lookup) plus 12·L·H·Q·T
for attention scores and values (L layers, H·Q = heads × head size, T the sequence length).
"""

from __future__ import annotations

import json
import math
import re
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch

from meditron.model.config import ModelConfig

# Dense peak FLOP/s per device from the vendors' data sheets (no sparsity).
PEAK_FLOPS = {  # name fragment: (bf16, fp32)
    "H200 NVL": (835e12, 60e12),
    "H200": (989e12, 67e12),
    "GH200": (989e12, 67e12),  # its H100/H200 GPU at SXM clocks
    "H100 PCIe": (756e12, 51e12),
    "H100 NVL": (835e12, 60e12),
    "H100": (989e12, 67e12),  # SXM
    "A100": (312e12, 19.5e12),
    "L40S": (362e12, 91.6e12),
    "L40": (181e12, 90.5e12),
    "L4": (121e12, 30.3e12),
    "A10": (125e12, 31.2e12),
    "V100": (125e12, 15.7e12),  # fp16 tensor cores; no bf16
    "RTX 4090": (165e12, 82.6e12),
}


def flops_per_token(config: ModelConfig, seq_len: float, adapter_params: int | None = None) -> float:
    """Training FLOPs per token. With LoRA (`adapter_params` trainable, the base frozen) the base
    weights need no weight gradients: 4 FLOPs per base parameter, 6 per adapter parameter."""
    emb = config.vocab_size * config.dim
    matmul_params = config.n_params - (0 if config.tie_embeddings else emb) - config.dim
    attention = 12 * config.n_layers * config.n_heads * config.head_dim * seq_len
    if adapter_params is None:
        return 6.0 * matmul_params + attention
    return 4.0 * matmul_params + 6.0 * adapter_params + attention


def measure_matmul_flops(n: int = 2048, repeats: int = 3, device: str | torch.device = "cpu",
                         dtype: torch.dtype = torch.float32) -> float:
    """Achieved FLOP/s of an n×n×n matmul: the practical peak on CPUs, where no data sheet applies."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        a @ b
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def data_sheet_key(device_name: str) -> str | None:
    """The PEAK_FLOPS entry naming this device: whole words, the longest first ("H100 PCIe" before
    "H100"; "L4" does not match an L40, nor "A10" an A10G, whose peaks differ)."""
    for key in sorted(PEAK_FLOPS, key=len, reverse=True):
        if re.search(rf"(?<![\w]){re.escape(key)}(?![\w])", device_name):
            return key
    return None


def peak_flops(device: torch.device, dtype: torch.dtype, override: float | None = None) -> tuple[float, str]:
    """(peak FLOP/s of one device, where the number comes from)."""
    if override:
        return float(override), "config log.peak_flops"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        key = data_sheet_key(name)
        if key:
            bf16, fp32 = PEAK_FLOPS[key]
            return (bf16 if dtype in (torch.bfloat16, torch.float16) else fp32), f"data sheet {key}"
        return measure_matmul_flops(8192, device=device, dtype=dtype), f"measured matmul on {name}"
    return measure_matmul_flops(1024, repeats=2), "measured fp32 matmul (CPU)"


def memory_gb(device: torch.device) -> float:
    """Peak memory: CUDA max allocated on GPU, the process's peak RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1e9 if sys.platform == "darwin" else 1e6)


class MetricsWriter:
    """metrics.jsonl (one object per step, flushed) and TensorBoard scalars, on rank 0 only."""

    def __init__(self, out: Path, enabled: bool, tensorboard: bool, resume_step: int = 0):
        self.enabled = enabled
        self.path = out / "metrics.jsonl"
        self.tb = None
        if not enabled:
            return
        if self.path.exists():  # drop rows a killed run wrote after its last checkpoint
            rows = [l for l in self.path.read_text().splitlines() if l.strip()]
            keep = [l for l in rows if _step_of(l) <= resume_step]
            self.path.write_text("".join(l + "\n" for l in keep))
        self.file = open(self.path, "a")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "tensorboard"), purge_step=resume_step + 1 if resume_step else None)
            except ImportError:
                print("meditron: tensorboard is not installed; metrics go to metrics.jsonl only", file=sys.stderr)

    def write(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps(strict_json(row), allow_nan=False) + "\n")
        self.file.flush()
        if self.tb is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.tb.add_scalar(key, value, row["step"])

    def close(self) -> None:
        if self.enabled:
            self.file.close()
            if self.tb is not None:
                self.tb.close()


def _step_of(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
        return 0


def strict_json(row: dict[str, Any]) -> dict[str, Any]:
    """Non-finite floats as null: bare NaN/Infinity are not JSON, and strict parsers (jq, JS) reject them."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        from meditron.errors import MeditronError

        raise MeditronError(f"{path} does not exist; pass the --out folder of a `meditron train` run")
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a crash
    return rows


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Loss (train and validation), learning rate and throughput curves of a run, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    every = read_metrics(run_dir)
    rows = [r for r in every if r.get("loss") is not None]  # training steps; skipped ones have loss null
    out = Path(out) if out else Path(run_dir) / "curves.png"
    steps = [r["step"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    axes[0].plot(steps, [r["loss"] for r in rows], label="train")
    valid_keys = sorted({k for r in every for k in r if k.startswith("valid/") and k.endswith("/loss")})
    for key in valid_keys:  # from every row: the end-of-run validation has a row of its own
        pts = [(r["step"], r[key]) for r in every if r.get(key) is not None]
        axes[0].plot(*zip(*pts), marker="o", label=key[len("valid/"):-len("/loss")])
    axes[0].set(title="loss", xlabel="step")
    axes[0].legend()
    axes[1].plot(steps, [r.get("lr", 0) for r in rows])
    axes[1].set(title="learning rate", xlabel="step")
    axes[2].plot(steps, [r.get("tokens_per_s", 0) for r in rows])
    axes[2].set(title="tokens/s", xlabel="step")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
