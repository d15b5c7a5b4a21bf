"""``orbithil doctor``: what this machine has for orbithil, and how to get what it lacks."""

from __future__ import annotations

import importlib.metadata
import json
import platform
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.table import Table

from orbithil import __version__
from orbithil.settings import cache_dir
from orbithil.sim.toolchain import TOOLS, probe
from orbithil.tools.console import console as make_console

PACKAGES = ("numpy", "cffi", "pyserial", "cocotb", "rich")


@dataclass
class Check:
    """One line of the report."""

    item: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


def _serial_ports() -> list[str]:
    from serial.tools import list_ports

    return [f"{p.device} ({p.description})" for p in list_ports.comports()]


def checkout() -> Path | None:
    """The source checkout this orbithil runs from (an editable install), else None."""
    root = Path(__file__).resolve().parent.parent
    if (root / "scripts" / "bootstrap.sh").is_file() and (root / "pyproject.toml").is_file():
        return root
    return None


def run_checks() -> list[Check]:
    tree = checkout()
    setup = "make setup" if tree else None
    checks = [
        Check(
            "python",
            sys.version_info >= (3, 11),
            f"{platform.python_version()} at {sys.executable}",
            "install Python >= 3.11" + (", then make setup" if tree else ""),
        ),
        Check(
            "orbithil",
            True,
            f"{__version__} " + (f"(checkout {tree})" if tree else "(installed package)"),
        ),
        Check("cache", True, f"{cache_dir()}  — builds and caches (ORBITHIL_CACHE_DIR)"),
    ]
    for name in PACKAGES:
        try:
            version = importlib.metadata.version(name)
            checks.append(Check(f"pkg {name}", True, version))
        except importlib.metadata.PackageNotFoundError:
            checks.append(
                Check(f"pkg {name}", False, "not installed", setup or f"pip install {name}")
            )

    from orbithil.hal import codec

    c_ok = "c" in codec.available_backends()
    checks.append(
        Check(
            "codec (C, cffi)",
            c_ok,
            f"{codec.c_status()}; in use: {codec.backend()}",
            (setup or "python -m orbithil.hal.codec.build")
            + "   (needs gcc and the Python headers)",
        )
    )
    for tool in TOOLS:
        found = probe(tool)
        if found.path and not found.error:
            detail = f"{found.version}  {found.path}"
        else:
            detail = found.error or "not found"
        checks.append(
            Check(
                tool.key,
                bool(found.path and not found.error),
                f"{detail}  — {tool.purpose}",
                tool.install + ("   (make setup does this)" if tree and tool.required else ""),
                tool.required,
            )
        )
    ports = _serial_ports()
    checks.append(
        Check(
            "serial ports",
            bool(ports),
            ", ".join(ports) if ports else "none (no board attached)",
            "attach a board; see fpga/BOARD.md",
            required=False,
        )
    )
    return checks


def main(args) -> int:
    checks = run_checks()
    failed = [c for c in checks if c.required and not c.ok]
    if args.json:
        print(json.dumps({"ok": not failed, "checks": [asdict(c) for c in checks]}, indent=2))
        return 1 if failed else 0
    console = make_console()
    table = Table(title="orbithil doctor", show_lines=False)
    for column in ("", "item", "found", "to get it"):
        table.add_column(column, overflow="fold")
    for c in checks:
        mark = "[green]ok[/]" if c.ok else ("[red]MISSING[/]" if c.required else "[yellow]--[/]")
        table.add_row(mark, c.item, c.detail, "" if c.ok else c.fix)
    console.print(table)
    if failed:
        console.print(
            f"[red]{len(failed)} required item(s) missing:[/] " + ", ".join(c.item for c in failed)
        )
        return 1
    console.print("[green]everything required is present[/]")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("doctor", help="report simulators, FPGA tools, ports and the codec")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=main)
