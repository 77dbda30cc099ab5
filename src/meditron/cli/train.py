"""`meditron train`, `meditron export`, `meditron plot` (registered by meditron.cli)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def register(sub) -> None:
    """Add this area's subcommands to the top-level parser."""
    p = sub.add_parser(
        "train", help="pretrain or fine-tune (torchrun for several processes)",
        description="Train from a YAML recipe. Several processes: torchrun --nproc_per_node=N -m meditron train …",
    )
    p.add_argument("config", help="YAML recipe, e.g. configs/tiny.yaml")
    p.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="dotted overrides, e.g. parallel.dp=2 parallel.tp=2 train.steps=100")
    p.add_argument("--out", help="run folder for metrics.jsonl, checkpoints, tensorboard (default: config 'out' "
                                 "or runs/<config name>)")
    p.set_defaults(func=_train)

    e = sub.add_parser("export", help="write a Hugging Face folder from a training checkpoint")
    e.add_argument("checkpoint", help="a run folder (latest checkpoint) or one checkpoint, OUT/checkpoints/step_NNNNNNNN")
    e.add_argument("out", help="folder to write (config.json, safetensors, tokenizer)")
    e.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    e.set_defaults(func=_export)

    pl = sub.add_parser("plot", help="draw loss, LR and throughput curves of a run to PNG")
    pl.add_argument("run_dir")
    pl.add_argument("--out", help="PNG path (default RUN_DIR/curves.png)")
    pl.set_defaults(func=_plot)


def _train(args) -> int:
    from meditron.train.config import load_train_config
    from meditron.train.loop import train
    from meditron.train.stop import TrainingStopped

    cfg = load_train_config(args.config, args.overrides)
    out = args.out or cfg.out or str(Path("runs") / Path(args.config).stem)
    reports = int(os.environ.get("RANK", "0")) == 0     # one line per run, not one per rank
    try:
        result = train(cfg, out)
    except TrainingStopped as stopped:
        if reports:
            print(f"meditron: {stopped}", file=sys.stderr)
        return stopped.exit_code
    if result:
        if reports:
            keys = [k for k in result if k in ("step", "loss", "tokens_per_s", "mfu") or k.startswith("valid/")]
            from meditron.train.metrics import strict_json

            print(json.dumps(strict_json({k: result[k] for k in keys}), allow_nan=False))
    return 0


def _export(args) -> int:
    from meditron.train.checkpoint import export_checkpoint

    path = export_checkpoint(args.checkpoint, args.out, args.dtype)
    print(f"wrote {path}")
    return 0


def _plot(args) -> int:
    from meditron.train.metrics import plot_run

    print(f"wrote {plot_run(args.run_dir, args.out)}")
    return 0
