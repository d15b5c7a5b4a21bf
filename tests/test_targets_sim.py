"""The netlist's flip-flop and memory targets are real, flippable simulator signals, on both
simulators and both builds: the ground the fault-injection engine stands on."""

from __future__ import annotations

import pytest

from orbithil.sim import harness, netlist

pytestmark = pytest.mark.sim


@pytest.mark.parametrize("harden", [1, 0], ids=["harden1", "harden0"])
@pytest.mark.parametrize("sim", harness.SIMULATORS)
def test_targets_resolve_and_flip(sim, harden):
    build = harness.chip_build(sim, HARDEN=harden)
    cpb, words = build.parameters["CLKS_PER_BIT"], build.parameters["MEM_WORDS"]
    # the same parameters; the list the engine uses (made by list_targets, reused while
    # newer than the RTL): yosys again for each of the four cases added nothing
    netlist.load_targets(harden, clks_per_bit=cpb, mem_words=words)
    path = netlist.targets_path(harden, clks_per_bit=cpb, mem_words=words)
    results = harness.run(
        build,
        "orbithil.sim.cocotb_tests.tb_targets",
        seed=20261124,
        extra_env={"ORBITHIL_TARGETS": str(path)},
    )
    assert (results.tests, results.failed) == (1, 0), results.xml
