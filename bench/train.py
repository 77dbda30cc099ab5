"""Training throughput and memory: meditron vs Hugging Face `Trainer`, continuing SmolLM2-135M on CPU.

    PYTHONPATH=src python bench/train.py [--steps 8] [--batch 4] [--seq 512] \
        [--variants selective+compile,none] [--hf-variants eager,compile]

Same weights (the embedded SmolLM2-135M-Instruct, as a Hugging Face folder for transformers), same
batch × sequence, fp32, AdamW (0.9, 0.95, eps 1e-5, wd 0.1), clip 1.0, same CPU, same run.

The trainers run in lock-step. Each is its own subprocess (so its peak RSS is its own), all are loaded
at once, and then they take turns: one optimizer step each, round after round, the order reversed
every other round, every turn with all cores to itself while the others wait on a pipe. A shared
machine drifts by ±15-30% over minutes; steps run back to back see the same machine, so each round's
ratio (HF's step time over this trainer's) is a side-by-side measurement, and the table reports
their median and range. Each trainer's first turn times a 1024³ fp32 matmul, so its throughput can
be read as a fraction of the machine's fp32 peak; its first step holds torch.compile's compilation
(every child gets an empty inductor cache) and is reported apart. A meditron variant is
`AC[+compile]` (AC = none, selective, full); HF variants are `eager` (the baseline every ratio is
taken against) and `compile` (`TrainingArguments(torch_compile=True)`). Appends to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from common import matmul_peak_gflops, record  # noqa: E402


def flops_per_token(seq: int) -> float:
    from meditron.model.config import preset
    from meditron.train.metrics import flops_per_token as fpt

    return fpt(preset("smollm2-135m"), seq)


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


# -- the child's side of the lock-step: `bench/train.py --child NAME --turns GO_FD,STATUS_FD` ---------
class Turns:
    """Waits for the parent's go before each timed turn and reports when it is done.

    Messages on the status pipe: `r` (waiting at a turn), `d` (turn done), `e` (the turn raised). The
    parent reads EOF there when the child exits. Turn 0 is the matmul probe, turn 1 the first
    (compiling) step.
    """

    def __init__(self, spec: str):
        go, status = (int(x) for x in spec.split(","))
        for fd in (go, status):  # a grandchild holding the status pipe would hide this child's exit
            os.set_inheritable(fd, False)
        self.go = os.fdopen(go, "rb", buffering=0)
        self.status = os.fdopen(status, "wb", buffering=0)
        self.times: list[float] = []
        self.t0 = 0.0

    def begin(self) -> None:
        self.status.write(b"r")
        if self.go.read(1) != b"g":
            raise SystemExit("the benchmark's parent went away")
        self.t0 = time.perf_counter()

    def end(self) -> None:
        self.times.append(time.perf_counter() - self.t0)
        self.status.write(b"d")

    @contextmanager
    def turn(self):
        self.begin()
        try:
            yield
        except BaseException:
            self.status.write(b"e")  # the parent stops the whole run now, with this child's stderr
            raise
        self.end()

    def probe(self) -> float:
        with self.turn():
            return matmul_peak_gflops(n=1024) * 1e9

    def result(self, peak: float, loss: list[float]) -> dict:
        return {"step_times": self.times[1:], "peak_flops": peak, "loss": loss}


def child_meditron(args, turns: Turns) -> dict:
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
    step = trainer.train_step

    def one_turn():
        with turns.turn():
            return step()

    trainer.train_step = one_turn  # the loop calls it once per optimizer step
    peak = turns.probe()
    trainer.run()
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    shutil.rmtree(out, ignore_errors=True)
    return turns.result(peak, [r["loss"] for r in rows if "loss" in r])


def child_hf(args, turns: Turns) -> dict:
    import numpy as np
    import torch
    from transformers import LlamaForCausalLM, Trainer, TrainerCallback, TrainingArguments

    from meditron.model.hub import resolve

    model = LlamaForCausalLM.from_pretrained(resolve("smollm2-135m"), dtype=torch.float32)
    rng = np.random.default_rng(0)
    n = args.batch * args.steps
    ids = rng.integers(8, 49152, size=(n, args.seq))
    data = [{"input_ids": torch.tensor(r), "labels": torch.tensor(r)} for r in ids]

    class Turn(TrainerCallback):  # HF's step: from on_step_begin (batch in hand) to on_step_end (optimizer stepped)
        def on_step_begin(self, a, state, control, **kw):
            turns.begin()

        def on_step_end(self, a, state, control, **kw):
            turns.end()

    targs = TrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="bench-hf-"), per_device_train_batch_size=args.batch,
        max_steps=args.steps, learning_rate=3e-4, weight_decay=0.1, adam_beta1=0.9, adam_beta2=0.95,
        adam_epsilon=1e-5, max_grad_norm=1.0, lr_scheduler_type="cosine", warmup_steps=1, logging_steps=1,
        save_strategy="no", report_to=[], use_cpu=True, dataloader_num_workers=0, disable_tqdm=True,
        torch_compile=args.ac == "compile",
    )
    trainer = Trainer(model=model, args=targs, train_dataset=data, callbacks=[Turn()])
    peak = turns.probe()
    trainer.train()
    shutil.rmtree(targs.output_dir, ignore_errors=True)
    res = turns.result(peak, [h["loss"] for h in trainer.state.log_history if "loss" in h])
    return {**res, "optim": str(targs.optim)}


# -- the parent: start every trainer, then hand out turns -----------------------------------------------
class Child:
    """One trainer subprocess and the two pipes that pace it."""

    def __init__(self, name: str, variant: str, args, cache: str, logs: Path):
        self.name, self.variant, self.timeout = name, variant, args.timeout
        go_r, self.go_w = os.pipe()
        self.status_r, status_w = os.pipe()
        cmd = [sys.executable, __file__, "--child", name, "--ac", variant, "--steps", str(args.steps),
               "--batch", str(args.batch), "--seq", str(args.seq), "--turns", f"{go_r},{status_w}"]
        env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "TORCHINDUCTOR_CACHE_DIR": cache}  # compile from scratch
        self.out, self.err = logs / f"{cache.rsplit('/', 1)[-1]}.out", logs / f"{cache.rsplit('/', 1)[-1]}.err"
        with open(self.out, "w") as out, open(self.err, "w") as err:  # files, not pipes: a chatty child never blocks
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, pass_fds=(go_r, status_w))
        os.close(go_r)
        os.close(status_w)

    def fail(self, why: str) -> SystemExit:
        try:
            self.proc.wait(timeout=30)  # let a failing child finish writing its traceback
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return SystemExit(f"{label(self.name, self.variant)} {why} (exit {self.proc.returncode}):\n"
                          f"{self.err.read_text()[-3000:]}")

    def _read(self) -> bytes:
        ready, _, _ = select.select([self.status_r], [], [], self.timeout)
        if not ready:
            raise self.fail(f"sent no word for {self.timeout} s")
        return os.read(self.status_r, 1)

    def _expect(self, msg: bytes) -> None:
        if self._read() != msg:
            raise self.fail("failed")

    def wait_ready(self) -> None:
        self._expect(b"r")

    def take_turn(self) -> bool:
        """Run one turn and whatever the child does up to its next turn; False once it has exited."""
        try:
            os.write(self.go_w, b"g")
        except BrokenPipeError:
            raise self.fail("died waiting for its turn (out of memory?)") from None
        self._expect(b"d")
        if self._read() == b"r":
            return True
        if self.proc.wait(timeout=self.timeout) != 0:
            raise self.fail("failed after its last step")
        return False

    def result(self) -> dict:
        """The JSON line the child printed last (take_turn has already seen it exit 0)."""
        lines = self.out.read_text().strip().splitlines()
        if not lines:
            raise self.fail("printed no result")
        return json.loads(lines[-1])


def run_lockstep(jobs: list[tuple[str, str]], args) -> list[dict]:
    """All trainers loaded at once, then one step each in turn (order reversed every other round)."""
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        children: list[Child] = []
        try:
            for i, (name, v) in enumerate(jobs):
                children.append(Child(name, v, args, f"{tmp}/child{i}", Path(tmp)))
            for c in children:
                c.wait_ready()  # loading overlaps, timed work never does
            active, rnd = children, 0
            while active:
                order = active if rnd % 2 == 0 else active[::-1]
                running = {id(c) for c in order if c.take_turn()}
                active = [c for c in active if id(c) in running]  # keep the round-0 order: reversal alternates
                rnd += 1
            return [c.result() for c in children]
        finally:
            for c in children:
                if c.proc.poll() is None:
                    c.proc.kill()


def check_jobs(jobs: list[tuple[str, str]]) -> None:
    """Refuse variant names the children would not understand (they would silently run eager)."""
    for name, v in jobs:
        ac, _, extra = v.partition("+")
        ok = v in ("eager", "compile") if name == "hf" else ac in ("none", "selective", "full") and extra in ("", "compile")
        if not ok:
            raise SystemExit(f"unknown {'--hf-variants' if name == 'hf' else '--variants'} entry {v!r}")
    if ("hf", "eager") not in jobs:
        raise SystemExit("--hf-variants must include eager: it is the baseline of every ratio")


def round_ratios(res: dict, base: dict) -> list[float]:
    """Per round (first step excluded): the baseline's step time over this trainer's, i.e. speed-up."""
    if len(res["step_times"]) != len(base["step_times"]):
        raise SystemExit("the trainers ran different numbers of steps; rounds cannot be paired")
    return [b / t for t, b in zip(res["step_times"][1:], base["step_times"][1:])]


def table_rows(results: dict[str, dict], base: dict, tokens: int, fpt: float) -> list[str]:
    lines = []
    for lab, r in results.items():
        steps = r["step_times"][1:]
        tps = tokens / statistics.median(steps)
        ratios = round_ratios(r, base)
        lines.append(
            f"| {lab} | {tps:.1f} | {r['peak_flops'] / 1e9:.0f} | {tps * fpt / r['peak_flops']:.0%} | "
            f"{r['peak_rss_gb']:.2f} | {r['step_times'][0]:.1f} | **{statistics.median(ratios):.2f}×** | "
            f"{min(ratios):.2f}–{max(ratios):.2f}× | {r['peak_rss_gb'] / base['peak_rss_gb']:.2f}× |")
    return lines


def label(name: str, variant: str) -> str:
    if name == "hf":
        return "HF Trainer" if variant == "eager" else f"HF Trainer ({variant})"
    return f"meditron ({variant})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8, help="optimizer steps per trainer (the first, compiling, is apart)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--variants", default="selective+compile",
                    help="meditron variants: AC[+compile], AC = none | selective | full")
    ap.add_argument("--hf-variants", default="eager", help="HF Trainer variants: eager (the baseline), compile")
    ap.add_argument("--peak", type=float, default=190e9, help="child option: stated CPU peak for the MFU column")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds a child may take over one turn or its loading")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--ac", help=argparse.SUPPRESS)
    ap.add_argument("--turns", help=argparse.SUPPRESS)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    if args.child:
        turns = Turns(args.turns)
        res = (child_meditron if args.child == "meditron" else child_hf)(args, turns)
        res["peak_rss_gb"] = peak_rss_gb()
        print(json.dumps(res))
        return
    if args.steps < 3:
        raise SystemExit("--steps must be >= 3: the first step compiles, ratios need at least two more")

    from meditron.model.hub import resolve

    resolve("smollm2-135m")  # convert the embedded GGUF once, outside any measurement
    tokens = args.batch * args.seq
    fpt = flops_per_token(args.seq)
    load = os.getloadavg()[0]
    jobs = [("meditron", v) for v in args.variants.split(",")] + [("hf", v) for v in args.hf_variants.split(",")]
    check_jobs(jobs)
    results = {label(*job): res for job, res in zip(jobs, run_lockstep(jobs, args))}
    base = results["HF Trainer"]
    header = ("| trainer | tokens/s (median step) | matmul peak GFLOP/s | fraction of fp32 matmul peak | peak RSS GB | "
              "first step s | tok/s vs HF (median of rounds) | range over rounds | RSS vs HF |")
    table = "\n".join([header, "|---|---|---|---|---|---|---|---|---|", *table_rows(results, base, tokens, fpt)])
    table += "\n\nStep times per round, s (first, compiling step excluded):\n\n" + "\n".join(
        f"- {lab}: {', '.join(f'{t:.1f}' for t in r['step_times'][1:])}" for lab, r in results.items())
    if args.no_write:
        print(table)
        return
    record("Training throughput: meditron vs HF Trainer (SmolLM2-135M, fp32, CPU)", table, details=(
        f"load average {load:.1f} at start{' (other jobs ran alongside)' if load > (os.cpu_count() or 1) else ''}",
        f"workload: batch {args.batch} × {args.seq} tokens, AdamW, clip 1.0, {args.steps} steps; FLOPs/token "
        f"{fpt / 1e6:.0f}M (6N + attention); each trainer in its own subprocess (peak RSS includes loading)",
        f"mode: lock-step, {args.steps - 1} timed rounds: all trainers loaded, then one step each in turn, all cores "
        "to the trainer whose turn it is, the order reversed every other round; a ratio is HF's step time over this "
        "trainer's in the same round (first, compiling step excluded; it is the 'first step' column); each child "
        "starts with an empty inductor cache; the matmul peak is a 1024³ fp32 matmul timed in each trainer's first turn",
    ))


if __name__ == "__main__":
    main()
