"""The chip RTL through its UART, on Icarus and Verilator, hardened and not.

Each case builds the chip (cached), runs every test in sim/cocotb_tests/tb_chip.py with a
fixed seed and asserts that all of them ran and passed.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

from orbithil.sim import harness

SEED = 20261124
TB_MODULE = Path(importlib.util.find_spec("orbithil.sim.cocotb_tests.tb_chip").origin)


def cocotb_tests_in(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    return [
        node.name
        for node in tree.body
        if isinstance(node, ast.AsyncFunctionDef)
        and any("cocotb.test" in ast.unparse(d) for d in node.decorator_list)
    ]


@pytest.mark.sim
@pytest.mark.parametrize("sim", harness.SIMULATORS)
def test_generated_secded_verilog_equals_the_codec(sim):
    spec = harness.Build(
        sim, top="secded_tb", sources=(harness.TB_DIR / "secded_tb.v",), quick=True
    )
    results = harness.run(spec, "orbithil.sim.cocotb_tests.tb_secded", seed=SEED)
    assert (results.tests, results.failed) == (1, 0), results.xml


BLOCK_BENCHES = {
    # bench: (testbench top, cocotb module, number of tests in it, parameters)
    "uart": ("uart_tb", "orbithil.sim.cocotb_tests.tb_uart", 3, {}),
    "frames": ("frames_tb", "orbithil.sim.cocotb_tests.tb_frames", 6, {}),
    "regfile-h1": ("regfile_tb", "orbithil.sim.cocotb_tests.tb_regfile", 1, {"HARDEN": 1}),
    "regfile-h0": ("regfile_tb", "orbithil.sim.cocotb_tests.tb_regfile", 1, {"HARDEN": 0}),
    "watchdog": ("watchdog_tb", "orbithil.sim.cocotb_tests.tb_watchdog", 1, {}),
}


@pytest.mark.sim
@pytest.mark.parametrize("bench", sorted(BLOCK_BENCHES))
@pytest.mark.parametrize("sim", harness.SIMULATORS)
def test_block_bench(sim, bench):
    top, module, count, parameters = BLOCK_BENCHES[bench]
    assert len(cocotb_tests_in(Path(importlib.util.find_spec(module).origin))) == count
    spec = harness.Build(
        sim, top=top, parameters=parameters, sources=(harness.TB_DIR / f"{top}.v",), quick=True
    )
    results = harness.run(spec, module, seed=SEED)
    assert (results.tests, results.failed) == (count, 0), results.xml


@pytest.mark.sim
@pytest.mark.parametrize("harden", [1, 0], ids=["harden1", "harden0"])
@pytest.mark.parametrize("sim", harness.SIMULATORS)
def test_chip_through_uart(sim, harden):
    results = harness.run(
        harness.chip_build(sim, HARDEN=harden), "orbithil.sim.cocotb_tests.tb_chip", seed=SEED
    )
    expected = len(cocotb_tests_in(TB_MODULE))
    assert expected >= 10
    assert results.tests == expected, f"{results.tests} of {expected} tests ran ({results.xml})"
    assert results.failed == 0, f"{results.failed} failed; see {results.xml} and the log above"
