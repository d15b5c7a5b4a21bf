"""``orbithil bench inject``: the injection engine against the naive way, and raw speed.

On one workload and one seeded plan (HARDEN=1, inference):

- the engine: every injection in one simulator process, restored from golden
  checkpoints, stopping early once the state is golden again (Verilator and Icarus);
- the naive way: a fresh cocotb simulator process per injection, the build cached
  (``harness.run`` per injection, as a cocotb user would write it), on a prefix of the
  same plan;
- ``sim_efficiency``: simulated cycles/s inside the engine's injection loop (restores,
  checks and the Python-driven link included) over cycles/s of the same RTL in a plain
  Verilog testbench (clock in Verilog, ``verilator --binary --timing``, -O3, the
  workload's request bytes preloaded) built with the engine build's Verilator flags
  (its state public, as injection needs); ``sim_efficiency_vs_private_build`` against
  the same testbench with every signal private (fastest, but nothing can be injected).

Outcomes of the naive runs must equal the engine's on the shared injections (checked).
"""

from __future__ import annotations

import os
import subprocess
import time

from orbithil import hal
from orbithil.hal.portwrap import PortWrapper
from orbithil.sim import harness
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


def plain_cycles_per_s(setup: Setup, cycles: int, *, exposed: bool) -> float:
    """Cycles/s of chip_tb in a plain ``verilator --binary`` testbench (best of 3).

    ``exposed``: with the engine build's own Verilator flags, i.e. the chip's state made
    public (the same configuration file) so the simulator keeps it addressable; without,
    every signal private and free to optimise away (no tool could inject into that build).
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
        sources += [p for p in build.sources if p.suffix == ".vlt"]
        extra = list(build.extra_args)
    if not binary.exists() or binary.stat().st_mtime < max(p.stat().st_mtime for p in sources):
        cmd = [
            find_executable("verilator") or "verilator", "--binary", *harness.VERILATOR_ARGS,
            *extra, "-O3",
            "-Wno-lint", "-Wno-style", f"-I{harness.RTL_DIR}", f"+define+HARDEN={setup.harden}",
            f"+define+CLKS_PER_BIT={setup.clks_per_bit}", "--top-module", "plain_tb",
            "-Mdir", str(out / "obj_dir"), *map(str, sources),
        ]  # fmt: skip
        env = {**os.environ, "MAKEFLAGS": harness.VERILATOR_MAKEFLAGS}
        subprocess.run(cmd, cwd=out, env=env, check=True, capture_output=True, timeout=900)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run(
            [str(binary), f"+BYTES={len(stimulus)}", f"+CYCLES={cycles}"],
            cwd=out, check=True, capture_output=True, timeout=600,
        )  # fmt: skip
        best = min(best, time.perf_counter() - start)
    return cycles / best


def run(*, quick: bool = False) -> BenchResult:
    n_engine = 60 if quick else 300
    n_naive = 3 if quick else 8
    n_icarus = 10 if quick else 40
    verilator = Setup("verilator", 1, "inference")
    icarus = Setup("icarus", 1, "inference")
    injections = plan(verilator, n_engine, seed=1)

    start = time.perf_counter()
    engine = run_plan(verilator, injections)
    engine_s = time.perf_counter() - start
    loop_s = sum(r.info["wall_s"] for r in engine)
    loop_cycles = sum(r.info["cycles"] for r in engine)

    start = time.perf_counter()
    naive = run_plan(verilator, injections[:n_naive], mode="naive")
    naive_s = time.perf_counter() - start
    mismatched = [
        (a.index, a.outcome.value, b.outcome.value)
        for a, b in zip(engine, naive, strict=False)
        if a.outcome != b.outcome
    ]
    if mismatched:
        raise AssertionError(f"the engine and the naive runs disagree: {mismatched}")

    icarus_injections = plan(icarus, n_icarus, seed=1)
    start = time.perf_counter()
    run_plan(icarus, icarus_injections)
    icarus_s = time.perf_counter() - start

    plain_cycles = 2_000_000 if not quick else 500_000
    plain = plain_cycles_per_s(verilator, plain_cycles, exposed=True)
    private = plain_cycles_per_s(verilator, plain_cycles, exposed=False)
    engine_rate = n_engine / engine_s
    naive_rate = n_naive / naive_s
    engine_cps = loop_cycles / loop_s
    metrics = {
        "engine_injections_per_s": round(engine_rate, 2),
        "naive_injections_per_s": round(naive_rate, 3),
        "speedup_vs_naive": round(engine_rate / naive_rate, 1),
        "verilator_injections_per_s": round(engine_rate, 2),
        "icarus_injections_per_s": round(n_icarus / icarus_s, 2),
        "engine_loop_injections_per_s": round(n_engine / loop_s, 2),
        "early_stops": sum(r.info["stopped_early"] for r in engine),
        "engine_cycles_per_s": round(engine_cps),
        "plain_verilator_cycles_per_s": round(plain),
        "sim_efficiency": round(engine_cps / plain, 3),
        "plain_private_verilator_cycles_per_s": round(private),
        "sim_efficiency_vs_private_build": round(engine_cps / private, 3),
        "golden_cycles": golden(verilator).cycles,
    }
    return BenchResult(
        metrics,
        targets={"speedup_vs_naive": (">=", 20.0), "sim_efficiency": (">=", 0.5)},
        params={
            "workload": "inference", "harden": 1, "engine_injections": n_engine,
            "naive_injections": n_naive, "icarus_injections": n_icarus, "plan_seed": 1,
            "note": "engine rates include process start, golden run and determinism check",
        },
    )  # fmt: skip
