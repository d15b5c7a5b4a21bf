"""frame_rx / frame_tx against hal.codec, byte for byte, for payloads up to 255 bytes (full
254-byte COBS groups included) and every rejection reason (run by tests/test_chip_sim.py)."""

from __future__ import annotations

import cocotb
import numpy as np
from cocotb.triggers import RisingEdge, Timer

from orbithil.hal import codec
from orbithil.hal.codec import FrameStatus
from orbithil.sim.tb_link import seed


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
        wire = codec.frame_encode(i, 0x42, payload)
        await feed(dut, wire)
        await Timer(30, "ns")
        assert int(dut.frames_done.value) == start + i + 1
        assert int(dut.last_status.value) == FrameStatus.OK, (i, len(payload))
        body = await read_body(dut, int(dut.last_len.value))
        assert body == codec.cobs_decode(wire[1:-1]), (i, len(payload))


@cocotb.test()
async def frame_rx_rejects_with_the_codecs_reason(dut):
    await reset(dut)
    good = codec.frame_encode(1, 2, b"abc")
    body = codec.cobs_decode(good[1:-1])
    cases = [
        (b"\x00\x05\x01\x02\x00", FrameStatus.COBS),
        (b"\x00" + codec.cobs_encode(body[:3]) + b"\x00", FrameStatus.BAD_LENGTH),
        (
            b"\x00" + codec.cobs_encode(body[:-1] + bytes([body[-1] ^ 1])) + b"\x00",
            FrameStatus.BAD_CRC,
        ),
        (b"\x00" + b"\x01" * 300 + b"\x00", FrameStatus.OVERSIZE),
    ]
    version2 = bytes([2]) + body[1:-2]
    version2 += codec.crc16(version2).to_bytes(2, "big")
    cases.append((b"\x00" + codec.cobs_encode(version2) + b"\x00", FrameStatus.BAD_VERSION))
    start = int(dut.frames_done.value)
    for count, (wire, reason) in enumerate(cases, start=1):
        await feed(dut, wire)
        await Timer(30, "ns")
        assert int(dut.frames_done.value) == start + count
        assert int(dut.last_status.value) == reason, (reason, int(dut.last_status.value))
        # the codec agrees on why
        assert codec.deframe(wire).discarded[0].reason == reason


async def transmit(dut, body: bytes, sent: int, expected: bytes) -> int:
    """Write ``body`` into frame_tx, send it, and check the bytes that come out equal
    ``expected``; returns the count of bytes sent so far."""
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
    for _ in range(20_000):
        await Timer(200, "ns")
        if int(dut.out_len.value) >= sent + len(expected) and not int(dut.tx_busy.value):
            break
    got = bytes(int(dut.out_bytes[(sent + k) % 1024].value) for k in range(len(expected)))
    assert got == expected, (len(body), got.hex(), expected.hex())
    sent += len(expected)
    assert int(dut.out_len.value) == sent
    return sent


@cocotb.test()
async def frame_tx_sends_what_the_codec_sends(dut):
    await reset(dut)
    rng = np.random.default_rng(seed() + 1)
    sent = int(dut.out_len.value)
    for i, payload in enumerate(payloads(rng)):
        body = bytes([1, i, 0x81, len(payload)]) + payload
        sent = await transmit(dut, body, sent, codec.frame_encode(i, 0x81, payload))


# --- forward error correction (frame format version 2) ----------------------------------
def fec_payloads(rng: np.random.Generator) -> list[bytes]:
    """Payloads a version-2 frame can carry, the longest included."""
    out = [b"", bytes(3), bytes(range(1, codec.MAX_PAYLOAD_FEC + 1))]
    out += [rng.bytes(int(rng.integers(0, codec.MAX_PAYLOAD_FEC + 1))) for _ in range(9)]
    return out


def damage(rng: np.random.Generator, data: bytes, positions) -> bytes:
    """``data`` with the bytes at ``positions`` changed to other values."""
    out = bytearray(data)
    for pos in positions:
        out[pos] ^= int(rng.integers(1, 256))
    return bytes(out)


async def expect_frame(dut, wire: bytes, done_before: int) -> tuple[int, bool, bytes]:
    """Feed one run; wait for frame_rx's verdict (the FEC pass takes a few hundred cycles);
    (status, fec, decoded body as the executor would read it)."""
    await feed(dut, wire)
    for _ in range(200):
        await Timer(100, "ns")
        if int(dut.frames_done.value) == done_before + 1:
            break
    assert int(dut.frames_done.value) == done_before + 1, "frame_rx gave no verdict"
    status = int(dut.last_status.value)
    body = await read_body(dut, int(dut.last_len.value)) if status == FrameStatus.OK else b""
    return status, bool(int(dut.last_fec.value)), body


@cocotb.test()
async def frame_rx_corrects_a_version2_frame(dut):
    """One damaged byte anywhere, or one in each interleaved codeword (two adjacent bytes):
    corrected. Two in the same codeword: beyond the code, and the chip decides as the
    host's codec does."""
    await reset(dut)
    rng = np.random.default_rng(seed() + 2)
    done = int(dut.frames_done.value)
    for i, payload in enumerate(fec_payloads(rng)):
        wire = codec.frame_encode(i, 0x43, payload, version=codec.FEC_VERSION)
        codeword = codec.cobs_decode(wire[1:-1])
        n = len(codeword)
        first = int(rng.integers(0, n - 1))
        for positions in ([], [int(rng.integers(0, n))], [first, first + 1], [n - 2, n - 1]):
            bad = damage(rng, codeword, positions)
            status, fec, body = await expect_frame(
                dut, b"\x00" + codec.cobs_encode(bad) + b"\x00", done
            )
            done += 1
            assert (status, fec) == (FrameStatus.OK, True), (i, positions, status)
            assert body == codeword[:-4], (i, positions)  # corrected in place
        same = [first, first + 2] if first + 2 < n else [first - 2, first]  # one codeword
        bad = b"\x00" + codec.cobs_encode(damage(rng, codeword, same)) + b"\x00"
        status, fec, _ = await expect_frame(dut, bad, done)
        done += 1
        host = codec.deframe(bad)
        assert (status == FrameStatus.OK) == bool(host.frames), (i, status)
        if not host.frames:
            assert status == host.discarded[0].reason


@cocotb.test()
async def frame_rx_agrees_with_the_codec_on_damaged_wire_bytes(dut):
    """Random bit flips on the encoded bytes (COBS code bytes included), as a noisy line
    makes them: frame_rx accepts exactly the frames the host's codec accepts or repairs."""
    await reset(dut)
    rng = np.random.default_rng(seed() + 3)
    done = int(dut.frames_done.value)
    accepted = 0
    for i in range(60):
        payload = rng.bytes(int(rng.integers(0, 80)))
        version = codec.FEC_VERSION if i % 4 else codec.FRAME_VERSION
        wire = bytearray(codec.frame_encode(i, 0x44, payload, version=version))
        for _ in range(int(rng.integers(1, 4))):
            pos = int(rng.integers(1, len(wire) - 1))
            flipped = wire[pos] ^ (1 << int(rng.integers(0, 8)))
            if flipped:  # a byte turned into 0x00 would split the run: another test
                wire[pos] = flipped
        host = codec.deframe(bytes(wire))
        status, fec, body = await expect_frame(dut, bytes(wire), done)
        done += 1
        if host.frames:
            frame = host.frames[0]
            accepted += 1
            assert status == FrameStatus.OK, (i, status)
            assert fec == (frame.version == codec.FEC_VERSION)
            assert body[1:3] == bytes([frame.seq, frame.cmd]) and body[4:-2] == frame.payload
        else:
            assert status == host.discarded[0].reason, (i, status, host.discarded)
    assert accepted >= 20  # the FEC repaired most of them


@cocotb.test()
async def frame_tx_sends_version2_frames_as_the_codec_does(dut):
    await reset(dut)
    rng = np.random.default_rng(seed() + 4)
    sent = int(dut.out_len.value)
    for i, payload in enumerate(fec_payloads(rng)):
        # version byte 2: frame_tx adds the parity
        body = bytes([codec.FEC_VERSION, i, 0x82, len(payload)]) + payload
        expected = codec.frame_encode(i, 0x82, payload, version=codec.FEC_VERSION)
        sent = await transmit(dut, body, sent, expected)
