"""Benchmarks: ``orbithil bench NAME [--json]``.

Each benchmark measures the things it compares side by side in one run (alternating them,
best of several repeats), so a ratio holds even when the machine's speed drifts. They are
commands, not tests: nothing here is timed inside the test suite.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import operator
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from orbithil.tools.console import console as make_console

# name -> (module with `run(quick: bool) -> BenchResult`, one-line description)
BENCHMARKS: dict[str, tuple[str, str]] = {
    "codec": (
        "orbithil.tools.bench.codec",
        "frames, COBS and SECDED: C vs pure Python vs the cobs package",
    ),
    "hal": (
        "orbithil.tools.bench.hal",
        "Chip API per backend; 1% byte corruption: correctness, throughput",
    ),
    "inject": (
        "orbithil.tools.bench.inject",
        "injection engine vs a process per injection; sim efficiency",
    ),
    "campaign": (
        "orbithil.tools.bench.campaign",
        "campaign scaling 1->2 workers, store overhead, report",
    ),
    "flight": (
        "orbithil.tools.bench.flight",
        "rate-group jitter under load, TM packets/s, TC round trip",
    ),
    "payload": (
        "orbithil.tools.bench.payload",
        "the model on a pool of chips: inferences/s 1->2 chips, accuracy, policies, failover",
    ),
    "ground": (
        "orbithil.tools.bench.ground",
        "ground server: archive ingest/s, a day's query, telemetry latency to the page",
    ),
    "ledger": (
        "orbithil.tools.bench.ledger",
        "compute-token ledger: settlements/s on disk, ledger check over 1M rows, replay, booking",
    ),
}

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "<": operator.lt,
}


@dataclass
class BenchResult:
    """Metrics of one benchmark run, and the targets some of them are held to."""

    metrics: dict[str, float | int | str]
    targets: dict[str, tuple[str, float]] = field(default_factory=dict)
    params: dict[str, object] = field(default_factory=dict)

    def verdicts(self) -> dict[str, bool]:
        return {
            key: _OPS[op](float(self.metrics[key]), bound)
            for key, (op, bound) in self.targets.items()
        }

    def as_json(self, name: str) -> dict:
        return {
            "name": name,
            "metrics": self.metrics,
            "targets": {k: f"{op} {bound:g}" for k, (op, bound) in self.targets.items()},
            "targets_met": self.verdicts(),
            "params": self.params,
        }


def run(name: str, *, quick: bool = False) -> BenchResult:
    if name not in BENCHMARKS:
        raise KeyError(f"no benchmark {name!r}; choose from {', '.join(sorted(BENCHMARKS))}")
    module = importlib.import_module(BENCHMARKS[name][0])
    return module.run(quick=quick)


class Steal:
    """The share of the CPUs' time the hypervisor ran something else, between ``__init__``
    and ``share()``: the ``steal`` ticks over all the ticks of the ``cpu`` line of
    /proc/stat (0.0 on a machine that is not virtual, does not count it, or has no
    /proc/stat)."""

    STAT = "/proc/stat"

    def __init__(self) -> None:
        self._start = self._ticks()

    @classmethod
    def _ticks(cls) -> tuple[int, int]:
        """(steal, all) ticks since boot; (0, 0) when they cannot be read."""
        try:
            with open(cls.STAT) as stat:
                fields = stat.readline().split()
        except OSError:
            return 0, 0
        if len(fields) < 9 or fields[0] != "cpu" or not all(f.isdigit() for f in fields[1:9]):
            return 0, 0
        # user nice system idle iowait irq softirq steal (guest time is inside user and nice)
        ticks = [int(f) for f in fields[1:9]]
        return ticks[7], sum(ticks)

    def share(self) -> float:
        (steal0, all0), (steal1, all1) = self._start, self._ticks()
        return round((steal1 - steal0) / (all1 - all0), 4) if all1 > all0 else 0.0


def machine() -> dict:
    """What the figures were measured on: CPU, cores, memory, OS, Python, the commit."""
    import os
    import platform
    import subprocess
    from pathlib import Path

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory_gib = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gib = round(int(line.split()[1]) / 2**20, 1)
    commit = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
            cwd=Path(__file__).resolve().parent,
        )  # fmt: skip
        commit = out.stdout.strip() or None
    return {
        "cpu": cpu, "cores": os.cpu_count(), "memory_gib": memory_gib,
        "os": platform.platform(), "python": platform.python_version(), "commit": commit,
    }  # fmt: skip


def noisy(name: str) -> tuple[tuple[str, ...], int]:
    """(metrics that swing with the machine's load, runs to take of them) of a benchmark:
    its module's ``NOISY`` and ``REPEATS`` (none, one run when it declares neither)."""
    module = importlib.import_module(BENCHMARKS[name][0])
    return tuple(getattr(module, "NOISY", ())), int(getattr(module, "REPEATS", 1))


def repeated(name: str, runs: list[BenchResult], keys: tuple[str, ...]) -> dict:
    """One entry from several runs of a benchmark: each noisy metric is the median of the
    runs, with its spread (min, max, every run) under ``spread``; a target on a noisy
    metric is met only if it held in every run. Other metrics are the first run's."""
    entry = runs[0].as_json(name)
    if len(runs) == 1:
        return entry
    entry["metrics"] = dict(entry["metrics"])  # as_json's is the run's own dict
    entry["spread"] = {}
    for key in keys:
        values = [r.metrics[key] for r in runs]
        entry["metrics"][key] = round(statistics.median(values), 4)
        entry["spread"][key] = {"min": min(values), "max": max(values), "runs": values}
        if key in runs[0].targets:
            entry["targets_met"][key] = all(r.verdicts()[key] for r in runs)
    entry["runs"] = len(runs)
    return entry


def run_all(*, quick: bool = False, names=None, progress=None) -> dict:
    """Every benchmark in turn: one document with each one's figures (or why it could
    not run), the machine and the time taken. A benchmark with noisy ratios runs
    ``REPEATS`` times (once with ``quick``); see ``repeated``."""
    started, total_steal = time.time(), Steal()
    out: dict = {"machine": machine(), "quick": quick, "started": started, "benchmarks": {}}
    for name in names or BENCHMARKS:
        keys, repeats = noisy(name)
        repeats = 1 if quick else repeats
        t, steal = time.perf_counter(), Steal()
        try:
            runs = []
            for i in range(repeats):
                if progress is not None:
                    progress(name if repeats == 1 else f"{name} (run {i + 1} of {repeats})")
                runs.append(run(name, quick=quick))
            entry = repeated(name, runs, keys)
        except RuntimeError as exc:  # cannot run here (no board, no tool): says why
            entry = {"name": name, "skipped": str(exc)}
        entry["seconds"] = round(time.perf_counter() - t, 1)
        entry["cpu_steal_share"] = steal.share()
        out["benchmarks"][name] = entry
    out["seconds"] = round(time.time() - started, 1)
    out["cpu_steal_share"] = total_steal.share()
    return out


def markdown(document: dict) -> str:
    """``run_all``'s document as a markdown table per benchmark: each figure with its
    target and whether it was met."""
    m = document["machine"]
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(document["started"]))
    lines = [
        "# Benchmarks",
        "",
        f"`orbithil bench all{' --quick' if document['quick'] else ''}` on {when}, commit "
        f"`{m.get('commit')}`, {document['seconds'] / 60:.1f} min in all.",
        f"Machine: {m.get('cpu')}, {m.get('cores')} cores, {m.get('memory_gib')} GiB, "
        f"{m.get('os')}, Python {m.get('python')}.",
    ]
    if "cpu_steal_share" in document:
        lines.append(
            f"CPU time stolen by the hypervisor during the run: {document['cpu_steal_share']:.1%} "
            "of all the CPUs' time (a stolen CPU runs nothing: timing figures suffer with it)."
        )
    lines.append("")
    short = [
        f"{name}.{key}"
        for name, entry in document["benchmarks"].items()
        for key, met in entry.get("targets_met", {}).items()
        if not met
    ]
    lines += [
        "Targets short in this run: " + (", ".join(f"`{k}`" for k in short) or "none") + ".",
        "",
    ]
    for name, entry in document["benchmarks"].items():
        description = BENCHMARKS.get(name, ("", ""))[1]
        stolen = entry.get("cpu_steal_share")
        stolen = f"; {stolen:.1%} of the CPU time stolen meanwhile" if stolen is not None else ""
        lines += [f"## {name}", "", f"{description} ({entry['seconds']} s{stolen}).", ""]
        if "skipped" in entry:
            lines += [f"Not run here: {entry['skipped']}", ""]
            continue
        spread = entry.get("spread", {})
        if spread:
            lines += [
                f"{entry['runs']} runs: a figure with a spread is the median of the runs "
                "(min-max after it), and its target is met only if it held in every run.",
                "",
            ]
        lines += ["| metric | value | target | |", "|---|---|---|---|"]
        targets, met = entry.get("targets", {}), entry.get("targets_met", {})
        for key, value in entry["metrics"].items():
            shown = _shown(value)
            if key in spread:
                shown += f" ({_shown(spread[key]['min'])}-{_shown(spread[key]['max'])})"
            shown = shown.replace("|", "\\|")
            verdict = "" if key not in met else ("met" if met[key] else "**short**")
            lines.append(f"| {key} | {shown} | {targets.get(key, '')} | {verdict} |")
        lines.append("")
    return "\n".join(lines)


def _shown(value) -> str:
    return f"{value:,.3f}" if isinstance(value, float) else str(value)


def all_main(args) -> int:
    from pathlib import Path

    console = make_console(stderr=True)
    document = run_all(quick=args.quick, progress=lambda name: console.print(f"bench {name} ..."))
    if args.markdown:
        path = Path(args.markdown)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(markdown(document))
        console.print(f"wrote {path}")
    if args.json:
        print(json.dumps(document))
    else:
        print(markdown(document))
    return 0


def main(args) -> int:
    if args.name == "all":
        return all_main(args)
    try:
        result = run(args.name, quick=args.quick)
    except KeyError as exc:
        print(f"orbithil bench: {exc.args[0]}")
        return 2
    except RuntimeError as exc:  # a benchmark that cannot run here says why
        print(f"orbithil bench {args.name}: {exc}")
        return 1
    if args.json:
        print(json.dumps(result.as_json(args.name)))
        return 0
    from rich.table import Table

    table = Table(title=f"orbithil bench {args.name}")
    for column in ("metric", "value", "target"):
        table.add_column(column)
    verdicts = result.verdicts()
    for key, value in result.metrics.items():
        target = ""
        if key in result.targets:
            op, bound = result.targets[key]
            target = f"{op} {bound:g} " + ("[green]met[/]" if verdicts[key] else "[red]MISSED[/]")
        shown = f"{value:,.3f}" if isinstance(value, float) else str(value)
        table.add_row(key, shown, target)
    make_console().print(table)
    return 0


def register(subparsers) -> None:
    names = ", ".join(f"{k} ({v[1]})" for k, v in BENCHMARKS.items())
    p = subparsers.add_parser(
        "bench", help="run a named benchmark", description=f"benchmarks: {names}"
    )
    p.add_argument("name", help=f"one of: {', '.join(BENCHMARKS)}, or all (every one in turn)")
    p.add_argument("--json", action="store_true", help='print {"name": ..., "metrics": {...}}')
    p.add_argument(
        "--quick", action="store_true", help="smaller workload (seconds), noisier figures"
    )
    p.add_argument(
        "--markdown",
        metavar="FILE",
        help="with all: also write the figures as a markdown table (docs/benchmarks.md)",
    )
    p.set_defaults(func=main)
