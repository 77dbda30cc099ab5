"""Model FLOPs utilisation of `meditron train` on one GPU: a ~1B-parameter Llama in bf16, beside HF `Trainer`.

    PYTHONPATH=src python bench/mfu.py [--preset llama-3.2-1b] [--seq 2048] [--micro-batch 8] [--steps 15] \
        [--ac none] [--no-compile] [--no-hf]

Both trainers build a randomly initialised model of the preset's shape (1.24B parameters for
llama-3.2-1b; each with its own initialiser) and train it on tokens that do not matter for speed
(meditron: its synthetic shards; HF: random ids), bf16 autocast over fp32 master weights, AdamW
and clip 1.0, one micro-batch per step. meditron runs its own Trainer (the `meditron train` code path: compiled blocks,
the chunked loss that never holds the 128k-vocabulary logits); HF `Trainer` runs eager with SDPA
attention, its defaults. Each runs in its own subprocess, one after the other, with the GPU to itself.

MFU = tokens/s × FLOPs/token ÷ the device's data-sheet dense peak (`meditron.train.metrics.PEAK_FLOPS`;
FLOPs/token = 6N + attention, PaLM). The first `--skip` steps (compilation, allocator warm-up) are left
out; the rest give a median step time. A dense bf16 matmul timed in the same run shows what the
device reaches at best. The issue's target is 45% MFU on one H100. On a CPU the script runs too
(fp32, `--preset tiny-gqa`) as a smoke check of the same code path. Appends to BENCHMARKS.md.

Made to fit one 10-minute command on a lent GPU machine: the whole run keeps within `--budget`
seconds (default 540; each child gets at most `--timeout`, 240, and what is left), each result is
printed the moment its child ends (a run killed later still shows it), the probe child reads the
device's name and peak and checks that torch.compile works there (if not, meditron runs uncompiled
and says so), and an HF baseline that runs out of memory is retried once, time allowing, with half
the micro-batch and 2 accumulation steps (same tokens per step). On such a machine, copy the
appended BENCHMARKS.md back: `PYTHONPATH=src python bench/mfu.py; cp BENCHMARKS.md $OUT/`.

Step times: meditron's are its Trainer's own (`step_time_s`: forward, backward, clip, optimizer);
HF's run from one step's end to the next, so they also hold the Trainer's per-step callbacks and
logging, which are part of what using it costs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "src"))
from common import record  # noqa: E402

TARGET_MFU = 0.45


def workload(args):
    """(ModelConfig, torch device, autocast dtype) of this run."""
    import torch

    from meditron.model.config import preset

    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    return preset(args.preset, max_seq_len=max(args.seq, 256)), device, dtype


def child_meditron(args) -> dict:
    from meditron.train.config import load_train_config
    from meditron.train.loop import Trainer

    out = Path(tempfile.mkdtemp(prefix="bench-mfu-"))
    cfg = load_train_config(REPO / "configs" / "tiny.yaml", [
        f"model.preset={args.preset}", f"model.overrides={{max_seq_len: {max(args.seq, 256)}}}", "model.seed=0",
        f"train.steps={args.steps}", f"train.seq_len={args.seq}", f"train.micro_batch={args.micro_batch}",
        f"train.global_batch={args.micro_batch}", f"train.device={args.device}",
        f"train.precision={'bf16' if args.device.startswith('cuda') else 'fp32'}",
        f"train.compile={str(args.compile).lower()}", f"parallel.activation_checkpoint={args.ac}",
        "data.valid_fraction=0", "eval.interval=0", "checkpoint.interval=0", "checkpoint.save_final=false",
        "optim.lr=3e-4", "optim.min_lr=3e-5", "optim.warmup_steps=1",
    ])
    Trainer(cfg, out).run()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    shutil.rmtree(out, ignore_errors=True)
    return {"step_times": [r["step_time_s"] for r in rows if "step_time_s" in r],
            "memory_gb": max(r["memory_gb"] for r in rows if "memory_gb" in r)}


def child_hf(args) -> dict:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainerCallback, TrainingArguments

    from meditron.train.metrics import memory_gb

    config, device, dtype = workload(args)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**{**config.to_hf("float32"), "use_cache": False}, attn_implementation="sdpa"))
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(8, config.vocab_size, (args.micro_batch * args.steps, args.seq), generator=gen)
    data = [{"input_ids": r, "labels": r} for r in ids]
    times: list[float] = []

    class Clock(TrainerCallback):
        """Time from one optimizer step's end to the next (with accumulation, a step is several batches)."""

        def _now(self) -> float:
            if device.type == "cuda":
                torch.cuda.synchronize()
            return time.perf_counter()

        def on_train_begin(self, a, state, control, **kw):
            self.t0 = self._now()

        def on_step_end(self, a, state, control, **kw):
            t = self._now()
            times.append(t - self.t0)
            self.t0 = t

    targs = TrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="bench-mfu-hf-"),
        per_device_train_batch_size=args.micro_batch // args.hf_accum, gradient_accumulation_steps=args.hf_accum,
        max_steps=args.steps, learning_rate=3e-4, weight_decay=0.1, adam_beta1=0.9, adam_beta2=0.95,
        adam_epsilon=1e-5, max_grad_norm=1.0, lr_scheduler_type="cosine", warmup_steps=1, logging_steps=1,
        save_strategy="no", report_to=[], use_cpu=device.type == "cpu", bf16=dtype == torch.bfloat16,
        dataloader_num_workers=0, disable_tqdm=True,
    )
    try:
        Trainer(model=model, args=targs, train_dataset=data, callbacks=[Clock()]).train()
    except (torch.cuda.OutOfMemoryError, RuntimeError) as e:   # allocator failures also come as RuntimeError
        if not isinstance(e, torch.cuda.OutOfMemoryError) and "out of memory" not in str(e).lower() \
                and "ALLOC_FAILED" not in str(e):
            raise
        return {"error": f"out of memory at micro-batch {args.micro_batch // args.hf_accum}: {str(e)[:120]}",
                "oom": True}
    finally:
        shutil.rmtree(targs.output_dir, ignore_errors=True)
    return {"step_times": times, "memory_gb": memory_gb(device)}


def child_probe(args) -> dict:
    """The device's data-sheet peak, the best it does on one large dense matmul in the run's dtype, and
    whether torch.compile works there (on a GPU it needs Triton and a C compiler), all in a child so the
    parent never holds a CUDA context while the trainers run."""
    import torch

    from meditron.train.metrics import measure_matmul_flops, peak_flops

    _, device, dtype = workload(args)
    peak, source = peak_flops(device, dtype)
    n = 8192 if device.type == "cuda" else 1024
    result = {"flops": measure_matmul_flops(n, repeats=5, device=device, dtype=dtype), "peak": peak,
              "peak_source": source, "compile_error": None}
    if args.compile and device.type == "cuda":
        try:
            torch.compile(lambda x: x.sin() + 1)(torch.randn(64, device=device))
        except Exception as e:   # noqa: BLE001 - any failure means: run uncompiled, and say why
            result["compile_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}" if str(e) else type(e).__name__
    return result


def run_child(name: str, argv: list[str], timeout: float) -> dict:
    """The child's JSON result, or {"error": why} (a baseline that runs out of memory is a result)."""
    if timeout < 20:
        return {"error": "not run: the time budget (--budget) is spent"}
    timeout = int(timeout)
    try:
        proc = subprocess.run([sys.executable, __file__, "--child", name, *argv], capture_output=True, text=True,
                              timeout=timeout, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    except subprocess.TimeoutExpired:
        return {"error": f"no result in {timeout} s"}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        print(f"{name} failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
        return {"error": (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1][:200]}
    return json.loads(lines[-1])


def announce(name: str, res: dict, skip: int, tokens: int, fpt: float, peak: float) -> None:
    """One line per finished child, flushed at once: a later crash or kill cannot take it away."""
    if "error" in res:
        print(f"[{name}] failed: {res['error']}", flush=True)
        return
    tps = tokens / statistics.median(res["step_times"][skip:])
    print(f"[{name}] {tps:,.0f} tokens/s, MFU {tps * fpt / peak:.1%}, peak memory {res['memory_gb']:.1f} GB, "
          f"first step {res['step_times'][0]:.1f} s, step times {[round(t, 3) for t in res['step_times']]}", flush=True)


def row(name: str, res: dict, skip: int, tokens: int, fpt: float, peak: float, probe: float) -> tuple[str, float]:
    timed = res["step_times"][skip:]
    tps = tokens / statistics.median(timed)
    mfu = tps * fpt / peak
    return (f"| {name} | {tps:,.0f} | {tps * fpt / 1e12:.3g} | **{mfu:.1%}** | {tps * fpt / probe:.0%} | "
            f"{res['memory_gb']:.1f} | {res['step_times'][0]:.1f} |"), mfu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="llama-3.2-1b")
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--micro-batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--skip", type=int, default=3, help="first steps left out (compilation, warm-up)")
    ap.add_argument("--ac", default="none", choices=["none", "selective", "full"])
    ap.add_argument("--no-compile", dest="compile", action="store_false")
    ap.add_argument("--no-hf", dest="hf", action="store_false", help="skip the HF Trainer baseline")
    ap.add_argument("--device", default=None, choices=["cuda", "cpu"], help="cuda (default when present) or cpu")
    ap.add_argument("--timeout", type=int, default=240, help="at most this many seconds for each child")
    ap.add_argument("--budget", type=int, default=540, help="seconds for the whole run (children get what is left)")
    ap.add_argument("--hf-accum", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.child:
        print(json.dumps({"meditron": child_meditron, "hf": child_hf, "probe": child_probe}[args.child](args)))
        return
    if args.steps <= args.skip + 1:
        raise SystemExit("--steps must exceed --skip by at least 2")

    from meditron.train.metrics import flops_per_token

    config, device, dtype = workload(args)
    fpt = flops_per_token(config, args.seq)
    tokens = args.micro_batch * args.seq
    argv = ["--preset", args.preset, "--seq", str(args.seq), "--micro-batch", str(args.micro_batch),
            "--steps", str(args.steps), "--ac", args.ac, "--device", args.device]
    deadline = time.monotonic() + args.budget

    def time_for(cap: float) -> float:
        return min(cap, deadline - time.monotonic() - 5)

    compile_flag = [] if args.compile else ["--no-compile"]
    probed = run_child("probe", argv + compile_flag, time_for(120))
    if "flops" not in probed:
        raise SystemExit("the matmul probe failed (see above)")
    probe, peak, source = probed["flops"], probed["peak"], probed["peak_source"]
    print(f"[probe] dense matmul {probe / 1e12:.3g} TFLOP/s; peak {peak / 1e12:.3g} TFLOP/s ({source})", flush=True)
    if probed["compile_error"]:
        print(f"[probe] torch.compile fails on this device ({probed['compile_error']}): meditron runs uncompiled",
              flush=True)
        compile_flag = ["--no-compile"]
    name = f"meditron ({args.ac}{'' if compile_flag else '+compile'})"
    runs = {name: run_child("meditron", argv + compile_flag, time_for(args.timeout))}
    announce(name, runs[name], args.skip, tokens, fpt, peak)
    if args.hf:
        name, res = "HF Trainer (eager, sdpa)", run_child("hf", argv, time_for(args.timeout))
        if res.get("oom") and args.micro_batch % 2 == 0 and time_for(args.timeout) >= 60:
            announce(name, res, args.skip, tokens, fpt, peak)
            name = f"HF Trainer (eager, sdpa, micro-batch {args.micro_batch // 2} × 2 accumulated)"
            res = run_child("hf", [*argv, "--hf-accum", "2"], time_for(args.timeout))
        runs[name] = res
        announce(name, res, args.skip, tokens, fpt, peak)
    header = ("| trainer | tokens/s | TFLOP/s | MFU (of data-sheet peak) | of the dense matmul measured | "
              "peak memory GB | first step s |")
    lines, mfus = [header, "|---|---|---|---|---|---|---|"], {}
    for name, res in runs.items():
        if "error" in res:
            lines.append(f"| {name} | failed: {res['error'].replace('|', '/')} | | | | | |")
            continue
        line, mfus[name] = row(name, res, args.skip, tokens, fpt, peak, probe)
        lines.append(line)
    summary = [f"Peak: {peak / 1e12:.3g} TFLOP/s ({source}); dense {str(dtype).removeprefix('torch.')} matmul "
               f"measured in this run: {probe / 1e12:.3g} TFLOP/s; target MFU {TARGET_MFU:.0%}."]
    names = list(mfus)
    if len(names) == 2:
        summary.append(f"meditron vs HF Trainer: {mfus[names[0]] / mfus[names[1]]:.2f}× tokens/s.")
    table = "\n".join(lines + [""] + summary)
    if args.no_write:
        print(table)
        return
    record(f"Training MFU: meditron vs HF Trainer ({args.preset}, {str(dtype).removeprefix('torch.')}, "
           f"{device.type.upper()})", table, details=(
               f"workload: {config.n_params / 1e9:.3g}B parameters, batch {args.micro_batch} × {args.seq} tokens, "
               f"FLOPs/token {fpt / 1e9:.3g}G (6N + attention), {args.steps} steps, median of steps {args.skip + 1}+; "
               "each trainer in its own subprocess, one after the other",))


if __name__ == "__main__":
    main()
