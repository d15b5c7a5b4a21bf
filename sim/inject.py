"""Run injection plans on the simulated chip: golden runs, the engine, the naive way.

The parent's side of ``sim.engine``. A plan runs in a child process (its own session, a
deadline, killed with its simulator on timeout) that appends one JSON line per injection
as it finishes; results are classified here against the golden run. An injection whose
run failed in the tool (an exception, a crashed or stuck simulator) is retried once in a
fresh process and then reported as ``tool_error``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sim import harness, netlist
from sim.backend import kill_group
from sim.classify import Observation, Outcome, classify, observation_from_dict
from sim.faults import FaultModel, Injection, TargetSpace, injection_to_dict
from sim.workloads import WORKLOADS

ENGINE_MODULE = "sim.cocotb_tests.inject_engine"
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
            raise ValueError(f"simulator {self.sim!r}: use one of {', '.join(harness.SIMULATORS)}")
        if self.harden not in (0, 1):
            raise ValueError(f"harden must be 0 or 1, got {self.harden!r}")
        if self.workload not in WORKLOADS:
            raise ValueError(f"no workload {self.workload!r}; workloads: {', '.join(WORKLOADS)}")

    def build(self) -> harness.Build:
        return harness.chip_build(
            self.sim, HARDEN=self.harden, CLKS_PER_BIT=self.clks_per_bit, MEM_WORDS=self.mem_words
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


class EngineError(RuntimeError):
    """The engine process failed as a whole (no golden run, or a build error)."""


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
        harness.write_atomically(cache, json.dumps(data))
    return GoldenRecord(
        observation_from_dict(data["observation"]), data["cycles"], tuple(data["checkpoints"])
    )


def _engine_key() -> str:
    """A hash of the code a golden run depends on besides the RTL (the build's key)."""
    digest = hashlib.sha256()
    for name in ("engine.py", "workloads.py", "tb_link.py"):
        digest.update((Path(__file__).parent / name).read_bytes())
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
    on_result: Callable[[Result], None] | None = None,
) -> list[Result]:
    """Run ``injections`` (a list, or (index, injection) pairs) and classify each.

    ``mode`` "engine" runs them all in one simulator process; "naive" starts a fresh
    simulator process for each (the baseline the benchmark compares with).
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
            index, by_index[index], classify(reference.observation, observation), observation, info
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
                )
                barren = 0
            except EngineError as exc:
                # the process died or stuck: the injection in flight failed in the tool
                barren = barren + 1 if not done else 0
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
) -> list[dict]:
    """Run one engine process on ``injections``; its JSON lines, each also passed to
    ``on_line`` as soon as it is written (EngineError if the process failed, with the
    lines it wrote in ``.lines``)."""
    spec = setup.build()  # the child builds it (cached by the harness) and runs it
    setup.targets()  # the child reads the target list from disk: make sure it is current
    targets = netlist.targets_path(
        setup.harden, clks_per_bit=setup.clks_per_bit, mem_words=setup.mem_words
    )
    with tempfile.TemporaryDirectory(prefix="orbithil-inject-") as tmp:
        job = Path(tmp) / "job.json"
        out = Path(tmp) / "out.jsonl"
        job.write_text(
            json.dumps({
                "mode": mode,
                "workload": setup.workload,
                "seed": setup.seed,
                "targets": str(targets),
                "out": str(out),
                "parent_pid": os.getpid(),  # the engine stops if this process dies
                "injections": [(i, injection_to_dict(inj)) for i, inj in injections],
            })
        )  # fmt: skip
        log = Path(tmp) / "engine.log"
        config = {"sim": setup.sim, "params": dict(spec.parameters)}
        with open(log, "wb") as sink:
            proc = subprocess.Popen(
                [sys.executable, "-m", "sim.inject", json.dumps(config), str(job)],
                stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, cwd=harness.ROOT,
                env={**os.environ, "PYTHONPATH": str(harness.ROOT)},
            )  # fmt: skip
        lines: list[dict] = []
        reader = _LineReader(out)
        deadline = time.monotonic() + timeout_s
        problem = None
        try:
            while proc.poll() is None:
                for line in reader.new_lines():
                    lines.append(line)
                    if on_line is not None:
                        on_line(line)
                if time.monotonic() > deadline:
                    problem = f"the engine process did not finish in {timeout_s:.0f} s"
                    break
                time.sleep(0.02)
            else:
                if proc.returncode != 0:
                    problem = f"the engine process exited with code {proc.returncode}"
        finally:
            kill_group(proc, grace_s=1.0)  # the simulator too (its own process group)
        for line in reader.new_lines():
            lines.append(line)
            if on_line is not None:
                on_line(line)
        if problem is not None:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
            error = EngineError(f"{problem} ({setup}); log tail:\n{tail}")
            error.lines = lines
            raise error
        return lines


class _LineReader:
    """Complete JSON lines appended to a file since the last call (a line still being
    written, or cut short by a killed process, is left for later or dropped)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def new_lines(self) -> list[dict]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1
        self.offset += end
        out = []
        for raw in data[:end].splitlines():
            try:
                out.append(json.loads(raw))
            except json.JSONDecodeError:
                continue
        return out


def _child(argv: list[str]) -> int:
    """Child process: run the engine's cocotb module on the (cached) build."""
    config = json.loads(argv[0])
    spec = harness.chip_build(config["sim"], **config["params"])
    results = harness.run(spec, ENGINE_MODULE, extra_env={"ORBITHIL_ENGINE_JOB": argv[1]}, seed=1)
    return 0 if results.ok else 1


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))


# --- the board path: the same plan through the HAL's debug-injection command ------------
def board_space(targets: dict) -> TargetSpace:
    """The targets the INJECT command reaches: every register-file copy bit and every SRAM
    codeword bit (not the SRAM controller's own flip-flops)."""
    return TargetSpace(
        {
            "flip_flops": [f for f in targets["flip_flops"] if f["name"].startswith("u_regs.")],
            "memories": [m for m in targets["memories"] if m["name"] == "u_mem.mem"],
        }
    )


def inject_command(injection: Injection) -> list[tuple[str, int, int, int]]:
    """The INJECT commands (kind, index, bit, copy) that make ``injection`` on a chip."""
    from hal.icd import RW_REGISTERS
    from sim.targets import split_name

    if injection.model is FaultModel.STUCK:
        raise ValueError("the INJECT command flips bits; a stuck-at fault needs the simulator")
    if injection.word is not None:
        if injection.target != "u_mem.mem":
            raise ValueError(f"INJECT cannot reach memory {injection.target}")
        return [("mem", injection.word, bit, 0) for bit in injection.bits]
    parts = split_name(injection.target)  # u_regs.g_reg[i].g_tmr.u_c<copy>.q
    if parts[0] != "u_regs" or len(parts) < 5:
        raise ValueError(f"INJECT cannot reach {injection.target}; it reaches u_regs and u_mem")
    index, copy = parts[2], int(str(parts[4])[-1])
    return [("reg", RW_REGISTERS[index].addr, bit, copy) for bit in injection.bits]


def run_plan_on_chip(
    chip,
    setup: Setup,
    injections: list[Injection],
    *,
    on_result: Callable[[Result], None] | None = None,
) -> list[Result]:
    """Run ``injections`` on a chip behind the HAL (a board; also model:// and sim://).

    Each run starts from a soft reset with the SRAM cleared; the injection is made through
    INJECT just before the workload step the simulated golden run was at when the
    injection's cycle came (a board cannot stop at a cycle). The golden run is made on the
    same chip first, and the same classifier decides.
    """
    from sim.workloads import run_on_chip

    checkpoints = golden(setup).checkpoints  # the step boundaries' cycles in simulation
    chip.reset(clear_memory=True)
    reference = run_on_chip(chip, setup.workload, setup.seed)
    results = []
    for index, injection in enumerate(injections):
        commands = inject_command(injection)
        step = max(
            (k for k, cycle in enumerate(checkpoints) if cycle <= injection.cycle), default=0
        )

        def flip(commands=commands) -> None:
            chip.arm_injection()
            for kind, where, bit, copy in commands:
                chip.inject(kind, where, bit, copy)
            chip.write_reg("INJ_ARM", 0)  # disarm: the end state is compared with golden

        chip.reset(clear_memory=True)
        observation = run_on_chip(chip, setup.workload, setup.seed, before_step={step: flip})
        result = Result(
            index, injection, classify(reference, observation), observation, {"step": step}
        )
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results
