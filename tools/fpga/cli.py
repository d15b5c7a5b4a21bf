"""``orbithil synth`` and ``orbithil fpga gen|targets``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from rich.table import Table

from orbithil.sim import netlist
from orbithil.tools.console import console as make_console

from . import gen, synth


def _builds(choice: str) -> list[int]:
    return [0, 1] if choice == "both" else [int(choice)]


def _synth_builds(args) -> list[dict[str, int]]:
    """The builds ``orbithil synth`` was asked for: every HARDEN chosen, with FEC, INJECT
    and the SRAM's home as given (the flight bitstream's by default)."""
    return [
        {"harden": harden, "fec": int(args.fec), "inject": int(args.inject),
         "spram": int(args.spram)}
        for harden in _builds(args.harden)
    ]  # fmt: skip


def _label(build) -> str:
    b = build if isinstance(build, dict) else vars(build)
    return f"HARDEN={b['harden']} FEC={b['fec']} INJECT={b['inject']}" + (
        "" if b["spram"] else " (SRAM in EBR)"
    )


def synth_main(args) -> int:
    # with --json, stdout carries the JSON alone: progress and errors go to stderr
    console = make_console(stderr=args.json)
    results: list[synth.SynthResult] = []
    unplaced: list[tuple[dict[str, int], synth.DoesNotFit]] = []
    for build in _synth_builds(args):
        console.print(f"synthesising {_label(build)} for the iCE40 UP5K (yosys, nextpnr) ...")
        try:
            results.append(synth.synthesize(**build))
        except synth.ToolMissing as exc:
            console.print(f"[red]{exc}[/]")
            return 2
        except synth.DoesNotFit as exc:
            console.print(f"[red]{exc}[/]")
            unplaced.append((build, exc))
        except RuntimeError as exc:
            console.print(f"[red]{_label(build)}: {exc}[/]")
            return 1
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for r in results:
            target = out / f"chip-{r.name}.bin"
            shutil.copyfile(r.bitstream, target)
            r.bitstream = str(target.resolve())
    if args.json:
        rows = [r.as_json() for r in results]
        rows += [
            build | {"logic_cells": exc.logic_cells,
                     "lc_share": round(exc.logic_cells / synth.UP5K["LC"], 4),
                     "fits": False, "timing_met": False, "bitstream": None}
            for build, exc in unplaced
        ]  # fmt: skip
        print(json.dumps(rows, indent=1))
    else:
        _print_table(console, results, unplaced)
    ok = all(r.fits() and r.timing_met() for r in results)
    return 0 if ok and not unplaced else 1


def _print_table(console, results, unplaced) -> None:
    table = Table(title="iCE40 UP5K (iCEBreaker) resources, timing at 12 MHz")
    for column in (
        "build", "LUT4", "FF", "carry", "logic cells", "EBR", "SPRAM", "DSP", "Fmax MHz",
        "fits",
    ):  # fmt: skip
        table.add_column(column, justify="right")
    cap = synth.UP5K
    for r in results:
        table.add_row(
            _label(r), str(r.luts), str(r.ffs), str(r.carries),
            f"{r.logic_cells}/{cap['LC']} ({100 * r.lc_share:.1f}%)",
            f"{r.ebr}/{cap['RAM']}", f"{r.spram_blocks}/{cap['SPRAM']}", f"{r.dsp}/{cap['DSP']}",
            f"{r.fmax_mhz:.1f}" if r.timing_met() else f"[red]{r.fmax_mhz:.1f}[/]",
            "yes" if r.fits() else "[red]NO[/]",
        )  # fmt: skip
    for build, exc in unplaced:
        table.add_row(
            _label(build), "", "", "",
            f"[red]{exc.logic_cells}/{cap['LC']} ({100 * exc.logic_cells / cap['LC']:.1f}%)[/]",
            "", "", "", "", "[red]NO[/]",
        )  # fmt: skip
    console.print(table)
    if len(results) == 2 and {r.harden for r in results} == {0, 1}:
        h0, h1 = sorted(results, key=lambda r: r.harden)
        console.print(
            f"hardening costs {h1.logic_cells - h0.logic_cells:+d} logic cells "
            f"({(h1.logic_cells / h0.logic_cells - 1) * 100:+.0f}%), "
            f"{h1.ffs - h0.ffs:+d} flip-flops, {h1.ebr - h0.ebr:+d} EBR"
        )
    for r in results:
        console.print(f"bitstream {_label(r)}: {r.bitstream}")


def targets_main(args) -> int:
    documents = []
    for harden in _builds(args.harden):
        result = netlist.load_targets(harden, clks_per_bit=args.clks_per_bit)
        if args.json:
            documents.append(result)
            continue
        from orbithil.tools.inject_cli import targets_table

        make_console().print(targets_table(result, f"fault-injection targets, HARDEN={harden}"))
    if args.json:  # one document: a list of the builds' objects, as `synth --json` prints
        print(json.dumps(documents))
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
    flight = synth.FLIGHT
    p.add_argument(
        "--fec",
        choices=["0", "1"],
        default=str(flight["fec"]),
        help=f"1: with the link's forward error correction (default {flight['fec']})",
    )
    p.add_argument(
        "--inject",
        choices=["0", "1"],
        default=str(flight["inject"]),
        help="1: with the INJECT command and its flip logic, for bench boards that run "
        f"injection campaigns; 0: a flight bitstream (default {flight['inject']})",
    )
    p.add_argument(
        "--spram",
        choices=["0", "1"],
        default=str(flight["spram"]),
        help=f"1: the data SRAM in SPRAM; 0: in block RAM (default {flight['spram']})",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print only JSON: per build harden, fec, inject, spram, logic_cells, lc_share, "
        "ebr, spram_blocks, fmax_mhz, timing_met (at 12 MHz), fits",
    )
    p.add_argument(
        "--out",
        help="copy the bitstreams here as chip-h<H>-f<F>-i<I>-s<S>.bin (default: the cache)",
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
    t.add_argument(
        "--json", action="store_true",
        help="print one JSON document: a list with an object per build",
    )  # fmt: skip
    t.set_defaults(func=targets_main)
