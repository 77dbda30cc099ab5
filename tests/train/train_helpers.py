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
