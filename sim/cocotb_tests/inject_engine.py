"""The injection engine's cocotb entry: runs the job file named by ORBITHIL_ENGINE_JOB.

Modes: ``golden`` (the golden run only), ``engine`` (golden run with checkpoints and,
unless the job says ``"prune": false``, the memories' access trace; a determinism check;
then every injection decided by its def/use class where it has one (``sim.prune``), or
restored from a checkpoint and simulated with early stop) and
``naive`` (every injection from the start state to the end, as one run per process
would). One JSON line per run is appended to the job's ``out`` file and flushed, so a
killed process loses nothing already done.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, replace
from pathlib import Path

import cocotb

from orbithil.payload.classify import Observation, observation_to_dict
from orbithil.sim.engine import Engine, RunInfo
from orbithil.sim.faults import injection_from_dict
from orbithil.sim.prune import Decision, Kind
from orbithil.sim.tb_link import params


@cocotb.test()
async def run_job(dut):
    job = json.loads(Path(os.environ["ORBITHIL_ENGINE_JOB"]).read_text())
    targets = json.loads(Path(job["targets"]).read_text())
    engine = Engine(
        dut, targets, job["workload"], seed=job["seed"], clks_per_bit=params()["CLKS_PER_BIT"]
    )
    with open(job["out"], "a", encoding="utf-8") as out:

        def emit(record: dict) -> None:
            out.write(json.dumps(record) + "\n")
            out.flush()

        started = time.perf_counter()
        await engine.reset()
        mode = job["mode"]
        prune = mode == "engine" and job.get("prune", True)
        if mode in ("golden", "engine"):
            trace = Path(job["out"]).with_name("access.trace") if prune else None
            golden = await engine.run_golden(trace)
            again, _ = await engine.run(None, from_checkpoint=False, early_stop=False)
            if again != golden.observation:  # restoring the start state must be exact
                raise AssertionError(
                    f"a rerun from the restored start state differs from the golden run:\n"
                    f"{again}\n{golden.observation}"
                )
            emit({
                "kind": "golden",
                "observation": observation_to_dict(golden.observation),
                "cycles": golden.cycles,
                "checkpoints": [cp.cycle for cp in golden.checkpoints],
                "setup_s": time.perf_counter() - started,
            })  # fmt: skip
        fast = mode == "engine"
        classes: dict[tuple, tuple[Observation, RunInfo]] = {}  # simulated def/use classes
        for index, data in job["injections"]:
            if not _alive(job.get("parent_pid")):
                dut._log.warning("the process that started this engine is gone; stopping")
                return
            injection = injection_from_dict(data)
            decision = engine.trace.decide(injection) if prune else Decision(Kind.SIMULATED)
            try:
                if decision.kind in (Kind.OVERWRITTEN, Kind.UNREAD):
                    observation, info = engine.unsimulated(injection, decision), RunInfo()
                elif decision.key in classes:
                    observation, info = classes[decision.key][0], RunInfo()
                    decision = replace(decision, kind=Kind.REUSED)
                else:
                    run = injection
                    if decision.kind is Kind.REPRESENTATIVE:
                        run = replace(injection, cycle=decision.cycle)  # same class
                    observation, info = await engine.run(run, from_checkpoint=fast, early_stop=fast)
                    if decision.key is not None and observation.tool_error is None:
                        classes[decision.key] = (observation, info)
            except Exception as exc:  # the tool failed, not the chip: report it, go on
                dut._log.exception("injection %d failed in the engine", index)
                observation, info = (
                    Observation(tool_error=f"{type(exc).__name__}: {exc}"),
                    RunInfo(),
                )
            info.pruning, info.fault_class = str(decision.kind), decision.label
            emit({
                "kind": "result",
                "index": index,
                "observation": observation_to_dict(observation),
                "info": asdict(info),
            })  # fmt: skip


def _alive(pid: int | None) -> bool:
    if pid is None:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
