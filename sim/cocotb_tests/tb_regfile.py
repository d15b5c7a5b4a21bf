"""Block bench for the register file: TMR out-votes and repairs an upset copy (HARDEN=1);
a single copy keeps the upset (HARDEN=0). Run by tests/test_chip_sim.py for both builds."""

from __future__ import annotations

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, RisingEdge

from orbithil.hal.icd import RW_REGISTERS
from orbithil.sim.tb_link import params, seed


async def pulse(dut, **signals) -> None:
    await RisingEdge(dut.clk)
    for name, level in signals.items():
        getattr(dut, name).value = level
    await RisingEdge(dut.clk)
    for name in ("we", "inj"):
        if name in signals:
            getattr(dut, name).value = 0


def value(dut, index: int) -> int:
    return int(dut.values.value) >> (32 * index) & 0xFFFF_FFFF


@cocotb.test()
async def tmr_outvotes_and_repairs_one_copy(dut):
    harden = params()["HARDEN"]
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    rng = np.random.default_rng(seed())
    words = [int(w) for w in rng.integers(0, 2**32, len(RW_REGISTERS), dtype=np.uint64)]
    for index, word in enumerate(words):
        await pulse(dut, we=1, windex=index, wdata=word)
    await ClockCycles(dut.clk, 2)
    assert [value(dut, i) for i in range(len(words))] == words
    for index in range(len(words)):
        bit = int(rng.integers(0, 32))
        copy = int(rng.integers(0, 3)) if harden else 0
        before = int(dut.mismatch_cycles.value)
        await pulse(dut, inj=1, inj_index=index, inj_bit=bit, inj_copy=copy)
        await ClockCycles(dut.clk, 3)
        if harden:  # out-voted at once, repaired on the next clock: one cycle of mismatch
            assert value(dut, index) == words[index]
            assert int(dut.mismatch_cycles.value) == before + 1
        else:  # nothing to vote with: the upset stays
            assert value(dut, index) == words[index] ^ (1 << bit)
            words[index] ^= 1 << bit
    if harden:
        # Upsets in two copies a clock apart: the first is repaired before the second lands.
        await RisingEdge(dut.clk)
        dut.inj.value = 1
        dut.inj_index.value = 0
        dut.inj_bit.value = 5
        dut.inj_copy.value = 0
        await RisingEdge(dut.clk)
        dut.inj_copy.value = 1
        await RisingEdge(dut.clk)
        dut.inj.value = 0
        await ClockCycles(dut.clk, 3)
        assert value(dut, 0) == words[0]
