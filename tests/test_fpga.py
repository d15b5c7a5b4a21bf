"""Synthesis for the iCE40 UP5K and the fault-injection target lists (yosys, nextpnr)."""

from __future__ import annotations

from collections import Counter

import pytest

from orbithil.hal.icd import RW_REGISTERS
from orbithil.sim import netlist
from orbithil.tools.fpga import synth


@pytest.fixture(scope="module", params=[0, 1], ids=["harden0", "harden1"])
def targets(request):
    return request.param, netlist.list_targets(request.param)


def test_targets_list_every_register_bit_once(targets):
    _, result = targets
    keys = [(f["name"], f["bit"]) for f in result["flip_flops"]]
    assert len(keys) == len(set(keys)) == result["flip_flop_bits"]
    by_name = Counter(f["name"] for f in result["flip_flops"])
    assert by_name["uptime"] == 32  # a multi-bit register is one entry per bit
    assert {f["bit"] for f in result["flip_flops"] if f["name"] == "uptime"} == set(range(32))


def test_tmr_copies_are_separate_targets_only_when_hardened(targets):
    harden, result = targets
    copies = {f["name"] for f in result["flip_flops"] if f["block"] == "u_regs"}
    expected = len(RW_REGISTERS) * (3 if harden else 1)
    assert len(copies) == expected
    assert sum(f["block"] == "u_regs" for f in result["flip_flops"]) == expected * 32


def test_memories_are_listed_with_their_width(targets):
    harden, result = targets
    memories = {m["name"]: (m["words"], m["width"]) for m in result["memories"]}
    assert memories["u_mem.mem"] == (2048, 39 if harden else 32)
    byte = (512, 9 if harden else 8)  # hardened: each buffered byte with its parity bit
    assert memories["u_frame_rx.buffer0"] == memories["u_frame_rx.buffer1"] == byte
    assert memories["u_frame_tx.buffer"] == byte
    assert result["memory_bits"] == sum(w * b for w, b in memories.values())


@pytest.mark.slow
def test_the_flight_build_fits_the_up5k_and_meets_12_mhz():
    """The board's flight bitstream (the default: hardened, FEC, no injection logic) places
    and routes on the UP5K and meets the 12 MHz oscillator. `make boards` checks every
    board build (the bench bitstreams with injection too): each place and route is
    about three minutes of a core, more than the suite's budget has for all of them."""
    result = synth.synthesize(harden=1, fec=1, inject=0)
    assert result.fits(), result
    assert result.timing_met() and result.fmax_mhz >= 12.0, result  # the iCEBreaker's clock
    assert result.ffs > 0 and result.luts > 0
    # the SRAM in SPRAM; the frame buffers (two receive banks and the transmit buffer,
    # 512 x 9 each: a byte and its parity) in two block RAMs each
    assert result.spram_blocks == 3 and result.ebr == 6
    assert result.as_json()["fits"] and 0 < result.as_json()["lc_share"] <= 1


def test_a_build_that_does_not_place_reports_the_cells_it_wanted(tmp_path):
    log = tmp_path / "nextpnr.log"
    log.write_text(
        "Info: Device utilisation:\n"
        "Info: \t         ICESTORM_LC:    5360/   5280   101%\n"
        "ERROR: Failed to expand region (0, 0) |_> (25, 31) of 5360 ICESTORM_LCs\n"
    )
    assert synth._cells_wanted(log) == 5360
    log.write_text("Info: \t         ICESTORM_LC:    5153/   5280    97%\nERROR: timing\n")
    assert synth._cells_wanted(log) is None  # it fitted: the failure was something else
