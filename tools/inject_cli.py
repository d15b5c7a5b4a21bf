"""``orbithil inject``: fault-injection targets, golden runs and injection runs.

orbithil inject targets --harden 1
orbithil inject run --harden 0 --workload inference --n 200 --seed 1
orbithil inject run --chip /dev/ttyUSB1 --harden 1 --n 50 --seed 1   # a board
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter

from rich.table import Table

from orbithil.payload.classify import Outcome
from orbithil.sim import prune
from orbithil.sim.faults import FaultModel, TargetSpace
from orbithil.tools.campaign.report import BuildSummary, answers_table, terminal_table
from orbithil.tools.console import console as make_console


def _setup(args):
    from orbithil.sim.inject import Setup

    return Setup(args.sim, int(args.harden), args.workload, args.workload_seed)


def targets_table(targets: dict, title: str) -> Table:
    """Injectable bits per block of one build (``sim.netlist`` targets)."""
    space = TargetSpace(targets)
    table = Table(title=title)
    table.add_column("block")
    table.add_column("flip-flop bits", justify="right")
    table.add_column("memory bits", justify="right")
    table.add_column("share", justify="right")
    for block, (ff, mem) in sorted(space.block_bits().items()):
        share = (ff + mem) / space.total_bits
        table.add_row(block, str(ff or ""), str(mem or ""), f"{share:.1%}")
    table.add_row("[b]total[/]", str(space.ff_bits), str(space.memory_bits), "100%")
    return table


def targets_main(args) -> int:
    from orbithil.sim import netlist

    console = make_console()
    documents = []
    for harden in (0, 1) if args.harden == "both" else (int(args.harden),):
        targets = netlist.load_targets(harden, clks_per_bit=args.clks_per_bit)
        if args.json:
            blocks = TargetSpace(targets).bits_per_block()
            documents.append({"harden": harden, "bits_per_block": blocks})
            continue
        title = f"injection targets, HARDEN={harden} (CLKS_PER_BIT={args.clks_per_bit})"
        console.print(targets_table(targets, title))
    if args.json:  # one document: a list of the builds' objects, as `synth --json` prints
        print(json.dumps(documents))
    return 0


def run_main(args) -> int:
    from orbithil.sim import inject

    setup = _setup(args)
    console = make_console(stderr=True)
    blocks = set(args.blocks.split(",")) if args.blocks else None
    started = time.perf_counter()
    if args.chip:
        from orbithil import hal
        from orbithil.sim import board_inject

        space = board_inject.board_space(setup.targets())
        injections = space.plan(args.n, seed=args.seed, cycles=(0, inject.golden(setup).cycles - 1))
        with hal.open(args.chip) as chip:
            results = board_inject.run_plan_on_chip(chip, setup, injections)
        where = args.chip
    else:
        injections = inject.plan(
            setup, args.n, seed=args.seed, model=args.model, blocks=blocks, glob=args.glob
        )
        with console.status(f"{len(injections)} injections on {setup.sim} ..."):
            results = inject.run_plan(setup, injections, prune=not args.no_prune)
        where = f"{setup.sim}"
    elapsed = time.perf_counter() - started
    counts = Counter(r.outcome.value for r in results)
    decided = Counter(r.info.get("pruning", "simulated") for r in results)
    if args.json:
        print(json.dumps({
            "setup": {**setup.__dict__, "chip": args.chip, "model": args.model, "seed": args.seed},
            "n": len(results), "outcomes": dict(counts), "seconds": round(elapsed, 2),
            "pruning": dict(decided),
        }))  # fmt: skip
    else:
        summary = BuildSummary.from_results(setup.harden, setup.sim, setup.workload, results)
        title = (
            f"{args.model} on {where}, HARDEN={setup.harden}, workload {setup.workload}, "
            f"n={len(results)}, seed {args.seed}"
        )
        console = make_console()
        console.print(terminal_table([summary], title=title, counts=True))
        answers = answers_table([summary])
        if answers is not None:  # the workload has an answer (a class) to change
            console.print(answers)
        simulated = prune.simulated(decided)
        print(
            f"{len(results)} injections in {elapsed:.1f} s: {simulated} simulated, "
            f"{len(results) - simulated} decided by their memory word's def/use class"
        )
    tool_errors = counts.get(Outcome.TOOL_ERROR.value, 0)
    if tool_errors:
        print(f"{tool_errors} injection(s) failed in the tool (not counted)", file=sys.stderr)
    return 0


def register(subparsers) -> None:
    from orbithil.payload.workloads import WORKLOADS

    p = subparsers.add_parser("inject", help="SEU injection: targets, runs on sim or a board")
    sub = p.add_subparsers(title="inject commands", metavar="ACTION")

    t = sub.add_parser("targets", help="injectable bits per block (from the netlist)")
    t.add_argument(
        "--harden",
        choices=["0", "1", "both"],
        default="both",
        help="which build: 0 (unhardened), 1 (hardened) or both",
    )
    t.add_argument("--clks-per-bit", type=int, default=4, help="the build's UART divider")
    t.add_argument(
        "--json", action="store_true",
        help="print one JSON document: a list with an object per build",
    )  # fmt: skip
    t.set_defaults(func=targets_main)

    r = sub.add_parser("run", help="run a seeded plan and print outcome counts")
    r.add_argument("--harden", choices=["0", "1"], default="1", help="the build to inject into")
    r.add_argument("--sim", choices=["verilator", "icarus"], default="verilator", help="simulator")
    r.add_argument(
        "--workload", choices=sorted(WORKLOADS), default="inference", help="what the chip runs"
    )
    r.add_argument("--workload-seed", type=int, default=0, help="seed of the workload's data")
    r.add_argument("--n", type=int, default=200, help="number of injections")
    r.add_argument("--seed", type=int, default=1, help="seed of the plan")
    r.add_argument(
        "--model", choices=[m.value for m in FaultModel], default="flip", help="fault model"
    )
    r.add_argument("--blocks", help="comma-separated blocks to restrict the plan to")
    r.add_argument("--glob", help="only targets whose name matches this glob")
    r.add_argument(
        "--chip",
        help="a HAL URL (a board's serial port, model://, sim://): inject through the "
        "chip's INJECT command instead of the simulator (register file and SRAM only)",
    )
    r.add_argument(
        "--no-prune",
        action="store_true",
        help="simulate every fault, also those whose memory word's def/use class decides "
        "them (the same outcomes, slower: to check the pruning)",
    )
    r.add_argument("--json", action="store_true", help="print the summary as JSON")
    r.set_defaults(func=run_main)
    p.set_defaults(func=lambda args: p.print_help() or 2)
