"""Prefill and decode throughput: meditron vs transformers `generate`, same model, same CPU, same run.

Decoding one token reads every weight once, so it is bound by memory bandwidth, not arithmetic:
the table reports decode's achieved bandwidth (weight bytes x decode steps/s) against a plain
tensor copy measured in the same run.

    python bench/generate.py [--model smollm2-135m] [--prompt-tokens 64] [--new-tokens 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import copy_bandwidth_gbs, interleaved, record  # noqa: E402

from meditron.infer.generate import Generator, SamplingParams  # noqa: E402
from meditron.model.hub import load_model, resolve  # noqa: E402

TEXT = ("A 54-year-old man presents to the emergency department with crushing substernal chest pain radiating "
        "to the left arm, diaphoresis and nausea that began two hours ago. His history includes hypertension, "
        "type 2 diabetes and a 30 pack-year smoking history. ")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--prompt-tokens", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)

    import transformers

    model, tok = load_model(args.model)
    gen = Generator(model.fuse_projections(), tok)
    hf = transformers.AutoModelForCausalLM.from_pretrained(resolve(args.model), dtype=torch.float32).eval()
    weight_bytes = sum(p.numel() * p.element_size() for p in {id(p): p for p in model.parameters()}.values())
    base = tok.encode(TEXT * 8)

    rows, ratios = [], {}
    for batch in (1, 8):
        # Prompts of slightly different lengths, as in real batches.
        prompts = [base[: args.prompt_tokens - 2 * i] for i in range(batch)]
        width = max(map(len, prompts))
        hf_ids = torch.tensor([[tok.pad_id] * (width - len(p)) + p for p in prompts])
        hf_mask = (hf_ids != -1).long()
        for i, p in enumerate(prompts):
            hf_mask[i, : width - len(p)] = 0

        def ours(n):
            return lambda: gen.generate(prompts, SamplingParams(max_new_tokens=n, stop_at_eos=False))

        def theirs(n):
            def run():
                with torch.inference_mode():
                    hf.generate(hf_ids, attention_mask=hf_mask, max_new_tokens=n, min_new_tokens=n,
                                do_sample=False, pad_token_id=tok.pad_id)
            return run

        ours(2)(), theirs(2)()  # warm-up
        t = interleaved({"ours_1": ours(1), "hf_1": theirs(1), "ours_n": ours(args.new_tokens),
                         "hf_n": theirs(args.new_tokens)}, args.repeats)
        prompt_tokens = sum(map(len, prompts))
        for name, key in (("meditron", "ours"), ("transformers", "hf")):
            prefill = prompt_tokens / t[f"{key}_1"]
            decode = batch * (args.new_tokens - 1) / (t[f"{key}_n"] - t[f"{key}_1"])
            bandwidth = weight_bytes * decode / batch / 1e9
            rows.append((batch, name, prefill, decode, bandwidth))
            ratios[(batch, key)] = (prefill, decode)

    copy_bw = copy_bandwidth_gbs()
    lines = ["| batch | engine | prefill tok/s | decode tok/s | decode weight GB/s |",
             "|---|---|---|---|---|"]
    for batch, name, prefill, decode, bw in rows:
        lines.append(f"| {batch} | {name} | {prefill:.0f} | {decode:.1f} | {bw:.1f} |")
    for batch in (1, 8):
        (po, do), (ph, dh) = ratios[(batch, "ours")], ratios[(batch, "hf")]
        lines.append(f"| {batch} | **ratio** | **{po / ph:.2f}x** | **{do / dh:.2f}x** | |")
    notes = (f"Model {args.model}, float32, {weight_bytes / 1e6:.0f} MB of weights read per decode step; "
             f"prompts of ~{args.prompt_tokens} tokens, {args.new_tokens} new tokens, median of {args.repeats} "
             f"interleaved runs. Copy bandwidth measured in the same run: {copy_bw:.1f} GB/s (read+write); "
             f"batch-1 decode reaches {rows[0][4] / copy_bw:.0%} of it (meditron) vs "
             f"{rows[1][4] / copy_bw:.0%} (transformers).")
    record("Generation: meditron vs transformers generate", "\n".join(lines), notes)
    print(notes)


if __name__ == "__main__":
    main()
