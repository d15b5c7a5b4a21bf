"""``orbithil bench inject``: the injection engine against the naive way, and raw speed.

On one workload and one seeded plan (HARDEN=1, inference; the demo's plan):

- the plan decided three ways on Verilator (2,000 faults) and Icarus: def/use pruning
  (``sim.prune``) with checkpoints placed for the plan (``sim.placement``); every fault
  simulated from placed checkpoints; every fault simulated from the workload's step
  checkpoints only (today's engine, as issue 18 found it).
  ``effective_injections_per_s`` (faults decided per second, pruned or simulated) and
  ``effective_speedup_vs_engine`` against today's engine; ``pruned_mismatches`` and
  ``placement_mismatches``: faults whose observation differs between pruned and
  unpruned, placed and step-only (both must be 0: both are exact); simulated and lead
  cycles per injection (the lead: simulated from the restore point to the fault)
  against the workload's length, with the placement's costs;
- the engine: every injection in one simulator process, restored from golden
  checkpoints, stopping early once the state is golden again (Verilator and Icarus);
- the naive way: a fresh cocotb simulator process per injection, the build cached
  (``harness.run`` per injection, as a cocotb user would write it), on a prefix of the
  same plan;
- ``sim_efficiency``: simulated cycles/s inside the engine's injection loop (restores,
  checks and the Python-driven link included) over cycles/s of the same RTL in a plain
  Verilog testbench (clock in Verilog, ``verilator --binary --timing``, -O3, the
  workload's request bytes preloaded) built as the engine's build is (its injection
  port, ``sim.engine_port``, and the few signals Python touches public);
  ``sim_efficiency_vs_private_build`` against the same testbench with every signal
  private and no port (fastest, but nothing can be injected). Both plain runs are
  measured in the same run as the engine, right after it. Both are simulated cycles per
  CPU-second of the process that simulates (the engine's simulator with its Python, the
  plain testbench): the work each does for a cycle, whatever else the machine runs. The
  same ratios over wall-clock time (``..._wall``) move with the machine's load, which
  falls on the two sides at different moments.

Outcomes of the naive runs must equal the engine's on the shared injections (checked).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

from orbithil import hal
from orbithil.hal.portwrap import PortWrapper
from orbithil.sim import harness, prune
from orbithil.sim.inject import Setup, golden, plan, run_plan
from orbithil.sim.paths import bench_dir, rtl_sources
from orbithil.sim.toolchain import find_executable

from . import BenchResult


class _Recorder(PortWrapper):
    """Keeps a copy of every byte written through it."""

    def __init__(self, inner) -> None:
        super().__init__(inner)
        self.sent = bytearray()

    def write(self, data: bytes) -> int:
        self.sent.extend(data)
        return self.inner.write(data)


def _request_bytes(setup: Setup) -> bytes:
    """The workload's request frames, as the host sends them (recorded on the model)."""
    from orbithil.payload.workloads import run_on_chip

    with hal.open(f"model://?harden={setup.harden}&clks_per_bit={setup.clks_per_bit}") as chip:
        recorder = chip.link.port = _Recorder(chip.link.port)
        run_on_chip(chip, setup.workload, setup.seed, end_state=False)
    return bytes(recorder.sent)


def plain_cycles_per_s(setup: Setup, cycles: int, *, exposed: bool) -> tuple[float, float]:
    """Cycles per second and per CPU-second of chip_tb in a plain ``verilator --binary``
    testbench (best of 3 each).

    ``exposed``: built as the engine's build is (its Verilator configuration file, the
    injection port and the flags); without, every signal private and no port (no tool
    could inject into that build).
    """
    out = bench_dir("plain") / (
        f"h{setup.harden}-c{setup.clks_per_bit}-{'exposed' if exposed else 'private'}"
    )
    out.mkdir(parents=True, exist_ok=True)
    stimulus = _request_bytes(setup)[:4096]
    (out / "stimulus.hex").write_text("\n".join(f"{b:02x}" for b in stimulus) + "\n")
    binary = out / "obj_dir" / "Vplain_tb"
    sources = [*rtl_sources(), harness.TB_DIR / "chip_tb.v", harness.TB_DIR / "plain_tb.v"]
    extra: list[str] = []
    if exposed:
        build = setup.build()
        sources += [p for p in build.sources if p.suffix == ".vlt"] + list(build.includes)
        extra = [*build.extra_args, *(f"+define+{d}" for d in build.defines)]
        extra += [f"-I{d}" for d in sorted({str(p.parent) for p in build.includes})]
    if not binary.exists() or binary.stat().st_mtime < max(p.stat().st_mtime for p in sources):
        cmd = [
            find_executable("verilator") or "verilator", "--binary", *harness.VERILATOR_ARGS,
            *extra, "-O3",
            "-Wno-lint", "-Wno-style", f"-I{harness.RTL_DIR}", f"+define+HARDEN={setup.harden}",
            f"+define+CLKS_PER_BIT={setup.clks_per_bit}", "--top-module", "plain_tb",
            "-Mdir", str(out / "obj_dir"), *(str(p) for p in sources if p.suffix != ".vh"),
        ]  # fmt: skip
        env = {**os.environ, "MAKEFLAGS": harness.VERILATOR_MAKEFLAGS}
        subprocess.run(cmd, cwd=out, env=env, check=True, capture_output=True, timeout=900)
    best = best_cpu = float("inf")
    for _ in range(3):
        wall, cpu = _run_timed([str(binary), f"+BYTES={len(stimulus)}", f"+CYCLES={cycles}"],
                               cwd=out, timeout=600)  # fmt: skip
        best, best_cpu = min(best, wall), min(best_cpu, cpu)
    return cycles / best, cycles / best_cpu


def _run_timed(cmd: list[str], *, cwd: Path, timeout: float) -> tuple[float, float]:
    """Run ``cmd`` to its end: (wall seconds, its own CPU seconds, user and system, from
    ``wait4`` on its pid: no other child of this process is counted)."""
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=err)
        deadline = start + timeout
        while (done := os.wait4(proc.pid, os.WNOHANG))[0] == 0:
            if time.perf_counter() > deadline:
                proc.kill()
                os.wait4(proc.pid, 0)
                proc.returncode = -9  # reaped here, not by Popen
                raise TimeoutError(f"{cmd[0]} ran over {timeout:g} s")
            time.sleep(0.005)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(done[1])  # reaped here, not by Popen
        if proc.returncode:
            err.seek(0)
            raise subprocess.CalledProcessError(
                proc.returncode, cmd, stderr=err.read().decode(errors="replace")[-2000:]
            )
    return wall, done[2].ru_utime + done[2].ru_stime


def _three_ways(setup: Setup, injections: list) -> dict:
    """The same plan decided three ways, one after another: pruned with placed
    checkpoints (the engine now), every fault simulated with placed checkpoints, and
    every fault simulated from the workload's step checkpoints only (the engine before
    pruning and placement: "today's engine" of issue 18). Rates, how each fault was
    decided, simulated and lead cycles per injection, every observation compared."""
    runs: dict[str, tuple[list, float, dict]] = {}
    ways = {"pruned": {}, "full": {"prune": False}, "steps": {"prune": False, "placement": False}}
    for name, options in ways.items():
        goldens: list[dict] = []
        start = time.perf_counter()
        results = run_plan(setup, injections, on_golden=goldens.append, **options)
        placement = goldens[0]["placement"] if goldens else {}  # none: every process failed
        runs[name] = (results, time.perf_counter() - start, placement)
    (pruned, pruned_s, placed_pruned), (full, full_s, placed), (steps, steps_s, _) = runs.values()
    n = len(injections)
    kinds = Counter(r.info.get("pruning") for r in pruned)

    def mean(results: list, key: str) -> int:
        return round(sum(r.info.get(key, 0) for r in results) / n)

    def differ(a: list, b: list) -> int:
        return sum(x.observation != y.observation for x, y in zip(a, b, strict=True))

    return {
        "pruned": pruned,
        "full": full,
        "effective_injections_per_s": round(n / pruned_s, 2),
        "full_injections_per_s": round(n / full_s, 2),
        "steps_injections_per_s": round(n / steps_s, 2),
        "effective_speedup": round(steps_s / pruned_s, 2),
        "effective_speedup_vs_unpruned": round(full_s / pruned_s, 2),
        "placement_speedup": round(steps_s / full_s, 2),
        "pruned_mismatches": differ(pruned, full),
        "placement_mismatches": differ(full, steps),
        "simulated": prune.simulated(kinds),
        "decided_by_class": {k: kinds[k] for k in ("overwritten", "unread", "reused")},
        "mean_simulated_cycles_pruned": mean(pruned, "cycles"),
        "mean_simulated_cycles_full": mean(full, "cycles"),
        "mean_simulated_cycles_steps": mean(steps, "cycles"),
        "mean_lead_cycles_full": mean(full, "lead_cycles"),
        "mean_lead_cycles_steps": mean(steps, "lead_cycles"),
        "mean_restore_us": round(1e6 * sum(r.info.get("restore_s", 0) for r in full) / n, 1),
        "placement": placed,  # the unpruned run's (its leads are the ones above)
        "placement_pruned": placed_pruned,
    }


def run(*, quick: bool = False) -> BenchResult:
    n_engine = 300 if quick else 2000
    n_naive = 3 if quick else 8
    n_icarus = 12 if quick else 60
    verilator = Setup("verilator", 1, "inference")
    icarus = Setup("icarus", 1, "inference")
    # the demo's plan (seed 1, uniform over the build's bits and the workload's cycles):
    # the first n of its 4,000 for HARDEN=1
    injections = plan(verilator, n_engine, seed=1)
    cycles = golden(verilator).cycles

    side = _three_ways(verilator, injections)
    full = side["full"]
    loop_s = sum(r.info["wall_s"] for r in full)
    loop_cpu_s = sum(r.info["cpu_s"] for r in full)
    loop_cycles = sum(r.info["cycles"] for r in full)

    start = time.perf_counter()
    naive = run_plan(verilator, injections[:n_naive], mode="naive")
    naive_s = time.perf_counter() - start
    mismatched = [
        (a.index, a.outcome.value, b.outcome.value)
        for a, b in zip(full, naive, strict=False)
        if a.outcome != b.outcome
    ]
    if mismatched:
        raise AssertionError(f"the engine and the naive runs disagree: {mismatched}")

    on_icarus = _three_ways(icarus, plan(icarus, n_icarus, seed=1))

    plain_cycles = 2_000_000 if not quick else 500_000
    plain, plain_cpu = plain_cycles_per_s(verilator, plain_cycles, exposed=True)
    private, private_cpu = plain_cycles_per_s(verilator, plain_cycles, exposed=False)
    engine_rate = side["steps_injections_per_s"]
    naive_rate = n_naive / naive_s
    engine_cps = loop_cycles / loop_s
    engine_cpu_cps = loop_cycles / loop_cpu_s
    placed = side["placement"]
    metrics = {
        "effective_injections_per_s": side["effective_injections_per_s"],
        "engine_injections_per_s": engine_rate,
        "effective_speedup_vs_engine": side["effective_speedup"],
        "pruned_mismatches": side["pruned_mismatches"],
        "placement_mismatches": side["placement_mismatches"],
        "simulated_injections": side["simulated"],
        "decided_by_class": side["decided_by_class"],
        "effective_speedup_vs_unpruned": side["effective_speedup_vs_unpruned"],
        "unpruned_injections_per_s": side["full_injections_per_s"],
        "placement_speedup": side["placement_speedup"],
        "golden_cycles": cycles,
        "mean_simulated_cycles_per_injection": side["mean_simulated_cycles_pruned"],
        "mean_simulated_cycles_per_injection_unpruned": side["mean_simulated_cycles_full"],
        "mean_simulated_cycles_per_injection_steps": side["mean_simulated_cycles_steps"],
        "mean_lead_cycles_unpruned": side["mean_lead_cycles_full"],
        "mean_lead_cycles_steps": side["mean_lead_cycles_steps"],
        "checkpoint_marks": placed.get("marks"),
        "checkpoints_placed": placed.get("mid_checkpoints"),
        "checkpoints_placed_by_kind": placed.get("mid_checkpoints_by_kind"),
        "checkpoint_min_gap_cycles": placed.get("min_gap_cycles"),
        "checkpoint_free_slots": placed.get("free_slots"),
        "checkpoints_placed_pruned": side["placement_pruned"].get("mid_checkpoints"),
        "checkpoint_us": placed.get("snapshot_us"),
        "restore_us": side["mean_restore_us"],
        "cycle_us": placed.get("cycle_us"),
        "naive_injections_per_s": round(naive_rate, 3),
        "speedup_vs_naive": round(engine_rate / naive_rate, 1),
        "icarus_effective_injections_per_s": on_icarus["effective_injections_per_s"],
        "icarus_engine_injections_per_s": on_icarus["steps_injections_per_s"],
        "icarus_effective_speedup_vs_engine": on_icarus["effective_speedup"],
        "icarus_pruned_mismatches": on_icarus["pruned_mismatches"],
        "icarus_placement_mismatches": on_icarus["placement_mismatches"],
        "icarus_decided_by_class": on_icarus["decided_by_class"],
        "icarus_placement_speedup": on_icarus["placement_speedup"],
        "icarus_mean_lead_cycles_unpruned": on_icarus["mean_lead_cycles_full"],
        "icarus_mean_lead_cycles_steps": on_icarus["mean_lead_cycles_steps"],
        "unpruned_loop_injections_per_s": round(n_engine / loop_s, 2),
        "unpruned_early_stops": sum(r.info["stopped_early"] for r in full),
        "engine_cycles_per_cpu_s": round(engine_cpu_cps),
        "plain_verilator_cycles_per_cpu_s": round(plain_cpu),
        "sim_efficiency": round(engine_cpu_cps / plain_cpu, 3),
        "plain_private_verilator_cycles_per_cpu_s": round(private_cpu),
        "sim_efficiency_vs_private_build": round(engine_cpu_cps / private_cpu, 3),
        "engine_cycles_per_s": round(engine_cps),
        "plain_verilator_cycles_per_s": round(plain),
        "plain_private_verilator_cycles_per_s": round(private),
        "sim_efficiency_wall": round(engine_cps / plain, 3),
        "sim_efficiency_vs_private_build_wall": round(engine_cps / private, 3),
    }
    return BenchResult(
        metrics,
        targets={
            "effective_speedup_vs_engine": (">=", 10.0), "pruned_mismatches": ("<=", 0),
            "icarus_pruned_mismatches": ("<=", 0), "placement_mismatches": ("<=", 0),
            "icarus_placement_mismatches": ("<=", 0), "speedup_vs_naive": (">=", 20.0),
            "sim_efficiency": (">=", 0.5), "sim_efficiency_vs_private_build": (">=", 0.5),
        },
        params={
            "workload": "inference", "harden": 1, "plan": f"the demo's (seed 1), first {n_engine}",
            "engine_injections": n_engine, "naive_injections": n_naive,
            "icarus_injections": n_icarus,
            "note": "rates include process start, golden run (with the access trace when "
            "pruning) and the rerun that takes the placed checkpoints; engine = today's "
            "engine: every fault simulated, restored from step checkpoints only; unpruned = "
            "every fault simulated from placed checkpoints; sim_efficiency figures are the "
            "unpruned engine's loop (placed checkpoints); checkpoint figures are the "
            "unpruned run's: marks asked for, checkpoints taken (a mark is skipped where "
            "the host has bytes not yet taken in), their costs",
        },
    )  # fmt: skip
