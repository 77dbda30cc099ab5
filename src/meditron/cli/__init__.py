"""The `meditron` command: thin argument parsing over the library.

Each area registers its subcommands from its own module (model, eval, corpus, train). A
`MeditronError`, or an `OSError` (a path the file system refuses), is printed as one line and exits
with code 2; `--debug` shows the traceback.
"""

from __future__ import annotations

import argparse
import os
import sys

from meditron import __version__
from meditron.errors import MeditronError


def build_parser() -> argparse.ArgumentParser:
    from meditron.cli import corpus, eval as eval_cmd, model, train

    parser = argparse.ArgumentParser(prog="meditron", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"meditron {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in (eval_cmd, model, corpus, train):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return args.func(args) or 0
    except MeditronError as e:
        if args.debug:
            raise
        print(f"meditron: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `meditron … | head` closed our stdout: nothing left to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as e:
        if args.debug or e.filename is None:  # a path the file system refused, or something to trace
            raise
        target = f" -> {e.filename2}" if e.filename2 else ""
        print(f"meditron: error: {e.strerror or type(e).__name__}: {e.filename}{target} (--debug for the traceback)",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("meditron: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
