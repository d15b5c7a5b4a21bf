"""Run injection plans on the simulated chip: golden runs, the engine, the naive way.

The orchestration on the parent's side of ``sim.engine``. A plan runs in a child process
(``sim.process``: its own session, a deadline, killed with its simulator on timeout) that
appends one JSON line per injection as it finishes; results are classified here against
the golden run. An injection whose run failed in the tool (an exception, a crashed or
stuck simulator) is retried once in a fresh process and then reported as ``tool_error``.
The same plan on a chip behind the HAL (a board) is ``sim.board_inject``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from orbithil.errors import ConfigError
from orbithil.payload import workloads
from orbithil.payload.classify import (
    Observation,
    Outcome,
    classify,
    misclassified,
    observation_from_dict,
)
from orbithil.payload.workloads import WORKLOADS
from orbithil.sim import engine_port, harness, netlist
from orbithil.sim.faults import FaultModel, Injection, TargetSpace, injection_to_dict
from orbithil.sim.paths import write_atomically
from orbithil.sim.process import EngineError, launch_engine

__all__ = ["EngineError", "GoldenRecord", "Result", "Setup", "golden", "plan", "run_plan"]

log = logging.getLogger(__name__)

SETUP_TIMEOUT_S = 600.0  # a first build of the chip under Verilator takes about a minute
PER_INJECTION_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class Setup:
    """One (simulator, build, workload): what a golden run and a plan belong to."""

    sim: str = "verilator"
    harden: int = 1
    workload: str = "inference"
    seed: int = 0  # the workload's data
    clks_per_bit: int = 4
    mem_words: int = 2048

    def __post_init__(self) -> None:
        if self.sim not in harness.SIMULATORS:
            raise ConfigError(f"simulator {self.sim!r}: use one of {', '.join(harness.SIMULATORS)}")
        if self.harden not in (0, 1):
            raise ConfigError(f"harden must be 0 or 1, got {self.harden!r}")
        if self.workload not in WORKLOADS:
            raise ConfigError(f"no workload {self.workload!r}; workloads: {', '.join(WORKLOADS)}")

    def build(self) -> harness.Build:
        return harness.chip_build(
            self.sim,
            engine=True,
            HARDEN=self.harden,
            CLKS_PER_BIT=self.clks_per_bit,
            MEM_WORDS=self.mem_words,
        )

    def targets(self) -> dict:
        return netlist.load_targets(
            self.harden, clks_per_bit=self.clks_per_bit, mem_words=self.mem_words
        )


@dataclass(frozen=True)
class GoldenRecord:
    observation: Observation
    cycles: int
    checkpoints: tuple[int, ...]


@dataclass
class Result:
    index: int
    injection: Injection
    outcome: Outcome
    observation: Observation
    info: dict = field(default_factory=dict)
    # an sdc that changed the workload's answer (its class); None: the workload has none
    misclassified: bool | None = None


def golden(setup: Setup, *, timeout_s: float = SETUP_TIMEOUT_S) -> GoldenRecord:
    """The golden run of ``setup`` (cached next to the build, keyed by its sources)."""
    cache = setup.build().build_dir / f"golden-{setup.workload}-{setup.seed}-{_engine_key()}.json"
    if cache.exists():
        data = json.loads(cache.read_text())
    else:
        lines = _launch(setup, "golden", [], timeout_s=timeout_s)
        found = [line for line in lines if line["kind"] == "golden"]
        if not found:
            raise EngineError(f"the golden run of {setup} produced nothing")
        data = found[0]
        write_atomically(cache, json.dumps(data))
    return GoldenRecord(
        observation_from_dict(data["observation"]), data["cycles"], tuple(data["checkpoints"])
    )


def _engine_key() -> str:
    """A hash of the code a golden run depends on besides the RTL (the build's key)."""
    digest = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for path in (here / "engine.py", here / "tb_link.py", Path(workloads.__file__)):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:10]


def plan(
    setup: Setup,
    n: int,
    *,
    seed: int,
    model: FaultModel | str = FaultModel.FLIP,
    blocks: set[str] | None = None,
    glob: str | None = None,
    **options,
) -> list[Injection]:
    """``n`` injections over the build's targets, at cycles inside the golden run."""
    space = TargetSpace(setup.targets(), blocks=blocks, glob=glob)
    cycles = golden(setup).cycles
    return space.plan(n, seed=seed, cycles=(0, cycles - 1), model=FaultModel(model), **options)


def run_plan(
    setup: Setup,
    injections: Iterable[tuple[int, Injection]] | list[Injection],
    *,
    mode: str = "engine",
    prune: bool = True,
    placement: bool = True,
    on_result: Callable[[Result], None] | None = None,
    on_golden: Callable[[dict], None] | None = None,
    verify_restore: bool = False,
) -> list[Result]:
    """Run ``injections`` (a list, or (index, injection) pairs) and classify each.

    ``mode`` "engine" runs them all in one simulator process, deciding memory faults by
    their def/use class unless ``prune`` is False (``sim.prune``: exact, the same outcome
    as simulating each), and restoring each simulated one from checkpoints placed for the
    plan's fault cycles unless ``placement`` is False (``sim.engine.Engine.place``; then
    the workload's step boundaries only); "naive" starts a fresh simulator process for
    each (the baseline the benchmark compares with). Each result's ``info["pruning"]``
    says how it was decided.

    ``on_golden`` gets each engine process's golden-run record: its checkpoint placement
    (``placement``: runs, marks, checkpoints taken, the costs) and, with
    ``verify_restore``, ``restore_check``: the process first runs fault-free from every
    checkpoint placed inside a step and lists the cycles of those that did not reproduce
    the golden run (``wrong``: none, unless the port misses some state of the build).
    """
    items = list(injections)
    if items and isinstance(items[0], Injection):
        items = list(enumerate(items))
    reference = golden(setup)
    by_index = dict(items)
    results: dict[int, Result] = {}
    tries: dict[int, int] = dict.fromkeys(by_index, 0)
    pending = [i for i, _ in items]

    def accept(index: int, observation: Observation, info: dict) -> None:
        result = Result(
            index,
            by_index[index],
            classify(reference.observation, observation),
            observation,
            info,
            misclassified(reference.observation, observation, setup.workload),
        )
        results[index] = result
        if on_result is not None:
            on_result(result)

    barren = 0  # launches in a row that failed before producing anything
    while pending:
        batches = [[i] for i in pending] if mode == "naive" else [pending]
        for batch in batches:
            done: set[int] = set()

            def on_line(line: dict, done=done) -> None:
                if line["kind"] == "golden" and on_golden is not None:
                    on_golden(line)
                if line["kind"] != "result":
                    return
                index = line["index"]
                observation = observation_from_dict(line["observation"])
                done.add(index)
                if observation.tool_error is not None and tries[index] == 0:
                    tries[index] = 1  # the tool failed on it: retried once, in a new process
                    return
                accept(index, observation, line["info"])

            try:
                _launch(
                    setup,
                    mode,
                    [(i, by_index[i]) for i in batch],
                    timeout_s=SETUP_TIMEOUT_S + PER_INJECTION_TIMEOUT_S * len(batch),
                    on_line=on_line,
                    prune=prune,
                    placement=placement,
                    verify_restore=verify_restore,
                )
                barren = 0
            except EngineError as exc:
                # the process died or stuck: the injection in flight failed in the tool
                barren = barren + 1 if not done else 0
                left = len([i for i in batch if i not in done])
                log.warning("%s; %d of its %d injections finished and are kept, the other "
                            "%d run again in a new process", str(exc).split("; log tail:")[0],
                            len(done), len(batch), left)  # fmt: skip
                if barren >= 2:  # it fails before the first injection: not one injection's fault
                    for index in pending:
                        if index not in results:
                            accept(index, Observation(tool_error=str(exc)[-2000:]), {})
                    break
                in_flight = [i for i in batch if i not in done]
                if in_flight:
                    first = in_flight[0]
                    tries[first] += 1
                    if tries[first] >= 2:
                        accept(first, Observation(tool_error=str(exc)[-2000:]), {})
        pending = [i for i, _ in items if i not in results]
    return [results[i] for i, _ in items]


def _launch(
    setup: Setup,
    mode: str,
    injections: list[tuple[int, Injection]],
    *,
    timeout_s: float,
    on_line: Callable[[dict], None] | None = None,
    prune: bool = True,
    placement: bool = True,
    verify_restore: bool = False,
) -> list[dict]:
    """Run one engine process on ``injections`` (``sim.process.launch_engine``)."""
    spec = setup.build()  # the child builds it (cached by the harness) and runs it
    setup.targets()  # the child reads the target list from disk: make sure it is current
    targets = netlist.targets_path(
        setup.harden, clks_per_bit=setup.clks_per_bit, mem_words=setup.mem_words
    )
    job = {
        "mode": mode,
        "workload": setup.workload,
        "seed": setup.seed,
        "targets": str(targets),
        "injections": [(i, injection_to_dict(inj)) for i, inj in injections],
        "prune": prune,
        "placement": placement,
        "verify_restore": verify_restore,
        "slots": engine_port.slots(setup.sim),
    }
    return launch_engine(spec, job, timeout_s=timeout_s, describe=str(setup), on_line=on_line)
