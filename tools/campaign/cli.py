"""``orbithil campaign``: new, plan, run (and resume), status, report, export."""

from __future__ import annotations

import json
import sqlite3
import sys
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from orbithil.errors import ConfigError, OrbithilError
from orbithil.sim import prune
from orbithil.tools.campaign import report, stats
from orbithil.tools.campaign import spec as spec_mod
from orbithil.tools.campaign.store import Store, StoreError, sqlite_problem
from orbithil.tools.console import console as make_console


def new_main(args) -> int:
    path = Path(args.path)
    if path.exists() and not args.force:
        print(f"{path} exists; pass --force to overwrite it", file=sys.stderr)
        return 1
    path.write_text(spec_mod.EXAMPLE)
    print(f"wrote {path}; edit it, then `orbithil campaign plan {path}`")
    return 0


def plan_main(args) -> int:
    from orbithil.tools.campaign.run import plan_builds

    if args.spec is None:
        if args.margin is None:
            print("give a SPEC, or --margin (with --confidence, --population)", file=sys.stderr)
            return 2
        n = stats.sample_size(args.margin, args.confidence, args.population, args.p)
        if args.json:
            print(json.dumps({"sample_size": n, "margin": args.margin,
                              "confidence": args.confidence, "population": args.population,
                              "p": args.p}))  # fmt: skip
            return 0
        print(
            f"sample size: {n} injections for a margin of {args.margin:g} at "
            f"{args.confidence:g} confidence over N = {args.population:,.0f} (p = {args.p:g}; "
            "Leveugle et al., DATE 2009)"
        )
        return 0
    spec = spec_mod.load(args.spec)
    table = Table(title=f"campaign {spec.name}: plan (seed {spec.seed})")
    for col in ("build", "simulator", "workload", "target bits", "golden cycles",
                "fault space N", "injections", "margin at 95%"):  # fmt: skip
        table.add_column(col, justify="right")
    rows = []
    for build in plan_builds(spec):
        # the margin this n gives for p = 0.5, the worst case
        n, population = build.n, build.population
        t = stats.z_value(spec.confidence)
        margin = t * (0.25 / n * (population - n) / max(population - 1, 1)) ** 0.5
        rows.append({
            "harden": build.setup.harden, "simulator": build.setup.sim,
            "workload": build.setup.workload, "target_bits": build.space.total_bits,
            "golden_cycles": build.golden.cycles, "population": population,
            "injections": n, "margin": margin,
        })  # fmt: skip
        table.add_row(
            f"HARDEN={build.setup.harden}", build.setup.sim, build.setup.workload,
            f"{build.space.total_bits:,}", f"{build.golden.cycles:,}", f"{population:,}",
            f"{n:,}", f"±{margin:.2%}",
        )  # fmt: skip
    if args.json:
        print(json.dumps({"name": spec.name, "seed": spec.seed, "builds": rows}))
        return 0
    make_console().print(table)
    if spec.margin is not None:
        print(
            f"sized for a margin of {spec.margin:g} at {spec.confidence:.0%} confidence "
            "(Leveugle et al., DATE 2009, p = 0.5)"
        )
    return 0


def run_main(args) -> int:
    from orbithil.tools.campaign.run import create

    store_path = Path(args.store)
    if args.spec:
        spec = spec_mod.load(args.spec)
        store = create(store_path, spec)
    else:
        store = Store(store_path)
        spec = spec_mod.Spec.from_dict(store.meta("spec"))
    with store:
        try:
            summary = run_with_progress(store, spec, args)
        except KeyboardInterrupt:
            return interrupted(store, f"orbithil campaign run --store {store_path}")
        counts = store.counts()
        summaries = report.summarise(store)
        decided = Counter()
        for kinds in store.pruning().values():
            decided.update(kinds)
        if args.json:
            print(json.dumps({
                "store": str(store_path.resolve()), "ran": summary.done,
                "seconds": summary.seconds, "rate": summary.done / max(summary.seconds, 1e-9),
                **_status(counts), "pruning": dict(decided),
                "answers": report.answers_json(summaries),
            }))  # fmt: skip
            return 0 if counts["done"] >= counts["planned"] else 1
        simulated = prune.simulated(decided)
        print(
            f"{summary.done} injections in {summary.seconds:.1f} s "
            f"({summary.done / max(summary.seconds, 1e-9):.1f}/s); store {store_path}\n"
            f"of all {counts['done']} results: {simulated} simulated, "
            f"{counts['done'] - simulated} decided by their memory word's def/use class "
            f"(overwritten {decided['overwritten']}, never read again {decided['unread']}, "
            f"same class as a simulated one {decided['reused']})"
        )
        if counts["done"] < counts["planned"]:
            print(f"{counts['planned'] - counts['done']} injections still pending", file=sys.stderr)
            return 1
        print_tables(summaries)
    return 0


EXIT_INTERRUPTED = 130  # as a shell reports a process ended by SIGINT


def interrupted(store: Store, resume: str) -> int:
    """Ctrl-C during a run: say what was kept and how to go on."""
    counts = store.counts()
    print(
        f"interrupted: {counts['done']}/{counts['planned']} injections done, every finished "
        f"one kept in {store.path}; `{resume}` resumes",
        file=sys.stderr,
    )
    return EXIT_INTERRUPTED


def print_tables(summaries: list[report.BuildSummary], console: Console | None = None) -> None:
    """The outcome table, and the answers table when a build's workload gives answers."""
    console = console or wide_console()
    console.print(report.terminal_table(summaries))
    answers = report.answers_table(summaries)
    if answers is not None:
        console.print(answers)


def run_with_progress(store: Store, spec, args=None, *, console: Console | None = None):
    """Execute the pending injections with a live bar (rate, ETA, outcome counts) when on
    a terminal, quiet otherwise."""
    from orbithil.tools.campaign.run import execute

    console = console or make_console(stderr=True)
    counts = store.counts()
    total, done = counts["planned"], counts["done"]
    tally = {k: v for k, v in counts.items() if k not in ("planned", "done")}
    kwargs = {}
    if args is not None:
        kwargs = {"workers": args.workers, "executor": args.executor, "scheduler": args.scheduler}
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TaskProgressColumn(), TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
        TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[outcomes]}"),
        console=console, disable=not console.is_terminal, transient=False,
    ) as progress:  # fmt: skip
        task = progress.add_task(spec.name, total=total, completed=done, rate="", outcomes="")
        import time

        started = time.perf_counter()
        seen = [0]

        def on_result(outcome: str) -> None:
            tally[outcome] = tally.get(outcome, 0) + 1
            seen[0] += 1
            rate = seen[0] / max(time.perf_counter() - started, 1e-9)
            text = " ".join(f"{k}:{v}" for k, v in sorted(tally.items()))
            progress.update(task, advance=1, rate=f"{rate:.1f}/s", outcomes=text)

        return execute(store, spec, on_result=on_result, **kwargs)


def _status(counts: dict) -> dict:
    outcomes = {k: v for k, v in counts.items() if k not in ("planned", "done")}
    return {"planned": counts["planned"], "done": counts["done"], "outcomes": outcomes}


def status_main(args) -> int:
    with Store(args.store, readonly=True) as store:
        counts = store.counts()
        summaries = report.summarise(store)
    if args.json:
        print(json.dumps({**_status(counts), "answers": report.answers_json(summaries)}))
        return 0
    rest = {k: v for k, v in counts.items() if k not in ("planned", "done")}
    share = counts["done"] / max(counts["planned"], 1)
    print(f"{counts['done']}/{counts['planned']} done ({share:.0%}); " +
          ", ".join(f"{k} {v}" for k, v in sorted(rest.items())))  # fmt: skip
    answers = report.answers_table(summaries)
    if answers is not None and counts["done"]:
        wide_console().print(answers)
    return 0


def report_main(args) -> int:
    with Store(args.store, readonly=True) as store:
        print_tables(report.summarise(store))
        out = Path(args.html or Path(args.store).with_suffix(".html"))
        report.write_html(store, out)
        print(f"report: {out.resolve()}")
        if args.csv:
            print(f"{report.export_csv(store, Path(args.csv))} rows -> {args.csv}")
        if args.json:
            print(f"{report.export_json(store, Path(args.json))} rows -> {args.json}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("campaign", help="fault-injection campaigns: plan, run, report")
    sub = p.add_subparsers(title="campaign commands", metavar="ACTION")

    n = sub.add_parser("new", help="write a commented example spec")
    n.add_argument("path", nargs="?", default="campaign.toml", help="where to write the spec")
    n.add_argument("--force", action="store_true", help="overwrite an existing file")
    n.set_defaults(func=handle_errors(new_main))

    pl = sub.add_parser(
        "plan", help="size a campaign and print its plan; or a sample size from --margin"
    )
    pl.add_argument("spec", nargs="?", help="the TOML spec to plan (omit with --margin)")
    pl.add_argument("--margin", type=float, help="without SPEC: the wanted error margin")
    pl.add_argument(
        "--confidence", type=float, default=0.95, help="with --margin: the confidence level"
    )
    pl.add_argument("--json", action="store_true", help="print the plan as one JSON object")
    pl.add_argument("--population", type=float, default=float("inf"), help="fault space N")
    pl.add_argument("--p", type=float, default=0.5, help="expected share (0.5: worst case)")
    pl.set_defaults(func=handle_errors(plan_main))

    r = sub.add_parser("run", help="run a campaign, or resume the one in --store")
    r.add_argument("spec", nargs="?", help="the TOML spec (omit to resume --store)")
    r.add_argument("--store", required=True, help="SQLite file with the plan and results")
    r.add_argument("--workers", type=int, help="local simulators in parallel")
    r.add_argument(
        "--executor", choices=spec_mod.EXECUTORS, help="where to run (default: the spec's)"
    )
    r.add_argument("--scheduler", help="Dask scheduler address, e.g. tcp://host:8786")
    r.add_argument(
        "--json", action="store_true", help="print the summary as one JSON object at the end"
    )
    r.set_defaults(func=handle_errors(run_main))

    s = sub.add_parser("status", help="progress of a store (safe while it runs)")
    s.add_argument("store", help="the campaign's SQLite store")
    s.add_argument("--json", action="store_true", help="print the counts as one JSON object")
    s.set_defaults(func=handle_errors(status_main))

    rp = sub.add_parser("report", help="table, HTML report, CSV/JSON export")
    rp.add_argument("store", help="the campaign's SQLite store")
    rp.add_argument("--html", help="where to write the HTML (default: next to the store)")
    rp.add_argument("--csv", help="also export every result to this CSV file")
    rp.add_argument("--json", help="also export every result to this JSON file")
    rp.set_defaults(func=handle_errors(report_main))
    p.set_defaults(func=lambda args: p.print_help() or 2)


def wide_console() -> Console:
    """Tables of shares with intervals need width; a pipe or log gets 160 columns."""
    return make_console()


def handle_errors(func):
    def wrapped(args) -> int:
        try:
            return func(args)
        except sqlite3.Error as exc:
            # a store that opened but fails later (damaged past its first pages, a full disk)
            raise StoreError(sqlite_problem(Path(getattr(args, "store", "store")), exc)) from None
        except ValueError as exc:
            if isinstance(exc, OrbithilError):
                raise
            # the spec's numbers reach numeric code that checks them with ValueError
            raise ConfigError(str(exc)) from exc

    return wrapped
