"""Helpers for training tests (imported by name; fixtures live in conftest.py): run `meditron train` on the tiny recipe in-process or under torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "tiny.yaml"
RUN_TIMEOUT = 180


def train_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"  # several ranks share two cores: no thread oversubscription
    env.update(extra or {})
    return env


def train_command(out: Path, overrides: list[str], nproc: int = 1) -> list[str]:
    """`meditron train configs/tiny.yaml --out OUT --set …`, under torchrun when nproc > 1."""
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "meditron"]
    else:
        cmd = [sys.executable, "-m", "meditron"]
    cmd += ["train", str(TINY), "--out", str(out)]
    return cmd + ["--set", *overrides] if overrides else cmd


def run_train(out: Path, overrides: list[str], nproc: int = 1, env: dict[str, str] | None = None,
              check: bool = True) -> subprocess.CompletedProcess:
    """Run `train_command` to the end."""
    proc = subprocess.run(train_command(out, overrides, nproc), env=train_env(env), capture_output=True, text=True, timeout=RUN_TIMEOUT, cwd=REPO)
    if check and proc.returncode != 0:
        raise AssertionError(f"training failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def losses(out: Path) -> dict[int, float]:
    """step -> training loss from metrics.jsonl (validation-only rows skipped)."""
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines() if l.strip()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def vocab_parallel_loss_worker(rank: int, store: str, out: str) -> None:
    """One of 2 gloo ranks computing the chunked loss on its shard of a 9-token vocabulary (5 + 4 rows):
    default chunks sized as if 400 bytes were the budget (20 rows from the 5-row shard; the 4-row shard
    alone would give 25), and chunks of 16 rows, of which the first ones hold only ignored targets and
    one holds targets on rank 1's shard only. Saves (loss, grad_h, grad_w) per chunking to OUT/RANK.pt."""
    import datetime
    import math

    import torch
    import torch.distributed as dist

    from meditron.train import loss as L

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=60))
    torch.set_num_threads(1)
    h, w, t = vocab_parallel_loss_inputs()
    shard = math.ceil(w.shape[0] / 2)
    lo, hi = rank * shard, min(w.shape[0], (rank + 1) * shard)
    L.CHUNK_BYTES["cpu"] = 400
    results = {}
    for name, chunk in (("default", None), ("16", 16)):
        hr, wr = h.clone().requires_grad_(), w[lo:hi].clone().requires_grad_()
        loss = L.linear_cross_entropy(hr, wr, t, 0.5, chunk, lo, dist.group.WORLD, shard)
        loss.backward()
        results[name] = (loss.detach(), hr.grad, wr.grad)
    torch.save(results, Path(out) / f"{rank}.pt")
    dist.destroy_process_group()


def vocab_parallel_loss_inputs():
    import torch

    g = torch.Generator().manual_seed(0)
    h, w = torch.randn(70, 6, generator=g), torch.randn(9, 6, generator=g)
    t = torch.randint(0, 9, (70,), generator=g)
    t[:40] = -100
    t[50:60] = 8
    return h, w, t
