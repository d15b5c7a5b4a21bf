"""``orbithil ports``: serial ports, and which of them answer as an orbithil chip."""

from __future__ import annotations

import json

from rich.table import Table
from serial.tools import list_ports

from orbithil import hal
from orbithil.tools.console import console as make_console


def probe(device: str, *, timeout: float) -> str:
    """The chip's build on ``device``, or why it is not one (a PING with a deadline)."""
    try:
        with hal.open(device, timeout=timeout, retries=0) as chip:
            ident = chip.identify()
            build = f"HARDEN={int(ident.harden)}, {ident.mem_words} words"
            return f"orbithil chip, ICD {ident.icd_version}, {build}"
    except hal.HalError as exc:
        return f"no chip ({type(exc).__name__})"


def main(args) -> int:
    ports = sorted(list_ports.comports(), key=lambda p: p.device)
    listed = [(p.device, p.description, p.hwid) for p in ports]
    # Devices named on the command line: pseudo-terminals (orbithil sim serve --pty),
    # symlinks, ports the system does not enumerate.
    known = {device for device, _, _ in listed}
    listed += [(d, "given on the command line", "") for d in args.devices if d not in known]
    rows = []
    for device, description, hwid in listed:
        found = "not probed" if args.no_probe else probe(device, timeout=args.timeout)
        rows.append({"device": device, "description": description, "hwid": hwid, "chip": found})
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    table = Table(title="serial ports")
    for column in ("device", "description", "hardware id", "orbithil"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["device"], row["description"], row["hwid"], row["chip"])
    make_console().print(table if rows else "no serial ports found")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("ports", help="list serial ports; mark those that answer as chips")
    p.add_argument(
        "devices",
        nargs="*",
        help="also probe these devices (e.g. the /dev/pts/N of orbithil sim serve --pty)",
    )
    p.add_argument("--no-probe", action="store_true", help="list only; send nothing to the ports")
    p.add_argument("--timeout", type=float, default=0.3, help="seconds to wait for each PING")
    p.add_argument("--json", action="store_true", help="print the ports as JSON")
    p.set_defaults(func=main)
