"""``ftstudy``: the command line for people (the trainer's own command is ``ftstudy-trainer``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _generate(args: argparse.Namespace) -> int:
    from ftstudy.task.generator import SplitSizes, write_dataset

    sizes = SplitSizes(args.train, args.validation, args.test, args.independent_test)
    for split, path in write_dataset(args.out, args.seed, sizes).items():
        print(f"{split:>17}: {getattr(sizes, split):>6} pages -> {path}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ftstudy", description=__doc__)
    commands = p.add_subparsers(dest="command", required=True)
    data = commands.add_parser("data", help="datasets").add_subparsers(dest="data_command", required=True)
    gen = data.add_parser("generate", help="write a synthetic product-page dataset (JSONL splits)")
    gen.add_argument("--out", type=Path, required=True, help="directory for the .jsonl files")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--train", type=int, default=2000)
    gen.add_argument("--validation", type=int, default=200)
    gen.add_argument("--test", type=int, default=200)
    gen.add_argument("--independent-test", type=int, default=200)
    gen.set_defaults(handler=_generate)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
