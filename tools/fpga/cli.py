"""``orbithil synth`` and ``orbithil fpga gen|targets``."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

from rich.table import Table

from orbithil.sim import netlist
from orbithil.tools.console import console as make_console

from . import gen, synth


def _builds(choice: str) -> list[int]:
    return [0, 1] if choice == "both" else [int(choice)]


def synth_main(args) -> int:
    # with --json, stdout carries the JSON alone: progress and errors go to stderr
    console = make_console(stderr=args.json)
    results = []
    for harden in _builds(args.harden):
        console.print(f"synthesising HARDEN={harden} for the iCE40 UP5K (yosys, nextpnr) ...")
        try:
            results.append(synth.synthesize(harden))
        except synth.ToolMissing as exc:
            console.print(f"[red]{exc}[/]")
            return 2
        except RuntimeError as exc:
            console.print(f"[red]HARDEN={harden}: {exc}[/]")
            return 1
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for r in results:
            target = out / f"chip-h{r.harden}.bin"
            shutil.copyfile(r.bitstream, target)
            r.bitstream = str(target.resolve())
    if args.json:
        print(json.dumps([asdict(r) | {"fits": r.fits()} for r in results], indent=1))
    else:
        table = Table(title="iCE40 UP5K (iCEBreaker) resources")
        for column in (
            "build",
            "LUT4",
            "FF",
            "carry",
            "logic cells",
            "EBR",
            "SPRAM",
            "DSP",
            "Fmax MHz",
            "fits",
        ):
            table.add_column(column, justify="right")
        cap = synth.UP5K
        for r in results:
            table.add_row(
                f"HARDEN={r.harden}", str(r.luts), str(r.ffs), str(r.carries),
                f"{r.logic_cells}/{cap['LC']} ({100 * r.logic_cells / cap['LC']:.0f}%)",
                f"{r.ebr}/{cap['RAM']}", f"{r.spram}/{cap['SPRAM']}", f"{r.dsp}/{cap['DSP']}",
                f"{r.fmax_mhz:.1f}", "yes" if r.fits() else "[red]NO[/]",
            )  # fmt: skip
        console.print(table)
        if len(results) == 2:
            h0, h1 = sorted(results, key=lambda r: r.harden)
            console.print(
                f"hardening costs {h1.logic_cells - h0.logic_cells:+d} logic cells "
                f"({(h1.logic_cells / h0.logic_cells - 1) * 100:+.0f}%), "
                f"{h1.ffs - h0.ffs:+d} flip-flops, {h1.ebr - h0.ebr:+d} EBR"
            )
        for r in results:
            console.print(f"bitstream HARDEN={r.harden}: {r.bitstream}")
    return 0 if all(r.fits() for r in results) else 1


def targets_main(args) -> int:
    for harden in _builds(args.harden):
        result = netlist.list_targets(harden, clks_per_bit=args.clks_per_bit)
        if args.json:
            print(json.dumps(result))
            continue
        from orbithil.tools.inject_cli import targets_table

        make_console().print(targets_table(result, f"fault-injection targets, HARDEN={harden}"))
    return 0


def gen_main(args) -> int:
    written = gen.write_all()
    for path in written:
        print(f"wrote {path}")
    if not written:
        print("generated files are up to date")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "synth", help="synthesise the chip for the iCE40 UP5K; resource table"
    )
    p.add_argument(
        "--harden",
        choices=["0", "1", "both"],
        default="both",
        help="which build: 0 (unhardened), 1 (hardened) or both",
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON only")
    p.add_argument(
        "--out", help="copy the bitstreams here as chip-h<HARDEN>.bin (default: the cache)"
    )
    p.set_defaults(func=synth_main)

    p = subparsers.add_parser("fpga", help="generated Verilog/ICD tables; fault-injection targets")
    sub = p.add_subparsers(title="fpga commands", metavar="COMMAND", required=True)
    g = sub.add_parser("gen", help="regenerate orbithil_icd.vh, secded39.v and the ICD.md tables")
    g.set_defaults(func=gen_main)
    t = sub.add_parser("targets", help="list every flip-flop and memory bit of a build")
    t.add_argument(
        "--harden",
        choices=["0", "1", "both"],
        default="both",
        help="which build: 0 (unhardened), 1 (hardened) or both",
    )
    t.add_argument(
        "--clks-per-bit", type=int, default=104,
        help="the build's UART divisor: 104 for the board, 4 for the simulated chip",
    )  # fmt: skip
    t.add_argument("--json", action="store_true", help="print the target list as JSON")
    t.set_defaults(func=targets_main)
