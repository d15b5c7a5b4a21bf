"""frame_rx / frame_tx against hal.codec, byte for byte, for payloads up to 255 bytes (full
254-byte COBS groups included) and every rejection reason (run by tests/test_chip_sim.py)."""

from __future__ import annotations

import cocotb
import numpy as np
from cocotb.triggers import RisingEdge, Timer

import hal.codec
from hal.codec import FrameStatus
from sim.tb_link import seed


async def reset(dut) -> None:
    dut.rst.value = 1
    await Timer(50, "ns")
    await RisingEdge(dut.clk)
    dut.rst.value = 0
    await RisingEdge(dut.clk)


def payloads(rng: np.random.Generator) -> list[bytes]:
    out = [b"", bytes(255), bytes(range(1, 256)), b"\x01" * 255, b"\x00" * 3]
    for _ in range(12):
        n = int(rng.integers(0, 256))
        sparse = rng.random() < 0.5
        data = rng.integers(0, 256, n, dtype=np.uint8)
        if sparse:
            data[rng.random(n) < 0.6] = 0
        out.append(data.tobytes())
    return out


async def feed(dut, data: bytes) -> None:
    for byte in data:
        await RisingEdge(dut.clk)
        dut.in_data.value = byte
        dut.in_valid.value = 1
        await RisingEdge(dut.clk)
        dut.in_valid.value = 0


async def read_body(dut, length: int) -> bytes:
    out = bytearray()
    for i in range(length):
        await RisingEdge(dut.clk)
        dut.raddr.value = i
        await RisingEdge(dut.clk)
        await RisingEdge(dut.clk)
        out.append(int(dut.rdata.value))
    return bytes(out)


@cocotb.test()
async def frame_rx_decodes_what_the_codec_encodes(dut):
    await reset(dut)
    start = int(dut.frames_done.value)  # testbench counters outlive a test
    rng = np.random.default_rng(seed())
    for i, payload in enumerate(payloads(rng)):
        wire = hal.codec.frame_encode(i, 0x42, payload)
        await feed(dut, wire)
        await Timer(30, "ns")
        assert int(dut.frames_done.value) == start + i + 1
        assert int(dut.last_status.value) == FrameStatus.OK, (i, len(payload))
        body = await read_body(dut, int(dut.last_len.value))
        assert body == hal.codec.cobs_decode(wire[1:-1]), (i, len(payload))


@cocotb.test()
async def frame_rx_rejects_with_the_codecs_reason(dut):
    await reset(dut)
    good = hal.codec.frame_encode(1, 2, b"abc")
    body = hal.codec.cobs_decode(good[1:-1])
    cases = [
        (b"\x00\x05\x01\x02\x00", FrameStatus.COBS),
        (b"\x00" + hal.codec.cobs_encode(body[:3]) + b"\x00", FrameStatus.BAD_LENGTH),
        (
            b"\x00" + hal.codec.cobs_encode(body[:-1] + bytes([body[-1] ^ 1])) + b"\x00",
            FrameStatus.BAD_CRC,
        ),
        (b"\x00" + b"\x01" * 300 + b"\x00", FrameStatus.OVERSIZE),
    ]
    version2 = bytes([2]) + body[1:-2]
    version2 += hal.codec.crc16(version2).to_bytes(2, "big")
    cases.append((b"\x00" + hal.codec.cobs_encode(version2) + b"\x00", FrameStatus.BAD_VERSION))
    start = int(dut.frames_done.value)
    for count, (wire, reason) in enumerate(cases, start=1):
        await feed(dut, wire)
        await Timer(30, "ns")
        assert int(dut.frames_done.value) == start + count
        assert int(dut.last_status.value) == reason, (reason, int(dut.last_status.value))
        # the codec agrees on why
        assert hal.codec.deframe(wire).discarded[0].reason == reason


@cocotb.test()
async def frame_tx_sends_what_the_codec_sends(dut):
    await reset(dut)
    rng = np.random.default_rng(seed() + 1)
    sent = int(dut.out_len.value)
    for i, payload in enumerate(payloads(rng)):
        body = bytes([1, i, 0x81, len(payload)]) + payload
        for addr, byte in enumerate(body):
            await RisingEdge(dut.clk)
            dut.waddr.value = addr
            dut.wdata.value = byte
            dut.we.value = 1
        await RisingEdge(dut.clk)
        dut.we.value = 0
        dut.base.value = 0
        dut.len.value = len(body)
        dut.send.value = 1
        await RisingEdge(dut.clk)
        dut.send.value = 0
        expected = hal.codec.frame_encode(i, 0x81, payload)
        for _ in range(20_000):
            await Timer(200, "ns")
            if int(dut.out_len.value) >= sent + len(expected) and not int(dut.tx_busy.value):
                break
        got = bytes(int(dut.out_bytes[(sent + k) % 1024].value) for k in range(len(expected)))
        assert got == expected, (i, len(payload), got.hex(), expected.hex())
        sent += len(expected)
        assert int(dut.out_len.value) == sent
