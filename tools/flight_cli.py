"""``orbithil fly``, ``orbithil ground`` and ``orbithil dict export``."""

from __future__ import annotations

import shlex
import sys
import threading
import time


def ground_main(args) -> int:
    from orbithil.flight import ccsds
    from orbithil.flight.dictionary import CHANNEL_BY_NAME, COMMANDS
    from orbithil.flight.ground import CommandRejected, Ground

    keys = ccsds.load_keys(args.keys)
    key_id = args.key_id if args.key_id is not None else min(keys)
    host, _, port = args.stack.rpartition(":")
    with Ground((host or "127.0.0.1", int(port)), key_id=key_id, key=keys[key_id]) as g:

        def run(line: str) -> None:
            words = shlex.split(line)
            if not words:
                return
            name, pairs = words[0].upper(), words[1:]
            if name in ("TM", "TELEMETRY"):
                for k, v in sorted(g.telemetry.items()):
                    channel = CHANNEL_BY_NAME.get(k)
                    shown = f"{int(v)}" if float(v).is_integer() else f"{v:.6g}"
                    if k == "DICT_HASH":
                        shown = f"{int(v):08x}"
                    out = channel is not None and (
                        (channel.high is not None and v > channel.high)
                        or (channel.low is not None and v < channel.low)
                    )
                    units = channel.units if channel else ""
                    print(f"  {k:24} {shown:>14} {units:8}" + ("  OUT OF LIMITS" if out else ""))
                return
            if name == "HELP":
                for c in COMMANDS:
                    args_ = " ".join(f"{a.name}=<{a.type}>" for a in c.args)
                    print(f"  {c.name} {args_}  -- {c.doc}")
                return
            try:
                kwargs = dict(p.split("=", 1) for p in pairs)
                g.command(name, timeout=args.timeout, **kwargs)
                print(f"{name}: completed")
            except (ValueError, CommandRejected, TimeoutError) as exc:
                print(f"{name}: {exc}")

        seen = 0

        def show_events() -> None:
            nonlocal seen
            events = list(g.events)
            for e in events[seen:]:
                print(f"[event {e.name}] {e.text}")
            seen = len(events)

        for line in args.send or []:
            run(line)
        if args.send:
            time.sleep(args.watch)
            show_events()
            if args.watch:
                run("tm")
            return 0
        print("orbithil ground: commands by name (HELP lists them), TM shows telemetry, "
              "Ctrl-D quits; events print as they arrive")  # fmt: skip
        stop = threading.Event()

        def live() -> None:  # events and a changed dictionary, as they arrive
            warned = False
            while not stop.wait(0.2):
                show_events()
                if g.dict_mismatch and not warned:
                    print("warning: the stack's dictionary differs from this one (hash)")
                    warned = True

        threading.Thread(target=live, daemon=True).start()
        try:
            while True:
                try:
                    line = input("ground> ")
                except EOFError:
                    return 0
                run(line)
        finally:
            stop.set()


def dict_main(args) -> int:
    from orbithil.flight.dictionary import export_json

    text = export_json()
    if args.output:
        with open(args.output, "w") as f:
            f.write(text)
        print(f"wrote {args.output}")
    else:
        print(text)
    return 0


def fly_main(args) -> int:
    import signal

    from orbithil.flight import ccsds
    from orbithil.flight.stack import Config, FlightStack

    from orbithil import hal

    config = Config.load(args.config) if args.config else Config()
    if args.port is not None:
        config.udp_port = args.port
    keys = ccsds.load_keys(args.keys or config.keys_file or None)
    with hal.open(args.chip, fec=args.fec) as chip:
        stack = FlightStack(chip, config, keys)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *a: stop.set())
        with stack:
            host, port = stack.link.udp_address
            print(f"flight stack up: chip {args.chip}, telecommands on udp://{host}:{port}"
                  + (f" and tcp://{host}:{stack.link.tcp_address[1]}" if config.tcp_port
                     is not None else "") + "; Ctrl-C stops", flush=True)  # fmt: skip
            try:
                while not stop.wait(0.5):
                    pass
            except KeyboardInterrupt:
                pass
    print("flight stack stopped", file=sys.stderr)
    return 0


def register(subparsers) -> None:
    f = subparsers.add_parser("fly", help="run the flight stack against a chip (any HAL URL)")
    f.add_argument("--chip", required=True, help="HAL URL: model://, sim://verilator, /dev/tty...")
    f.add_argument(
        "--fec",
        choices=["auto", "on", "off"],
        default="auto",
        help="link forward error correction to the chip (default auto: while the line is noisy)",
    )
    f.add_argument("--config", help="TOML file of flight.stack.Config fields")
    f.add_argument("--port", type=int, help="UDP port for telecommands (default 47001)")
    f.add_argument("--keys", help="key file (lines 'id hexkey'); default ORBITHIL_TC_KEYS")
    f.set_defaults(func=fly_main)

    g = subparsers.add_parser("ground", help="ground console: commands, telemetry, events")
    g.add_argument("--stack", default="127.0.0.1:47001", help="host:port of the flight stack")
    g.add_argument("--keys", help="key file; default ORBITHIL_TC_KEYS")
    g.add_argument("--key-id", type=int)
    g.add_argument("--send", action="append", help='send one command, e.g. "SET_MODE mode=NOMINAL"')
    g.add_argument("--watch", type=float, default=0.0, help="with --send: seconds to listen after")
    g.add_argument("--timeout", type=float, default=10.0)
    g.set_defaults(func=ground_main)

    d = subparsers.add_parser("dict", help="the command/telemetry/event dictionary")
    d.add_argument("action", choices=["export"])
    d.add_argument("-o", "--output")
    d.set_defaults(func=dict_main)
