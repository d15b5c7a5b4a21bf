"""The ``orbithil`` command. Each layer's module registers its own subcommands."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback

from orbithil import __version__
from orbithil.errors import OrbithilError
from orbithil.hal.errors import ProtocolError

EXIT_USER_ERROR = 2  # as argparse exits on a usage error

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
    "orbithil.tools.soak",
    "orbithil.tools.ground_cli",  # serve/query/user: sub-commands of flight_cli's `ground`
    "orbithil.tools.ledger_cli",
    "orbithil.tools.ports",
    "orbithil.tools.sim_cli",
    "orbithil.tools.model_cli",
    "orbithil.tools.passes_cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orbithil",
        description="Hardware-in-the-loop flight software and SEU fault injection "
        "for orbital compute payloads.",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0,
        help="more log output (-vv: debug); errors show their traceback",
    )  # fmt: skip
    parser.add_argument("--version", action="version", version=f"orbithil {__version__}")
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
    except BrokenPipeError:
        # The reader went away (``orbithil ... | head``): stop quietly, as other commands
        # do. Python would print a second error flushing stdout at exit: point it at null.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a command a pipe ended
    except ProtocolError:
        raise  # the chip or the HAL broke the protocol: a bug, with its traceback
    except OrbithilError as exc:
        # A user's error: what was wrong and how to fix it; the traceback with -v. Anything
        # else is a bug in orbithil and keeps its traceback.
        if args.verbose:
            traceback.print_exc()
        print(f"orbithil: error: {exc}", file=sys.stderr)  # a simulator's log tail as it is
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
