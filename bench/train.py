"""Training throughput and memory: meditron vs Hugging Face `Trainer`, continuing SmolLM2-135M on CPU.

    PYTHONPATH=src python bench/train.py [--steps 5] [--batch 4] [--seq 512] \
        [--variants selective+compile,none] [--hf-variants eager,compile] [--rounds 2]

Same weights (the embedded SmolLM2-135M-Instruct, as a Hugging Face folder for transformers), same
batch × sequence, fp32, AdamW (0.9, 0.95, eps 1e-5, wd 0.1), clip 1.0, same CPU, same run. Each
trainer runs in its own subprocess so its peak RSS is its own; each times a 1024³ fp32 matmul just
before training, so its throughput can be read as a fraction of the machine's fp32 peak at that
moment. Reported: median tokens/s over the steps after the first, peak RSS, and the first step's time
(which holds torch.compile's compilation: every child gets an empty inductor cache). A meditron variant
is `AC[+compile]` (AC = none, selective, full); HF variants are `eager` (the baseline every ratio is
taken against) and `compile` (`TrainingArguments(torch_compile=True)`). With --rounds N the whole list
runs N times, reversed every other round, and each row is the mean over rounds. Appends to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from common import machine, matmul_peak_gflops  # noqa: E402


def flops_per_token(seq: int) -> float:
    from meditron.model.config import preset
    from meditron.train.metrics import flops_per_token as fpt

    return fpt(preset("smollm2-135m"), seq)


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


# -- the two trainers, each run as `bench/train.py --child NAME` --------------------------------------
def child_meditron(args) -> dict:
    from meditron.train.config import load_train_config
    from meditron.train.loop import Trainer

    out = Path(tempfile.mkdtemp(prefix="bench-meditron-"))
    ac, _, compiled = args.ac.partition("+")
    cfg = load_train_config(REPO / "configs" / "nano.yaml", [
        f"train.steps={args.steps}", f"train.seq_len={args.seq}", f"train.micro_batch={args.batch}",
        f"train.global_batch={args.batch}", "data.valid_fraction=0", "eval.interval=0",
        "checkpoint.interval=0", "checkpoint.save_final=false", "log.tensorboard=false", "log.progress=false",
        f"parallel.activation_checkpoint={ac}", f"train.compile={str(compiled == 'compile').lower()}",
        "optim.warmup_steps=1", "optim.schedule_factor=1",
        f"log.peak_flops={args.peak}",
    ])
    trainer = Trainer(cfg, out)
    peak = matmul_peak_gflops(n=1024) * 1e9
    trainer.run()
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    shutil.rmtree(out, ignore_errors=True)
    times = [r["step_time_s"] for r in rows if "step_time_s" in r]
    return {"step_times": times[1:], "first_step_s": times[0], "peak_flops": peak,
            "loss": [r["loss"] for r in rows if "loss" in r]}


def child_hf(args) -> dict:
    import numpy as np
    import torch
    from transformers import LlamaForCausalLM, Trainer, TrainerCallback, TrainingArguments

    from meditron.model.hub import resolve

    model = LlamaForCausalLM.from_pretrained(resolve("smollm2-135m"), dtype=torch.float32)
    rng = np.random.default_rng(0)
    n = args.batch * args.steps
    ids = rng.integers(8, 49152, size=(n, args.seq))
    data = [{"input_ids": torch.tensor(r), "labels": torch.tensor(r)} for r in ids]
    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            times.append(time.perf_counter() - self.t0)

    targs = TrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="bench-hf-"), per_device_train_batch_size=args.batch,
        max_steps=args.steps, learning_rate=3e-4, weight_decay=0.1, adam_beta1=0.9, adam_beta2=0.95,
        adam_epsilon=1e-5, max_grad_norm=1.0, lr_scheduler_type="cosine", warmup_steps=1, logging_steps=1,
        save_strategy="no", report_to=[], use_cpu=True, dataloader_num_workers=0, disable_tqdm=True,
        torch_compile=args.ac == "compile",
    )
    trainer = Trainer(model=model, args=targs, train_dataset=data, callbacks=[Clock()])
    peak = matmul_peak_gflops(n=1024) * 1e9
    trainer.train()
    shutil.rmtree(targs.output_dir, ignore_errors=True)
    loss = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"step_times": times[1:], "first_step_s": times[0], "peak_flops": peak, "loss": loss,
            "optim": str(targs.optim)}


def check_jobs(jobs: list[tuple[str, str]], args) -> None:
    """Refuse variant names the children would not understand (they would silently run eager)."""
    for name, v in jobs:
        ac, _, extra = v.partition("+")
        ok = v in ("eager", "compile") if name == "hf" else ac in ("none", "selective", "full") and extra in ("", "compile")
        if not ok:
            raise SystemExit(f"unknown {'--hf-variants' if name == 'hf' else '--variants'} entry {v!r}")
    if ("hf", "eager") not in jobs:
        raise SystemExit("--hf-variants must include eager: it is the baseline of every ratio")
    if args.rounds < 1:
        raise SystemExit("--rounds must be >= 1")
    if args.pair and (args.rounds > 1 or args.hf_variants != "eager"):
        raise SystemExit("--pair runs each meditron variant beside one HF eager run: no --rounds, no --hf-variants")


def table_rows(runs_by_label: dict[str, list[dict]], base: list[dict], tokens: int, fpt: float) -> list[str]:
    """One Markdown row per label: means over its runs, ratios against the mean of `base`."""
    base_tps = statistics.mean(tokens / statistics.median(r["step_times"]) for r in base)
    base_rss = statistics.mean(r["peak_rss_gb"] for r in base)
    lines = []
    for lab, rs in runs_by_label.items():
        tps_each = [tokens / statistics.median(r["step_times"]) for r in rs]
        tps, rss = statistics.mean(tps_each), statistics.mean(r["peak_rss_gb"] for r in rs)
        peak = statistics.mean(r["peak_flops"] for r in rs)
        first = statistics.mean(r["first_step_s"] for r in rs)
        lines.append(f"| {lab} | {tps:.1f} | {', '.join(f'{x:.1f}' for x in tps_each)} | {tps * fpt / peak:.0%} | "
                     f"{peak / 1e9:.0f} | {rss:.2f} | {first:.1f} | {tps / base_tps:.2f}× | {rss / base_rss:.2f}× |")
    return lines


def label(name: str, variant: str) -> str:
    if name == "hf":
        return "HF Trainer" if variant == "eager" else f"HF Trainer ({variant})"
    return f"meditron ({variant})"


def child_cmd(name: str, args, extra: list[str], core: int | None, cache: str) -> tuple[list[str], dict]:
    cmd = [sys.executable, __file__, "--child", name, "--steps", str(args.steps), "--batch", str(args.batch),
           "--seq", str(args.seq), *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "TORCHINDUCTOR_CACHE_DIR": cache}  # compile from scratch
    if core is not None:  # one core, one thread each: both trainers see the same share of a shared machine
        cmd = ["taskset", "-c", str(core), *cmd]
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return cmd, env


def run_children(jobs: list[tuple[str, list[str]]], args) -> list[dict]:
    """Run the trainers one after the other, or (--pair) side by side, each pinned to its own core."""
    with tempfile.TemporaryDirectory(prefix="bench-inductor-") as caches:
        return _run_children(jobs, args, caches)


def _run_children(jobs: list[tuple[str, list[str]]], args, caches: str) -> list[dict]:
    results = []
    if args.pair:
        procs = []
        for i, (name, extra) in enumerate(jobs):
            cmd, env = child_cmd(name, args, extra, i % (os.cpu_count() or 1), f"{caches}/{i}")
            procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
        outs = [p.communicate(timeout=args.timeout) for p in procs]
        for (name, _), p, (out, err) in zip(jobs, procs, outs):
            if p.returncode != 0:
                raise SystemExit(f"{name} failed:\n{err[-3000:]}")
            results.append(json.loads(out.strip().splitlines()[-1]))
        return results
    for i, (name, extra) in enumerate(jobs):
        cmd, env = child_cmd(name, args, extra, None, f"{caches}/{i}")
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout)
        if proc.returncode != 0:
            raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--ac", default="none", help="child option: the variant (meditron AC[+compile], HF eager|compile)")
    ap.add_argument("--peak", type=float, default=190e9, help="child option: stated CPU peak for the MFU column")
    ap.add_argument("--variants", default="selective+compile,none",
                    help="meditron variants: AC[+compile], AC = none | selective | full")
    ap.add_argument("--hf-variants", default="eager", help="HF Trainer variants: eager (the baseline), compile")
    ap.add_argument("--rounds", type=int, default=1, help="run the list this many times, alternating its order")
    ap.add_argument("--timeout", type=int, default=3600)
    ap.add_argument("--child")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--pair", action="store_true",
                    help="run each meditron variant at the same time as an HF Trainer run, each pinned to one core "
                         "with one thread (fair on a machine other jobs share)")
    args = ap.parse_args()
    if args.child:
        res = child_meditron(args) if args.child == "meditron" else child_hf(args)
        res["peak_rss_gb"] = peak_rss_gb()
        print(json.dumps(res))
        return

    from meditron.model.hub import resolve

    resolve("smollm2-135m")  # convert the embedded GGUF once, outside any measurement
    tokens = args.batch * args.seq
    fpt = flops_per_token(args.seq)
    load = os.getloadavg()[0]
    jobs = [("meditron", v) for v in args.variants.split(",")] + [("hf", v) for v in args.hf_variants.split(",")]
    check_jobs(jobs, args)
    if args.pair:  # each meditron variant side by side with its own HF Trainer run: ratios within each pair
        comparisons = []
        for job in [j for j in jobs if j[0] == "meditron"]:
            med, hf = run_children([(name, ["--ac", v]) for name, v in (job, ("hf", "eager"))], args)
            comparisons.append(({label(*job): [med], f"HF Trainer (beside {job[1]})": [hf]}, [hf]))
    else:  # one after the other; every other round in reverse order, so drift hits both sides alike
        runs: dict[str, list[dict]] = {}  # label -> one result per round
        for r in range(args.rounds):
            order = jobs if r % 2 == 0 else jobs[::-1]
            for job, res in zip(order, run_children([(name, ["--ac", v]) for name, v in order], args)):
                runs.setdefault(label(*job), []).append(res)
        base = runs.pop("HF Trainer")
        comparisons = [({**runs, "HF Trainer": base}, base)]
    header = ("| trainer | tokens/s | tokens/s per run | fraction of fp32 matmul peak | matmul peak GFLOP/s | "
              "peak RSS GB | first step s | tok/s vs HF | RSS vs HF |")
    lines = [header, "|---|---|---|---|---|---|---|---|---|"]
    for runs_by_label, base in comparisons:
        lines += table_rows(runs_by_label, base, tokens, fpt)
    table = "\n".join(lines)
    print(table)
    if args.no_write:
        return
    cmd = "PYTHONPATH=src python bench/train.py " + " ".join(sys.argv[1:])
    if args.pair:
        mode = ("side by side, each pinned to one core with one thread; "
                "each meditron row against the HF run beside it")
    else:
        mode = "one after the other, all cores" + (
            f", {args.rounds} rounds in alternating order, rows are means over rounds" if args.rounds > 1 else "")
    entry = (
        f"\n## Training throughput: meditron vs HF Trainer (SmolLM2-135M, fp32, CPU)\n\n"
        f"- command: `{cmd.strip()}`\n- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}\n"
        f"- machine: {machine()}, load average {load:.1f} at start"
        f"{' (other jobs ran alongside)' if load > (os.cpu_count() or 1) else ''}\n"
        f"- workload: batch {args.batch} × {args.seq} tokens, AdamW, clip 1.0, {args.steps} steps, median of steps 2+; "
        f"FLOPs/token {fpt / 1e6:.0f}M (6N + attention); each trainer in its own subprocess (peak RSS includes loading)\n"
        f"- mode: {mode}; each child starts with an empty inductor cache, so the first step holds any compilation; "
        f"the matmul peak is a 1024³ fp32 matmul timed in each trainer's process just before it trains\n\n"
        f"{table}\n"
    )
    path = REPO / "BENCHMARKS.md"
    if not path.exists():
        path.write_text("# Benchmarks\n")
    with open(path, "a") as f:
        f.write(entry)


if __name__ == "__main__":
    main()
