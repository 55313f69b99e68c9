"""`takeover` command line: one sub-command module per job, all calling the same library functions as the flows."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from carla_bridge.errors import TakeoverError
from storage.errors import StorageError

# Each module exposes `register(subparsers)` and sets `func(args) -> int` on its parser(s).
COMMAND_MODULES: tuple[str, ...] = (
    "takeover.commands.drive",
    "takeover.commands.db",
    "takeover.commands.demo",
    "takeover.commands.train",
    "takeover.commands.collect",
    "takeover.commands.iterate",
    "takeover.commands.agreement",
    "takeover.commands.compare",
    "takeover.commands.confirm",
    "takeover.commands.counterfactual",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="takeover", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue  # a command whose module is not there yet
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args) or 0)
    except (TakeoverError, StorageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
