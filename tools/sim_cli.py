"""``orbithil sim serve``: a chip (the simulated one by default) as a serial device or a
TCP port, for tools that open a port rather than a URL: ``hal.open("/dev/pts/N")``,
``orbithil ports``, a user's own serial code, a terminal program.

The first line on stdout says where it is (``--json``: one JSON object), printed once the
chip answers, so a script can start it in the background and wait for that line. It
serves until Ctrl-C, SIGTERM or ``--for`` seconds.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from orbithil import hal
from orbithil.hal.relay import Relay
from orbithil.tools.console import console as make_console


def serve(args) -> int:
    if args.for_s is not None and not (args.for_s > 0 and args.for_s < float("inf")):
        raise hal.HalError(f"--for {args.for_s}: give a finite number of seconds > 0")
    relay = Relay(
        args.url,
        pty=not args.tcp,
        tcp_port=args.port,
        link=Path(args.link) if args.link else None,
    )
    err = make_console(stderr=True)
    err.print(f"starting {args.url} (a first simulator build takes a minute, then cached)")
    stop = {"signal": None}

    def on_signal(signum, _frame) -> None:
        stop["signal"] = signum
        relay._stop.set()

    previous = signal.signal(signal.SIGTERM, on_signal)
    relay.start()
    try:
        with hal.open(relay.device, timeout=5.0) as chip:
            ident = chip.identify()  # through the device itself: it works end to end
        info = {
            "device": relay.device,
            "url": args.url,
            "harden": ident.harden,
            "mem_words": ident.mem_words,
            "fec": ident.fec,
        }
        if args.json:
            print(json.dumps(info), flush=True)
        else:
            print(
                f"serving {args.url} on {relay.device} (HARDEN={int(ident.harden)}); "
                "open it as a serial port; Ctrl-C stops",
                flush=True,
            )
        deadline = None if args.for_s is None else time.monotonic() + args.for_s
        while not relay.wait(timeout_s=0.5):
            if deadline is not None and time.monotonic() > deadline:
                break
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        relay.stop()
    s = relay.stats
    err.print(f"stopped: {s.to_chip} bytes to the chip, {s.from_chip} from it, {s.dropped} dropped")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("sim", help="the simulated chip as a device other tools can open")
    sub = p.add_subparsers(title="sim commands", metavar="SUBCOMMAND", required=True)
    s = sub.add_parser(
        "serve",
        help="serve a chip on a pseudo-terminal (/dev/pts/N) or a TCP port",
        description=__doc__,
    )
    s.add_argument(
        "url",
        nargs="?",
        default="sim://verilator?harden=1",
        help="the chip to serve, any hal.open URL (default: %(default)s)",
    )
    how = s.add_mutually_exclusive_group()
    how.add_argument(
        "--pty",
        action="store_true",
        help="serve on a pseudo-terminal, opened like a serial port (the default)",
    )
    how.add_argument("--tcp", action="store_true", help="serve on a TCP port (socket://)")
    s.add_argument("--port", type=int, default=0, help="TCP port for --tcp (0: a free one)")
    s.add_argument("--link", help="also make this path a symlink to the pty device")
    s.add_argument(
        "--for", dest="for_s", type=float, help="stop after this many seconds (default: never)"
    )
    s.add_argument("--json", action="store_true", help="print where it serves as one JSON line")
    s.set_defaults(func=serve)
