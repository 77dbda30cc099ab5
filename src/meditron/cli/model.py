"""`meditron generate`, `meditron chat`, `meditron convert`: the model and its decoding."""

from __future__ import annotations

import argparse
import sys

from meditron.errors import MeditronError


def register(sub) -> None:
    gen = sub.add_parser("generate", help="complete a prompt with a model")
    _model_args(gen)
    gen.add_argument("prompt", nargs="+", help="prompt text (several prompts are decoded as one batch)")
    _sampling_args(gen)
    gen.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    gen.add_argument("--show-tokens", action="store_true", help="print the generated token ids too")
    gen.set_defaults(func=cmd_generate)

    chat = sub.add_parser("chat", help="talk with a model interactively (chat template, streaming)")
    _model_args(chat)
    _sampling_args(chat, temperature=0.7, max_new_tokens=512)
    chat.add_argument("--system", default=None, help="system message (default: the template's own)")
    chat.set_defaults(func=cmd_chat)

    conv = sub.add_parser("convert", help="convert a model (HF folder, .gguf, alias) to a Hugging Face folder")
    conv.add_argument("src", help="model reference: HF folder, .gguf file, alias (smollm2-135m) or hub name")
    conv.add_argument("dst", help="output folder (config.json, safetensors, tokenizer)")
    conv.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default=None,
                      help="weights dtype to write (default: as loaded; float32 for GGUF)")
    conv.set_defaults(func=cmd_convert)


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m",
                   help="HF folder, .gguf file, hub name, or embedded alias (default: smollm2-135m)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    p.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="fp32", help="compute dtype")


def _sampling_args(p: argparse.ArgumentParser, temperature: float = 0.0, max_new_tokens: int = 128) -> None:
    p.add_argument("--max-new-tokens", type=int, default=max_new_tokens)
    p.add_argument("--temperature", type=float, default=temperature, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--frequency-penalty", type=float, default=0.0)
    p.add_argument("--presence-penalty", type=float, default=0.0)


def _params(args):
    from meditron.infer.generate import SamplingParams

    return SamplingParams(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
        seed=args.seed, stop=tuple(args.stop), frequency_penalty=args.frequency_penalty,
        presence_penalty=args.presence_penalty,
    )


def _load(args):
    from meditron.infer.generate import Generator
    from meditron.model.hub import load_model
    from meditron.model.weights import parse_dtype

    model, tok = load_model(args.model, dtype=parse_dtype(args.dtype), device=args.device)
    return Generator(model.fuse_projections(), tok)


def cmd_generate(args) -> int:
    params = _params(args)
    gen = _load(args)
    prompts = args.prompt
    if args.chat:
        prompts = [gen.tokenizer.apply_chat_template([{"role": "user", "content": p}]) for p in prompts]
    for i, out in enumerate(gen.generate(prompts, params)):
        if len(prompts) > 1:
            print(f"--- [{i}] ({out.finish_reason})")
        print(out.text)
        if args.show_tokens:
            print("tokens:", " ".join(map(str, out.token_ids)))
    return 0


def cmd_chat(args) -> int:
    gen = _load(args)
    params = _params(args)
    messages: list[dict[str, str]] = []
    if args.system:
        messages.append({"role": "system", "content": args.system})
    gen.tokenizer.apply_chat_template(messages + [{"role": "user", "content": "x"}])  # fails early without template
    print("meditron chat — empty line or Ctrl-D to quit, /reset to start over.", file=sys.stderr)
    while True:
        try:
            user = input("you> ").strip()
        except EOFError:
            print(file=sys.stderr)
            return 0
        if not user:
            return 0
        if user == "/reset":
            messages = messages[:1] if args.system else []
            continue
        messages.append({"role": "user", "content": user})
        prompt = gen.tokenizer.apply_chat_template(messages)
        print("model> ", end="", flush=True)
        reply = ""
        for piece in gen.stream(prompt, params):
            reply += piece
            print(piece, end="", flush=True)
        print()
        messages.append({"role": "assistant", "content": reply})


def cmd_convert(args) -> int:
    from pathlib import Path

    from meditron.model.hub import load_model
    from meditron.model.weights import parse_dtype, save_hf

    dst = Path(args.dst)
    if dst.exists() and any(dst.iterdir()):
        raise MeditronError(f"{dst} exists and is not empty; choose a new folder")
    model, tok = load_model(args.src, dtype=None if args.dtype is None else parse_dtype(args.dtype))
    save_hf(model, dst, tokenizer=tok, dtype=parse_dtype(args.dtype))
    print(f"wrote {dst} ({model.n_params / 1e6:.1f}M parameters, {next(model.parameters()).dtype})")
    return 0
