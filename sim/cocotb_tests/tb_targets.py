"""Every kind of netlist target resolves to a simulator handle that a Deposit really flips
(run by tests/test_targets_sim.py on both simulators and both builds)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cocotb
import numpy as np
from cocotb.handle import Deposit
from cocotb.triggers import FallingEdge, Timer

from orbithil.sim.targets import handle_for
from orbithil.sim.tb_link import TbLink, params, seed


async def flip_and_check(dut, handle, bit: int) -> tuple[int, int]:
    """Flip ``bit`` mid-cycle (no clock edge can reload it first); (before, after)."""
    await FallingEdge(dut.clk)
    before = int(handle.value)
    handle.value = Deposit(before ^ (1 << bit))
    await Timer(1, "ns")  # the write lands; the next rising edge is 4 ns away
    return before, int(handle.value)


@cocotb.test()
async def netlist_targets_resolve_and_flip(dut):
    link = TbLink(dut, clks_per_bit=params()["CLKS_PER_BIT"])
    await link.reset()
    targets = json.loads(Path(os.environ["ORBITHIL_TARGETS"]).read_text())
    rng = np.random.default_rng(seed())
    flops = targets["flip_flops"]
    # every register at least once, plus a random sample of bits
    by_name = {f["name"]: f for f in flops}
    sample = list(by_name.values()) + [flops[i] for i in rng.choice(len(flops), 200, replace=False)]
    unresolved, not_flipped, undefined = [], [], []
    for target in sample:
        try:
            handle = handle_for(dut.dut, target["name"])
        except (AttributeError, IndexError, KeyError) as exc:
            unresolved.append(f"{target['name']}: {exc}")
            continue
        if not handle.value.is_resolvable:  # X or Z: a flip-flop nothing has set yet
            undefined.append(target["name"])
            continue
        before, after = await flip_and_check(dut, handle, target["bit"])
        if after != before ^ (1 << target["bit"]):
            not_flipped.append(f"{target['name']}[{target['bit']}]: {before:#x} -> {after:#x}")
        handle.value = Deposit(before)  # put it back
    for memory in targets["memories"]:
        array = handle_for(dut.dut, memory["name"])
        word = array[0]  # word 0 only: do not disturb the rest of the array
        for bit in rng.choice(memory["width"], 3, replace=False):
            before, after = await flip_and_check(dut, word, int(bit))
            if after != before ^ (1 << int(bit)):
                not_flipped.append(f"{memory['name']}[0] bit {bit}")
            word.value = Deposit(before)
    assert not unresolved, f"{len(unresolved)} targets have no handle: {unresolved[:10]}"
    assert not undefined, f"{len(undefined)} targets hold X after reset: {sorted(set(undefined))}"
    assert not not_flipped, f"{len(not_flipped)} targets did not flip: {not_flipped[:10]}"
    dut._log.info(
        "%d flip-flop targets and %d memories resolved and flipped",
        len(sample),
        len(targets["memories"]),
    )
