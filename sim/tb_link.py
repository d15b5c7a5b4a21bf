"""The host's side of chip_tb inside a cocotb test: frames in, frames out, sim-time deadlines.

Python hands whole frames to the testbench's byte queue and then waits with long timers,
so it does not run per clock or per UART bit.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable

import cocotb
from cocotb.handle import _GPISetAction
from cocotb.triggers import Timer

from orbithil.hal import codec
from orbithil.hal.codec import Frame
from orbithil.hal.protocol import check_response

CLOCK_NS = 10  # chip_tb's clock period
_DEPOSIT = _GPISetAction.DEPOSIT.value
RING = 4096


class TbLink:
    """Send frames to the simulated chip and collect its answers."""

    def __init__(self, dut, *, clks_per_bit: int) -> None:
        self.dut = dut
        self.byte_ns = 10 * clks_per_bit * CLOCK_NS  # one UART byte (8N1)
        self.deframer = codec.new_deframer()
        self.received = 0
        self.queued = 0  # bytes handed to txq, counted here: a write to a handle is
        # applied later by the simulator, so reading txq_len back could see the old value
        self.frames: list[Frame] = []
        self.damaged = 0  # byte runs the deframer threw away (damaged frames, garbage)
        self.seq = 0
        self._txq = [dut.txq[i]._handle for i in range(RING)]
        self._rxq_len = dut.rxq_len._handle
        self._rxq = [dut.rxq[i]._handle for i in range(RING)]
        self.poll_ns = 16 * self.byte_ns  # how often next_frame looks for an answer

    async def reset(self, cycles: int = 8, *, clear_memory: bool = True) -> None:
        """Reset the chip; by default also zero its SRAM through the backdoor (the SRAM,
        like a real one, keeps its contents over a reset, and tests start clean). A build
        with the SRAM on the SPRAM path (MEM_SPRAM=1) clears it itself after configuration,
        as the board does, and has no `mem` array to reach."""
        self.dut.rst.value = 1
        if clear_memory and not params().get("MEM_SPRAM"):
            mem = self.dut.dut.u_mem.mem
            for i in range(params()["MEM_WORDS"]):
                mem[i].value = 0
        await Timer(cycles * CLOCK_NS, "ns")
        self.dut.rst.value = 0
        await Timer(2 * CLOCK_NS, "ns")
        # The testbench's queues outlive a test: start from where they are now.
        self.received = int(self.dut.rxq_len.value)
        self.queued = int(self.dut.txq_len.value)
        self.deframer.reset()
        self.frames.clear()

    def send_bytes(self, data: bytes) -> None:
        start = self.queued
        if len(data) > RING - (start - int(self.dut.txq_pos.value)):
            raise ValueError(f"{len(data)} bytes do not fit the testbench's send queue")
        # raw GPI writes (cocotb's checks per byte cost ten times the write); they land at
        # once, before txq_len's write below tells the testbench the bytes are there
        txq = self._txq
        for i, byte in enumerate(data):
            txq[(start + i) % RING].set_signal_val_int(_DEPOSIT, byte)
        self.queued = start + len(data)
        self.dut.txq_len.value = self.queued

    def rewrite(self, start: int, data: bytes) -> None:
        """Put ``data`` back into the send queue at ring position ``start`` (bytes queued
        before, restored with the testbench's counters), leaving the counters alone."""
        txq = self._txq
        for i, byte in enumerate(data):
            txq[(start + i) % RING].set_signal_val_int(_DEPOSIT, byte)

    async def wait_bytes_sent(self, *, timeout_ns: int) -> None:
        waited = 0
        while int(self.dut.txq_pos.value) != self.queued:
            if waited > timeout_ns:
                raise TimeoutError("the testbench did not send its queue in time")
            await Timer(8 * self.byte_ns, "ns")
            waited += 8 * self.byte_ns

    def take_received(self) -> bytes:
        """The bytes the chip sent since the last call (read from the testbench's ring)."""
        end = int(self._rxq_len.get_signal_val_binstr(), 2)
        if end == self.received:
            return b""
        # raw reads: cocotb's .value builds a LogicArray per byte, and answers are long
        data = self.received_bytes(self.received, end)
        self.received = end
        return data

    def received_bytes(self, start: int, end: int) -> bytes:
        """Bytes ``start``..``end`` of what the chip sent (still in the testbench's ring)."""
        if end - start > RING:
            raise ValueError(f"bytes {start}..{end} are no longer all in the {RING}-byte ring")
        rxq = self._rxq
        return bytes(int(rxq[i % RING].get_signal_val_binstr(), 2) for i in range(start, end))

    def sending(self) -> bool:
        """Whether bytes handed to the send queue have not all gone out yet."""
        return int(self.dut.txq_pos.value) != self.queued

    def pending(self) -> bool:
        """Whether the chip sent bytes that ``take_received`` has not taken yet."""
        return int(self._rxq_len.get_signal_val_binstr(), 2) != self.received

    def _collect(self) -> None:
        data = self.take_received()
        if not data:
            return
        result = self.deframer.feed(data)
        self.frames += result.frames
        self.damaged += len(result.discarded)

    async def next_frame(
        self,
        *,
        timeout_ns: int,
        on_wait: Callable[[], Awaitable[int]] | None = None,
        first_wait_ns: int = 0,
    ) -> Frame | None:
        """The next frame from the chip, or None if none came within ``timeout_ns``.

        It looks every ``poll_ns``. ``on_wait`` is awaited at each look that found nothing,
        and returns how long it waited itself (less than ``poll_ns``; the wait to the next
        look is shortened by as much). ``first_wait_ns``: wait that long before the first
        look (carrying on a wait that began before this call, in step with its looks).
        """
        waited = 0
        step = self.poll_ns
        if first_wait_ns:
            await Timer(first_wait_ns, "ns")
            waited = first_wait_ns
        while True:
            self._collect()
            if self.frames:
                return self.frames.pop(0)
            if waited >= timeout_ns:
                return None
            spent = await on_wait() if on_wait is not None else 0
            if spent < step:
                await Timer(step - spent, "ns")
            waited += step

    async def drain(self, *, quiet_ns: int) -> int:
        """Collect and drop answers until nothing arrives for ``quiet_ns``; returns how many."""
        dropped = 0
        while (frame := await self.next_frame(timeout_ns=quiet_ns)) is not None:
            self.dut._log.debug("drained %s", frame)
            dropped += 1
        return dropped

    async def request(
        self,
        cmd: int,
        payload: bytes = b"",
        *,
        seq: int | None = None,
        timeout_ns: int | None = None,
    ) -> Frame:
        """Send one command frame and return the chip's answer (ACK or NAK)."""
        if seq is None:
            self.seq = (self.seq + 1) & 0xFF
            seq = self.seq
        wire = codec.frame_encode(seq, cmd, payload)
        self.send_bytes(wire)
        budget = timeout_ns or (2 * len(wire) + 300) * self.byte_ns + 400_000
        frame = await self.next_frame(timeout_ns=budget)
        if frame is None:
            raise TimeoutError(f"no answer to command 0x{cmd:02X} (seq {seq}) in {budget} ns")
        if frame.seq != seq:
            raise AssertionError(f"answer has seq {frame.seq}, expected {seq}: {frame}")
        return frame

    async def call(self, request: tuple[int, bytes], payload_len: int | None = None) -> bytes:
        """Send a (cmd, payload) request and return its ACK payload (NakError on NAK)."""
        cmd, payload = request
        return check_response(cmd, await self.request(cmd, payload), payload_len)


def params() -> dict[str, int]:
    """The running build's parameters (sim.harness passes them in ORBITHIL_TB_PARAMS)."""
    return json.loads(os.environ["ORBITHIL_TB_PARAMS"])


def seed() -> int:
    """This test run's random seed (cocotb's, logged by cocotb at start)."""
    return int(cocotb.RANDOM_SEED)
