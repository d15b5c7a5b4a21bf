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
from collections import Counter
from dataclasses import asdict, replace
from pathlib import Path

import cocotb

from orbithil.payload.classify import Observation, observation_to_dict
from orbithil.sim.engine import Engine, RunInfo
from orbithil.sim.faults import injection_from_dict
from orbithil.sim.prune import PRUNED, Decision, Kind
from orbithil.sim.tb_link import params


@cocotb.test()
async def run_job(dut):
    job = json.loads(Path(os.environ["ORBITHIL_ENGINE_JOB"]).read_text())
    targets = json.loads(Path(job["targets"]).read_text())
    engine = Engine(
        dut, targets, job["workload"], seed=job["seed"],
        clks_per_bit=params()["CLKS_PER_BIT"], slots=job["slots"],
    )  # fmt: skip
    with open(job["out"], "a", encoding="utf-8") as out:

        def emit(record: dict) -> None:
            out.write(json.dumps(record) + "\n")
            out.flush()

        started = time.perf_counter()
        await engine.reset()
        mode = job["mode"]
        prune = mode == "engine" and job.get("prune", True)
        fast = mode == "engine"
        injections = [(index, injection_from_dict(data)) for index, data in job["injections"]]
        decisions: dict[int, Decision] = {}
        if mode in ("golden", "engine"):
            trace = Path(job["out"]).with_name("access.trace") if prune else None
            golden = await engine.run_golden(trace)
            run_cycles, seen = [], set()
            for index, injection in injections:
                decision = engine.trace.decide(injection) if prune else Decision(Kind.SIMULATED)
                decisions[index] = decision
                if decision.kind in PRUNED or (decision.key is not None and decision.key in seen):
                    continue  # no run, or its class's run is already counted
                seen.add(decision.key)
                run_cycles.append(injection.cycle if decision.cycle is None else decision.cycle)
            placement = engine.place(run_cycles if fast and job.get("placement", True) else [])
            # the rerun that takes them must be the golden run: restoring the start state,
            # and carrying on from checkpoints, must be exact
            again = await engine.add_checkpoints(placement.marks)
            if again != golden.observation:
                raise AssertionError(
                    f"a rerun from the restored start state differs from the golden run:\n"
                    f"{again}\n{golden.observation}"
                )
            check = None
            if job.get("verify_restore"):  # a fault-free run from every placed checkpoint
                wrong = await engine.check_restore_points()
                check = {"points": len(golden.mids), "wrong": [cycle for cycle, _ in wrong]}
            emit({
                "kind": "golden",
                "observation": observation_to_dict(golden.observation),
                "cycles": golden.cycles,
                "checkpoints": [cp.cycle for cp in golden.checkpoints],
                "placement": {
                    "runs": len(run_cycles),
                    "marks": len(placement.marks),
                    "mid_checkpoints": len(golden.mids),
                    "mid_checkpoints_by_kind": dict(Counter(cp.resume.kind for cp in golden.mids)),
                    "min_gap_cycles": placement.min_gap,
                    "cycle_us": round(placement.cycle_s * 1e6, 4),
                    "snapshot_us": round(placement.snapshot_s * 1e6, 2),
                    "free_slots": placement.free_slots,
                },
                "restore_check": check,
                "setup_s": time.perf_counter() - started,
            })  # fmt: skip
        classes: dict[tuple, tuple[Observation, RunInfo]] = {}  # simulated def/use classes
        for index, injection in injections:
            if not _alive(job.get("parent_pid")):
                dut._log.warning("the process that started this engine is gone; stopping")
                return
            decision = decisions.get(index, Decision(Kind.SIMULATED))
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
