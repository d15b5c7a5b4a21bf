"""Top-level tests of the chip through its UART (run by tests/test_chip_sim.py on both
simulators and both builds). Random stimulus comes from cocotb's seed, which it logs."""

from __future__ import annotations

import cocotb
import numpy as np
from cocotb.handle import Deposit
from cocotb.triggers import Timer

from orbithil.hal import codec
from orbithil.hal import protocol as p
from orbithil.hal.codec import FrameStatus
from orbithil.hal.icd import CHIP_ID, ICD_VERSION, INJECT_ARM_MAGIC, NAK, REG, Cmd, NakReason
from orbithil.sim.tb_link import TbLink, params, seed


async def link(dut) -> TbLink:
    tb = TbLink(dut, clks_per_bit=params()["CLKS_PER_BIT"])
    await tb.reset()
    return tb


def rng() -> np.random.Generator:
    return np.random.default_rng(seed())


def harden() -> bool:
    return bool(params()["HARDEN"])


async def read_reg(tb: TbLink, name: str) -> int:
    return p.parse_reg(await tb.call(p.read_reg(REG[name].addr), 5))[1]


async def write_mem(tb: TbLink, addr: int, words: np.ndarray) -> None:
    for i in range(0, len(words), 60):
        await tb.call(p.write_mem(addr + i, words[i : i + 60]), 3)


async def read_mem(tb: TbLink, addr: int, count: int) -> np.ndarray:
    out = []
    for i in range(0, count, 60):
        n = min(60, count - i)
        out.append(p.parse_mem(await tb.call(p.read_mem(addr + i, n)))[1])
    return np.concatenate(out)


async def expect_nak(tb: TbLink, request, reason: NakReason) -> None:
    cmd, payload = request
    frame = await tb.request(cmd, payload)
    assert frame.cmd == NAK, f"expected NAK {reason.name}, got 0x{frame.cmd:02X}"
    assert frame.payload[0] == reason, f"NAK reason {frame.payload[0]}, expected {reason.name}"


@cocotb.test()
async def ping_identifies_the_build(dut):
    tb = await link(dut)
    ident = p.parse_identity(await tb.call(p.ping(), 8))
    fec, inject = bool(params()["FEC"]), bool(params()["INJECT"])
    assert ident == p.Identity(CHIP_ID, ICD_VERSION, harden(), params()["MEM_WORDS"], fec, inject)
    build = await read_reg(tb, "BUILD")
    assert build >> 24 == ICD_VERSION and bool(build >> 8 & 1) == harden()
    assert bool(build >> 9 & 1) == fec and bool(build >> 10 & 1) == inject


@cocotb.test()
async def registers_read_back_and_refuse_bad_access(dut):
    tb = await link(dut)
    r = rng()
    for name in ("SCRATCH0", "SCRATCH1", "SCRUB_PERIOD"):
        value = int(r.integers(0, 2**32))
        if name == "SCRUB_PERIOD":
            value &= 0xFFFF
        addr, echoed = p.parse_reg(await tb.call(p.write_reg(REG[name].addr, value), 5))
        assert (addr, echoed) == (REG[name].addr, value)
        assert await read_reg(tb, name) == value
    assert await read_reg(tb, "ID") == CHIP_ID
    await expect_nak(tb, p.write_reg(REG["ID"].addr, 1), NakReason.BAD_ARG)  # read-only
    await expect_nak(tb, p.read_reg(0x7E), NakReason.BAD_ARG)  # unmapped
    await expect_nak(tb, (Cmd.READ_REG, b""), NakReason.BAD_ARG)  # wrong length
    await expect_nak(tb, (0x55, b""), NakReason.UNKNOWN_CMD)


@cocotb.test()
async def memory_round_trip_and_bounds(dut):
    tb = await link(dut)
    r = rng()
    words = r.integers(0, 2**32, 150, dtype=np.uint64).astype(np.uint32)
    base = int(r.integers(0, params()["MEM_WORDS"] - 150))
    await write_mem(tb, base, words)
    assert np.array_equal(await read_mem(tb, base, 150), words)
    await expect_nak(tb, p.read_mem(params()["MEM_WORDS"] - 1, 2), NakReason.BAD_ARG)
    await expect_nak(tb, (Cmd.READ_MEM, b"\x00\x00\x3d"), NakReason.BAD_ARG)  # 61 words
    telemetry = p.parse_telemetry(await tb.call(p.telemetry(), p.TELEMETRY_LEN))
    assert telemetry["ECC_CORRECTED"] == 0 and telemetry["ECC_UNCORRECTABLE"] == 0


@cocotb.test()
async def matvec_matches_numpy(dut):
    tb = await link(dut)
    r = rng()
    for rows, cols in ((5, 8), (16, 32), (64, 64)):
        weights = r.integers(-128, 128, (rows, cols), dtype=np.int8)
        x = r.integers(-128, 128, cols, dtype=np.int8)
        w_addr, x_addr = 0, rows * cols // 4
        y_addr = x_addr + cols // 4
        await write_mem(tb, w_addr, p.pack_int8(weights))
        await write_mem(tb, x_addr, p.pack_int8(x))
        status, cycles = p.parse_job(
            await tb.call(p.run_job(w_addr, x_addr, y_addr, rows, cols), 5)
        )
        assert status == 0 and cycles > 0
        y = p.unpack_int32(await read_mem(tb, y_addr, rows))
        assert np.array_equal(y, weights.astype(np.int32) @ x.astype(np.int32))
    telemetry = p.parse_telemetry(await tb.call(p.telemetry(), p.TELEMETRY_LEN))
    assert telemetry["JOB_COUNT"] == 3 and telemetry["ENERGY"] > 0
    assert telemetry["STATUS"] & 0b110 == 0b010  # done, no error
    await expect_nak(tb, p.run_job(0, 0, 0, 4, 6), NakReason.BAD_ARG)  # cols % 4 != 0
    await expect_nak(tb, p.run_job(0, 0, 0, 65, 4), NakReason.BAD_ARG)


@cocotb.test()
async def garbage_and_truncated_frames_never_hang_the_link(dut):
    tb = await link(dut)
    r = rng()
    good = 0
    for round_ in range(12):
        junk = r.integers(0, 256, int(r.integers(1, 300)), dtype=np.uint8).tobytes()
        if round_ % 3 == 0:  # a truncated frame
            junk = codec.frame_encode(9, Cmd.PING)[: int(r.integers(2, 8))]
        tb.send_bytes(junk + b"\x00")
        # whatever the chip answers to the garbage (NAKs), a good PING is answered next
        await tb.wait_bytes_sent(timeout_ns=len(junk) * tb.byte_ns * 4 + 100_000)
        n = await tb.drain(quiet_ns=100 * tb.byte_ns)
        dut._log.info("round %d: %d garbage bytes, %d answers drained", round_, len(junk), n)
        ident = p.parse_identity(await tb.call(p.ping(), 8))
        assert ident.chip_id == CHIP_ID
        good += 1
    assert good == 12
    assert await read_reg(tb, "FRAMES_BAD") > 0


@cocotb.test()
async def a_bad_frame_gets_a_nak_with_its_reason(dut):
    tb = await link(dut)
    body = bytes([1, 3, Cmd.PING, 0])
    crc = codec.crc16(body)
    bad_crc = body + (crc ^ 0x0100).to_bytes(2, "big")
    body_v2 = bytes([2, 4, Cmd.PING, 0])
    bad_version = body_v2 + codec.crc16(body_v2).to_bytes(2, "big")
    short = bytes([1, 5, Cmd.PING])
    for raw, reason, seq in (
        (bad_crc, FrameStatus.BAD_CRC, 3),
        (bad_version, FrameStatus.BAD_VERSION, 4),
        (short, FrameStatus.BAD_LENGTH, 5),
    ):
        tb.send_bytes(b"\x00" + codec.cobs_encode(raw) + b"\x00")
        frame = await tb.next_frame(timeout_ns=200 * tb.byte_ns)
        assert frame is not None and frame.cmd == NAK, frame
        assert (frame.seq, frame.payload) == (seq, bytes([reason, Cmd.PING])), frame
    assert await read_reg(tb, "FRAMES_BAD") == 3


@cocotb.test()
async def a_retried_command_is_not_executed_twice(dut):
    tb = await link(dut)
    await write_mem(tb, 0, p.pack_int8(np.ones(16, dtype=np.int8)))
    cmd, payload = p.run_job(0, 0, 8, 1, 16)
    first = await tb.request(cmd, payload, seq=77)
    again = await tb.request(cmd, payload, seq=77)  # same seq: a retry
    assert first == again and first.cmd == cmd | 0x80
    assert await read_reg(tb, "JOB_COUNT") == 1
    await tb.request(cmd, payload, seq=78)  # a new command runs
    assert await read_reg(tb, "JOB_COUNT") == 2


@cocotb.test()
async def injection_needs_arming(dut):
    tb = await link(dut)
    await expect_nak(tb, p.inject(1, 0, 0), NakReason.NOT_ARMED)
    await tb.call(p.write_reg(REG["INJ_ARM"].addr, INJECT_ARM_MAGIC), 5)
    assert await read_reg(tb, "STATUS") >> 5 & 1
    await tb.call(p.inject(1, 0, 0), 5)
    await expect_nak(tb, p.inject(1, params()["MEM_WORDS"], 0), NakReason.BAD_ARG)


@cocotb.test()
async def memory_upsets_are_corrected_or_flagged_when_hardened(dut):
    tb = await link(dut)
    r = rng()
    words = r.integers(0, 2**32, 8, dtype=np.uint64).astype(np.uint32)
    await write_mem(tb, 100, words)
    await tb.call(p.write_reg(REG["INJ_ARM"].addr, INJECT_ARM_MAGIC), 5)
    bit = int(r.integers(0, 32))
    await tb.call(p.inject(1, 101, bit), 5)  # one flip in word 101
    if harden():
        assert np.array_equal(await read_mem(tb, 100, 8), words)
        assert await read_reg(tb, "ECC_CORRECTED") == 1
        assert await read_reg(tb, "ECC_LAST_ADDR") == 101
        # the corrected word was written back: a second read corrects nothing more
        await read_mem(tb, 100, 8)
        assert await read_reg(tb, "ECC_CORRECTED") == 1
        await tb.call(p.inject(1, 103, 3), 5)
        await tb.call(p.inject(1, 103, 35), 5)  # two flips in one word
        frame = await tb.request(*p.read_mem(100, 8))
        assert frame.cmd == NAK and frame.payload[0] == NakReason.MEM_UNCORRECTABLE
        assert int.from_bytes(frame.payload[2:4], "big") == 103
        assert await read_reg(tb, "STATUS") >> 4 & 1  # uncorrectable seen
    else:
        got = await read_mem(tb, 100, 8)
        assert got[1] == words[1] ^ (1 << bit)  # silently wrong: nothing protects it
        assert await read_reg(tb, "ECC_CORRECTED") == 0


@cocotb.test()
async def a_register_copy_upset_is_outvoted_when_hardened(dut):
    tb = await link(dut)
    await tb.call(p.write_reg(REG["SCRATCH1"].addr, 0x1234_5678), 5)
    await tb.call(p.write_reg(REG["INJ_ARM"].addr, INJECT_ARM_MAGIC), 5)
    await tb.call(p.inject(0, REG["SCRATCH1"].addr, 4, 0), 5)
    value = await read_reg(tb, "SCRATCH1")
    if harden():
        assert value == 0x1234_5678
        assert await read_reg(tb, "TMR_MISMATCH") >= 1
        await tb.call(p.inject(0, REG["SCRATCH1"].addr, 4, 2), 5)  # another copy, later
        assert await read_reg(tb, "SCRATCH1") == 0x1234_5678  # the first was repaired
        await expect_nak(tb, p.inject(0, REG["SCRATCH1"].addr, 4, 3), NakReason.BAD_ARG)
    else:
        assert value == 0x1234_5678 ^ 0x10
        await expect_nak(tb, p.inject(0, REG["SCRATCH1"].addr, 4, 1), NakReason.BAD_ARG)


@cocotb.test()
async def the_scrubber_repairs_memory_without_reads(dut):
    if not harden():
        return  # HARDEN=0 has no ECC to scrub with
    tb = await link(dut)
    await tb.call(p.write_reg(REG["INJ_ARM"].addr, INJECT_ARM_MAGIC), 5)
    await tb.call(p.inject(1, 5, 7), 5)
    await tb.call(p.inject(1, 2000, 38), 5)  # a check bit
    await tb.call(p.scrub(1), 4)  # a word every cycle: the whole array in ~8k cycles
    await tb.next_frame(timeout_ns=40_000 * 10)  # let it run (nothing is expected)
    assert await read_reg(tb, "ECC_CORRECTED") == 2
    assert await read_reg(tb, "ECC_UNCORRECTABLE") == 0


@cocotb.test()
async def the_watchdog_fires_unless_kicked(dut):
    tb = await link(dut)
    await tb.call(p.write_reg(REG["WDT_TIMEOUT"].addr, 20_000), 5)
    for _ in range(4):  # kicks keep it quiet
        await tb.call(p.write_reg(REG["WDT_KICK"].addr, 1), 5)
    assert await read_reg(tb, "WDT_EXPIRIES") == 0
    await tb.next_frame(timeout_ns=30_000 * 10)  # no kick for 30k cycles
    assert await read_reg(tb, "WDT_EXPIRIES") >= 1
    assert await read_reg(tb, "STATUS") >> 3 & 1
    await tb.call(p.write_reg(REG["CTRL"].addr, 1), 5)  # clear sticky flags
    await tb.call(p.write_reg(REG["WDT_TIMEOUT"].addr, 0), 5)
    assert not await read_reg(tb, "STATUS") >> 3 & 1


@cocotb.test()
async def soft_reset_clears_state_after_answering(dut):
    tb = await link(dut)
    await tb.call(p.write_reg(REG["SCRATCH0"].addr, 99), 5)
    await tb.call(p.soft_reset(), 0)
    assert await read_reg(tb, "SCRATCH0") == 0
    assert await read_reg(tb, "FRAMES_OK") == 2  # counters restarted: the two reads since


@cocotb.test()
async def an_upset_in_the_mac_accumulator_is_retried_when_hardened(dut):
    tb = await link(dut)
    r = rng()
    rows = cols = 64
    weights = r.integers(-128, 128, (rows, cols), dtype=np.int8)
    x = r.integers(-128, 128, cols, dtype=np.int8)
    await write_mem(tb, 0, p.pack_int8(weights))
    await write_mem(tb, 1024, p.pack_int8(x))
    cmd, payload = p.run_job(0, 1024, 1100, rows, cols)
    tb.seq = (tb.seq + 1) & 0xFF
    tb.send_bytes(codec.frame_encode(tb.seq, cmd, payload))
    mac = dut.dut.u_mac
    # Wait until the engine is in the middle of row 10, reading x; then flip bit 20 of acc.
    for _ in range(200_000):
        await Timer(10, "ns")
        if int(mac.row.value) == 10 and int(mac.state.value) == 2 and int(mac.k.value) == 7:
            break
    else:
        raise AssertionError("the MAC never reached row 10")
    mac.acc.value = Deposit(int(mac.acc.value) ^ (1 << 20))
    frame = await tb.next_frame(timeout_ns=10_000_000)
    status, _ = p.parse_job(p.check_response(cmd, frame, 5))
    y = p.unpack_int32(await read_mem(tb, 1100, rows))
    expected = weights.astype(np.int32) @ x.astype(np.int32)
    if harden():
        assert status == 0 and np.array_equal(y, expected)
        assert await read_reg(tb, "MAC_RETRIES") == 1
    else:
        wrong = np.flatnonzero(y != expected)
        assert status == 0 and wrong.tolist() == [10]  # silent data corruption
        assert y[10] - expected[10] in (1 << 20, -(1 << 20))
