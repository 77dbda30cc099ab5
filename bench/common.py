"""Shared helpers for the benchmark scripts: machine description, peaks measured in the same run,
interleaved timing, and appending a dated entry to BENCHMARKS.md."""

from __future__ import annotations

import datetime as dt
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parents[1]


def machine() -> str:
    cpu = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}{gpu}"


def copy_bandwidth_gbs(nbytes: int = 256 * 2**20, repeats: int = 5) -> float:
    """Memory bandwidth of a large tensor copy (bytes read + written per second), best of repeats."""
    a = torch.empty(nbytes // 4)
    b = torch.empty_like(a)
    b.copy_(a)
    best = min(_timed(lambda: b.copy_(a)) for _ in range(repeats))
    return 2 * nbytes / best / 1e9


def matmul_peak_gflops(n: int = 2048, repeats: int = 5) -> float:
    """fp32 matmul throughput of this machine (best of repeats), the roofline for compute-bound work."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interleaved(runs: dict[str, Callable[[], object]], repeats: int = 3) -> dict[str, float]:
    """Median wall time of each callable, alternating between them so load noise hits all alike."""
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            times[name].append(_timed(fn))
    return {k: statistics.median(v) for k, v in times.items()}


def record(title: str, table: str, notes: str = "", details: tuple[str, ...] = ()) -> None:
    """Print the table and append a dated entry with the exact command to BENCHMARKS.md.

    `details` are further bullet lines after the machine (workload, mode, ...)."""
    print(table)
    path = ROOT / "BENCHMARKS.md"
    if not path.exists():
        path.write_text("# Benchmarks\n\nEach entry: command, date, machine, our figure, the baseline's figure "
                        "measured in the same run, and the ratio.\n")
    command = "python " + " ".join([os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])
    entry = (f"\n## {title}\n\n- command: `{command}`\n- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC\n"
             f"- machine: {machine()}\n" + "".join(f"- {d}\n" for d in details) + f"\n{table}\n")
    if notes:
        entry += f"\n{notes}\n"
    with path.open("a") as f:
        f.write(entry)
