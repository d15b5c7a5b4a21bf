"""Benchmarks: ``orbithil bench NAME [--json]``.

Each benchmark measures the things it compares side by side in one run (alternating them,
best of several repeats), so a ratio holds even when the machine's speed drifts. They are
commands, not tests: nothing here is timed inside the test suite.
"""

from __future__ import annotations

import importlib
import json
import operator
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


def main(args) -> int:
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
    p.add_argument("name", help=f"one of: {', '.join(BENCHMARKS)}")
    p.add_argument("--json", action="store_true", help='print {"name": ..., "metrics": {...}}')
    p.add_argument(
        "--quick", action="store_true", help="smaller workload (seconds), noisier figures"
    )
    p.set_defaults(func=main)
