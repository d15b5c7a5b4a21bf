"""The ``orbithil`` command. Each layer's module registers its own subcommands."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Modules with a `register(subparsers)` function, in the order shown by --help.
COMMAND_MODULES = (
    "orbithil.tools.demo",
    "orbithil.tools.doctor",
    "orbithil.tools.selftest",
    "orbithil.tools.bench",
    "orbithil.tools.fpga.cli",
    "orbithil.tools.inject_cli",
    "orbithil.tools.campaign.cli",
    "orbithil.tools.flight_cli",
    "orbithil.tools.ports",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orbithil",
        description="Hardware-in-the-loop flight software and SEU fault injection "
        "for orbital compute payloads.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=(logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)],
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
