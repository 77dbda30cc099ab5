"""`meditron corpus` subcommands (registered by meditron.cli)."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    """Add this area's subcommands to the top-level parser."""
    p = sub.add_parser("corpus", help="build the GAP-Replay pretraining corpus (clean, dedup, decontaminate, mix, tokenize)")
    csub = p.add_subparsers(dest="corpus_command", metavar="SUBCOMMAND")
    b = csub.add_parser("build", help="run the corpus pipeline from a YAML recipe; restartable")
    b.add_argument("config", help="corpus recipe (YAML), e.g. configs/corpus-sample.yaml")
    b.add_argument("--out", default="runs/corpus", help="output folder (default: runs/corpus)")
    b.add_argument("--workers", type=int, default=1, help="tasks run at once (outputs do not depend on it)")
    b.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="override config keys, e.g. --set limit_per_source=100 tasks=4")
    b.set_defaults(func=_build)
    v = csub.add_parser("verify", help="check that the shards hold exactly the tokenized cleaned documents")
    v.add_argument("out", help="a folder written by `meditron corpus build`")
    v.set_defaults(func=_verify)
    p.set_defaults(func=lambda args: (p.print_help(), 1)[1])


def _build(args: argparse.Namespace) -> int:
    from meditron.corpus.pipeline import build

    out = build(args.config, args.out, workers=args.workers, overrides=args.overrides)
    print(f"corpus written to {out}: train.bin/.idx, mixture.md, datacard.md")
    print((out / "mixture.md").read_text())
    return 0


def _verify(args: argparse.Namespace) -> int:
    from meditron.corpus.verify import verify

    report = verify(args.out)
    for split, n in report.items():
        print(f"{split}: {n} documents match their tokenized text")
    return 0
