"""Block bench for the watchdog (run by tests/test_chip_sim.py)."""

from __future__ import annotations

import cocotb
from cocotb.triggers import ClockCycles, RisingEdge


async def pulse(dut, name: str) -> None:
    await RisingEdge(dut.clk)
    getattr(dut, name).value = 1
    await RisingEdge(dut.clk)
    getattr(dut, name).value = 0


@cocotb.test()
async def watchdog_fires_on_time_unless_kicked(dut):
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    dut.timeout.value = 100
    await pulse(dut, "reload")
    start = int(dut.cycle.value)
    await ClockCycles(dut.clk, 150)  # no kick: it fires once, about 100 cycles in
    assert int(dut.expiries.value) == 1
    assert 98 <= int(dut.fired_at.value) - start <= 102
    await pulse(dut, "kick")  # restarts the count before the second expiry (~200)
    for _ in range(8):  # kicks every ~62 cycles keep it quiet
        await ClockCycles(dut.clk, 60)
        await pulse(dut, "kick")
    assert int(dut.expiries.value) == 1
    dut.timeout.value = 0  # off
    await ClockCycles(dut.clk, 300)
    assert int(dut.expiries.value) == 1
    dut.timeout.value = 50
    await pulse(dut, "reload")
    await ClockCycles(dut.clk, 120)  # on again: fires about every 50 cycles
    assert int(dut.expiries.value) == 3
