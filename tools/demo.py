"""``orbithil demo``: the README's main job.

A short SEU campaign on the simulated chip: the inference workload (a small quantised
network run as matvec jobs; ``--workload digits``: the on-board digits model) on the
hardened (HARDEN=1) and unhardened (HARDEN=0) builds under Verilator, single bit flips
drawn uniformly over every flip-flop and memory bit and every cycle of the run. It checks
the machine first, builds what it needs (cached), runs the campaign with one simulator
per core, and ends with the outcome table, the table of answers changed per reliability
policy (the share of upsets that change the class the payload delivers) and a
self-contained HTML report.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from orbithil.errors import ConfigError
from orbithil.tools import doctor
from orbithil.tools.campaign import report
from orbithil.tools.campaign import spec as spec_mod
from orbithil.tools.console import console as make_console

DEMO_DIR = Path("build") / "demo"  # relative to where the demo is run (make demo: the checkout)


DEMO_WORKLOADS = ("inference", "digits")  # workloads that end in an answer (a class)


def demo_spec(injections: int, seed: int, workload: str = "inference") -> spec_mod.Spec:
    return spec_mod.parse(
        {
            "name": f"demo: hardened vs unhardened chip, {workload} workload",
            "seed": seed,
            "workload": {"name": workload, "seed": 0},
            "chip": {"harden": [0, 1], "simulator": "verilator"},
            "fault": {"model": "flip"},
            "size": {"injections": injections},
            "run": {"executor": "local", "chunk": 400},
            "orbit": {"rate": "leo"},
        },
        source="orbithil demo",
    )


def _keep_or_replace(store_path: Path, spec: spec_mod.Spec, *, force: bool) -> None:
    """A demo store of the same options is continued (a finished one is only reported
    again); one from other options, or any other file there, is replaced only with
    ``--force``: a user's results are never lost to a second run."""
    if not store_path.exists():
        return
    if not force:
        from orbithil.tools.campaign.store import Store, StoreError

        try:
            with Store(store_path, readonly=True) as store:
                held = store.meta("spec") or {}
        except StoreError as exc:
            raise DemoError(
                f"{exc}; the demo keeps it: pass --force to replace it, or --out DIR for "
                "another folder"
            ) from None
        wanted = json.loads(json.dumps(spec.to_dict()))
        # how it runs (executor, workers, chunk size) changes no result: not an option here
        same = dict.fromkeys(("source", "executor", "workers", "scheduler", "chunk"), "")
        if held | same == wanted | same:
            return  # the same demo: continued or reported again
        raise DemoError(
            f"{store_path} holds a demo of other options ({_describe(held)}; asked: "
            f"{_describe(wanted)}); run with those options to continue it, --force to replace "
            "it, or --out DIR for another folder"
        )
    for stale in store_path.parent.glob(store_path.name + "*"):
        stale.unlink()


def _describe(spec: dict) -> str:
    return (
        f"{spec.get('injections')} injections per build, workload {spec.get('workload')}, "
        f"seed {spec.get('seed')}"
    )


def _same_options(args) -> list[str]:
    return [f"--injections {args.injections}", f"--seed {args.seed}",
            f"--workload {args.workload}", f"--out {args.out}"]  # fmt: skip


class DemoError(ConfigError):
    """The demo would replace results a user made."""


def main(args) -> int:
    from orbithil.tools.campaign.cli import interrupted, print_tables, run_with_progress
    from orbithil.tools.campaign.run import create

    console = make_console()
    out = Path(args.out).resolve()
    spec = demo_spec(args.injections, args.seed, args.workload)
    store_path = out / "campaign.sqlite"
    _keep_or_replace(store_path, spec, force=args.force)
    if doctor.main(argparse.Namespace(json=False)) != 0:
        console.print("[red]the machine is missing tools the demo needs (see above)[/]")
        return 1
    out.mkdir(parents=True, exist_ok=True)
    (out / "campaign.toml").write_text(
        "# the demo's campaign, as a spec you can edit and run with `orbithil campaign run`\n"
        + spec_mod.to_toml(spec)
    )
    console.print(
        f"\n[bold]SEU campaign[/]: {args.injections} single bit flips into each build "
        f"(HARDEN=0 and HARDEN=1), {args.workload} workload, Verilator. First run: builds the "
        "chip and lists its flip-flops with yosys (a minute or two, then cached)."
    )
    started = time.perf_counter()
    store = create(store_path, spec)
    with store:
        try:
            summary = run_with_progress(store, spec)
        except KeyboardInterrupt:
            return interrupted(store, "orbithil demo " + " ".join(_same_options(args)))
        print_tables(report.summarise(store))
        html = report.write_html(store, out / "report.html")
    console.print(
        f"{summary.done} injections in {summary.seconds:.0f} s "
        f"({summary.done / max(summary.seconds, 1e-9):.0f}/s); whole demo "
        f"{time.perf_counter() - started:.0f} s.\n"
        f"store:  {store_path}\nreport: {html}"
    )
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="the built-in demo (README's first command)")
    p.add_argument("--injections", type=int, default=4000, help="per build")
    p.add_argument("--seed", type=int, default=1, help="seed of the plan")
    p.add_argument(
        "--workload",
        choices=DEMO_WORKLOADS,
        default="inference",
        help="what the chip runs: the small network (default) or the on-board digits model",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace a store in --out made with other options (kept without it)",
    )
    # older spelling: continuing a store of the same options is what the demo always does
    p.add_argument("--resume", action="store_true", help=argparse.SUPPRESS)
    p.add_argument(
        "--out",
        default=str(DEMO_DIR),
        help="folder for the demo's spec, store and report (default: %(default)s, from here)",
    )
    p.set_defaults(func=main)
