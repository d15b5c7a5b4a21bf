"""uart_rx / uart_tx against an independent bit-level model of 8N1, with baud-rate error
(run by tests/test_chip_sim.py on both simulators)."""

from __future__ import annotations

import cocotb
import numpy as np
from cocotb.triggers import RisingEdge, Timer

from orbithil.sim.tb_link import seed

BIT_NS = 16 * 10  # 16 clocks of 10 ns


async def send_bits(dut, byte: int, *, bit_ns: float, stop: int = 1) -> None:
    for level in [0, *((byte >> i) & 1 for i in range(8)), stop]:
        dut.rx.value = level
        await Timer(round(bit_ns), "ns")
    dut.rx.value = 1


async def reset(dut) -> None:
    dut.rst.value = 1
    await Timer(100, "ns")
    dut.rst.value = 0
    await Timer(100, "ns")


@cocotb.test()
async def receiver_takes_bytes_at_plus_minus_3_percent_baud(dut):
    await reset(dut)
    rng = np.random.default_rng(seed())
    sent = 0
    for error in (-0.03, 0.0, 0.03):
        for byte in [0x00, 0xFF, 0x55, 0xAA, *(int(b) for b in rng.integers(0, 256, 20))]:
            await send_bits(dut, byte, bit_ns=BIT_NS * (1 + error))
            await Timer(BIT_NS, "ns")
            sent += 1
            assert int(dut.last_byte.value) == byte, (hex(byte), error)
            assert int(dut.bytes_seen.value) == sent
    assert int(dut.frame_errors.value) == 0


@cocotb.test()
async def a_missing_stop_bit_is_a_framing_error_and_the_receiver_recovers(dut):
    await reset(dut)
    await send_bits(dut, 0x3C, bit_ns=BIT_NS, stop=0)
    await Timer(12 * BIT_NS, "ns")  # line idle again
    assert int(dut.frame_errors.value) >= 1
    seen = int(dut.bytes_seen.value)
    await send_bits(dut, 0xC3, bit_ns=BIT_NS)
    await Timer(BIT_NS, "ns")
    assert int(dut.bytes_seen.value) == seen + 1 and int(dut.last_byte.value) == 0xC3


@cocotb.test()
async def transmitter_sends_8n1_with_exact_bit_times(dut):
    await reset(dut)
    for byte in (0x00, 0xFF, 0xA5, 0x3C):
        await RisingEdge(dut.clk)
        dut.tx_data.value = byte
        dut.tx_start.value = 1
        await RisingEdge(dut.clk)
        dut.tx_start.value = 0
        # find the start bit's falling edge, then sample each bit in its middle
        for _ in range(100):
            await Timer(10, "ns")
            if int(dut.tx.value) == 0:
                break
        await Timer(BIT_NS // 2, "ns")
        bits = []
        for _ in range(10):
            bits.append(int(dut.tx.value))
            await Timer(BIT_NS, "ns")
        assert bits[0] == 0 and bits[9] == 1, bits  # start, stop
        assert sum(b << i for i, b in enumerate(bits[1:9])) == byte
        assert int(dut.tx_busy.value) == 0
