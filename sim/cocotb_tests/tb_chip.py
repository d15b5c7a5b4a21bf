"""Top-level tests of the chip through its UART (run by tests/test_chip_sim.py)."""

from __future__ import annotations

import cocotb

from hal import protocol as p
from hal.icd import CHIP_ID, ICD_VERSION
from sim.tb_link import TbLink, params


async def link(dut) -> TbLink:
    tb = TbLink(dut, clks_per_bit=params()["CLKS_PER_BIT"])
    await tb.reset()
    return tb


@cocotb.test()
async def ping_identifies_the_build(dut):
    tb = await link(dut)
    ident = p.parse_identity(await tb.call(p.ping(), 8))
    assert ident == p.Identity(CHIP_ID, ICD_VERSION, bool(params()["HARDEN"]), params()["MEM_WORDS"])
