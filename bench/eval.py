"""Benchmark: `meditron eval` vs lm-evaluation-harness, same model, same CPU, same run.

Two workloads on SmolLM2-135M (fp32), loglik scoring with lm-eval's MMLU prompt:
  1. zero-shot, all 1,871 MMLU-Medical questions (target >= 1.5x);
  2. 3-shot, anatomy + medical genetics, the same 3 demonstrations for every question
     (target >= 4x: meditron encodes the demonstrations once per seed).
To share the machine's noise fairly the two systems alternate subject by subject. The fp32
matmul peak is measured in the same run; achieved GFLOP/s counts the FLOPs each system executes
(model body over the tokens it feeds, LM head over the positions it projects, attention).
Prints a table and appends it to BENCHMARKS.md.

    PYTHONPATH=src python bench/eval.py [--limit N] [--no-append] [--data-dir ../shared/data/benchmarks]
"""

from __future__ import annotations

import argparse
import datetime
import os
import tempfile
import time
from pathlib import Path

import torch

from common import ROOT, machine, matmul_peak_gflops  # noqa: E402


def flops(cfg, rows: list[tuple[int, int]], logit_rows: int) -> float:
    """FLOPs of forwarding rows of (new tokens, already-cached prefix length) + `logit_rows` LM-head rows."""
    hd = cfg.head_dim
    per_tok = 2 * (cfg.dim * hd * (2 * cfg.n_heads + 2 * cfg.n_kv_heads) + 3 * cfg.dim * cfg.ffn_dim) * cfg.n_layers
    total = 0.0
    for n, p in rows:
        attended = n * p + n * (n + 1) / 2
        total += per_tok * n + 4 * cfg.n_layers * cfg.n_heads * hd * attended
    return total + 2 * cfg.vocab_size * cfg.dim * logit_rows


def lm_eval_rows(ctx_lens: list[int], batch: int) -> list[tuple[int, int]]:
    """lm-eval HF: one row per question (single-token choices share the context), sorted by length
    descending, batches of `batch` padded to their longest row."""
    rows = []
    s = sorted(ctx_lens, reverse=True)
    for i in range(0, len(s), batch):
        chunk = s[i:i + batch]
        rows += [(chunk[0], 0)] * len(chunk)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=None, help="questions per subject (default: all)")
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "benchmarks"))
    ap.add_argument("--batch", type=int, default=8, help="lm-eval HF batch size")
    ap.add_argument("--no-append", action="store_true")
    ap.add_argument("--skip", default="", help="comma list of workloads to skip: zero,fewshot")
    args = ap.parse_args()

    from lm_eval.models.huggingface import HFLM

    from meditron.eval.backends.native import NativeBackend
    from meditron.eval.benchmarks import get
    from meditron.eval.peer import run_lm_eval, write_mmlu_task
    from meditron.eval.prompts import build_prompt, sample_demos
    from meditron.model.hub import load_model, resolve

    folder = resolve("smollm2-135m")
    model, tok = load_model("smollm2-135m")
    backend = NativeBackend(loaded=(model, tok))
    hflm = HFLM(pretrained=str(folder), dtype="float32", batch_size=args.batch, device="cpu")
    cfg = model.config
    bench = get("mmlu_medical")
    peak0 = matmul_peak_gflops()
    workloads = []
    if "zero" not in args.skip:
        title = "zero-shot, MMLU-Medical" + (f" (first {args.limit} q of each of the 9 subjects)" if args.limit else
                                             ", all 9 subjects")
        workloads.append((title, None, 0, bench.load("test", None)))
    if "fewshot" not in args.skip:
        items = [it for it in bench.load("test", args.data_dir) if it.group in ("anatomy", "medical_genetics")]
        title = "3-shot (same 3 demonstrations), anatomy + medical genetics" + (
            f" (first {args.limit} q each)" if args.limit else "")
        workloads.append((title, args.data_dir, 3, items))
    results = []
    tmp = Path(tempfile.mkdtemp(prefix="bench-eval-"))
    for title, data_dir, shots, items in workloads:
        demos = sample_demos(bench.load("dev", data_dir), shots, 1234) if shots else []
        subjects = sorted({it.group for it in items})
        t_ours = t_peer = 0.0
        agree = n = correct_ours = correct_peer = 0
        rows_ours: list[tuple[int, int]] = []
        logit_ours = 0
        ctx_lens: list[int] = []
        for subject in subjects:
            sub = [it for it in items if it.group == subject][: args.limit]
            prompts = [build_prompt(it, bench, demos, "lm-eval", seed=1234) for it in sub]
            # lm-evaluation-harness
            task = write_mmlu_task(sub, tmp / f"{shots}-{subject}", fewshot=demos, name=f"bench_{shots}_{subject}")
            t = time.perf_counter()
            peer = run_lm_eval(hflm, tmp / f"{shots}-{subject}", task, num_fewshot=shots)
            t_peer += time.perf_counter() - t
            # meditron
            from meditron.infer.scoring import common_prefix

            t = time.perf_counter()
            before = dict(backend.scorer.stats)
            enc = [backend.encode(p.text) for p in prompts]
            prefix = common_prefix(enc)[: min(len(e) for e in enc) - 1]
            scores = backend.loglik([p.text for p in prompts], [p.choices for p in prompts], prefix)
            t_ours += time.perf_counter() - t
            st = backend.scorer.stats
            rows_ours.append((st["prefix_tokens"] - before["prefix_tokens"], 0))
            rows_ours += [(len(e) - len(prefix), len(prefix)) for e in enc]
            logit_ours += st["logit_rows"] - before["logit_rows"]
            ctx_lens += [len(e) for e in enc]
            for it, p, s in zip(sub, prompts, scores):
                pred = p.labels[max(range(4), key=lambda j: s.logliks[j])]
                agree += pred == peer["preds"][it.id]
                correct_ours += pred == it.gold
                correct_peer += peer["preds"][it.id] == it.gold
                n += 1
            print(f"  {subject}: {len(sub)} q, lm-eval {t_peer:.0f} s, meditron {t_ours:.0f} s (cumulative)", flush=True)
        f_ours = flops(cfg, rows_ours, logit_ours)
        rows_peer = lm_eval_rows(ctx_lens, args.batch)
        f_peer = flops(cfg, rows_peer, sum(r[0] for r in rows_peer))  # HF projects every position
        results.append(dict(title=title, n=n, t_ours=t_ours, t_peer=t_peer, agree=agree / n,
                            acc_ours=correct_ours / n, acc_peer=correct_peer / n,
                            gf_ours=f_ours / t_ours / 1e9, gf_peer=f_peer / t_peer / 1e9))
    peak = max(peak0, matmul_peak_gflops())
    load = os.getloadavg()
    lines = [
        f"## bench/eval.py — {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        f"Command: `PYTHONPATH=src python bench/eval.py{' --limit ' + str(args.limit) if args.limit else ''}"
        f"{' --skip ' + args.skip if args.skip else ''}`  ",
        f"Machine: {machine()}, {torch.get_num_threads()} threads; "
        f"fp32 matmul peak measured in this run: {peak:.0f} GFLOP/s; load average at the end {load[0]:.1f} "
        "(other jobs shared the machine when this was above the core count).  ",
        "Model: SmolLM2-135M-Instruct (embedded GGUF, fp32). Scoring: log-likelihood of \" A\"..\" D\" after "
        "lm-eval's MMLU prompt; lm-eval 0.4 HF backend, batch "
        f"{args.batch}, local task YAML. Both systems alternate subject by subject.",
        "",
        "| workload | questions | lm-eval (s) | meditron (s) | speed-up | same prediction | acc lm-eval / meditron "
        "| GFLOP/s lm-eval (% peak) | GFLOP/s meditron (% peak) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['title']} | {r['n']} | {r['t_peer']:.1f} | {r['t_ours']:.1f} | {r['t_peer'] / r['t_ours']:.2f}x "
            f"| {100 * r['agree']:.1f}% | {100 * r['acc_peer']:.2f} / {100 * r['acc_ours']:.2f} "
            f"| {r['gf_peer']:.0f} ({100 * r['gf_peer'] / peak:.0f}%) | {r['gf_ours']:.0f} ({100 * r['gf_ours'] / peak:.0f}%) |"
        )
    lines += ["", "GFLOP/s counts executed work: lm-eval forwards every context token of every question (padded "
              "in length-sorted batches) and projects every position onto the 49k vocabulary; meditron forwards the "
              "shared prefix once per subject and seed, only each question's own tokens after it, and projects one "
              "position per question.", ""]
    text = "\n".join(lines)
    print(text)
    if not args.no_append:
        path = ROOT / "BENCHMARKS.md"
        if not path.exists():
            path.write_text("# Benchmarks\n\n")
        with open(path, "a") as f:
            f.write("\n" + text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
