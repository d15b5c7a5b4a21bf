"""A numpy behavioural model of the chip at the frame level: the ``model://`` backend and
the reference the RTL is checked against (tests/test_hal_conformance.py).

It implements fpga/ICD.md the way fpga/rtl/cmd_exec.v does: the same checks in the same
order and the same NAK reasons, SECDED memory with write-back of corrections and a
scrubber, TMR registers that repair an upset copy, the int8 MAC with its DMR behaviour,
the watchdog, retry de-duplication and soft reset. Timing is modelled, not cycle-exact:
every byte on the link costs 10 x CLKS_PER_BIT cycles and a job about 8 cycles per
operand word, so UPTIME, JOB_CYCLES and ENERGY are estimates. ``ModelPort`` looks like a
pyserial port, so the HAL drives the model through the same code as a board.
"""

from __future__ import annotations

import struct
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import numpy as np

from orbithil.hal import codec
from orbithil.hal.backends import Opened, Option, parse_options
from orbithil.hal.codec import SecdedStatus
from orbithil.hal.errors import HalError
from orbithil.hal.icd import (
    ACK_FLAG,
    CHIP_ID,
    ICD_VERSION,
    INJECT_ARM_MAGIC,
    MAX_MATRIX_DIM,
    MAX_MEM_WORDS_PER_FRAME,
    NAK,
    REG,
    REG_BY_ADDR,
    RW_REGISTERS,
    TELEMETRY_REGS,
    Access,
    Cmd,
    NakReason,
)

U16 = 0xFFFF


class ChipModel:
    """The chip's architectural state and command semantics."""

    def __init__(self, *, harden: bool = True, mem_words: int = 2048, clks_per_bit: int = 104,
                 energy_per_cycle: int = 1, build: int = 1, fec: bool = True,
                 inject: bool = True) -> None:  # fmt: skip
        self.harden = bool(harden)
        self.fec = bool(fec)  # takes version-2 (FEC) frames, as the RTL's FEC parameter
        self.inject = bool(inject)  # has the INJECT command, as the RTL's INJECT parameter
        self.mem_words = mem_words
        self.clks_per_bit = clks_per_bit
        self.energy_per_cycle = energy_per_cycle
        self.build = build
        self.data = np.zeros(mem_words, dtype=np.uint32)
        self.check = np.zeros(mem_words, dtype=np.uint8)  # SECDED check bits (HARDEN=1)
        self.deframer = codec.new_deframer(fec=self.fec)
        self.reset_state()

    # --- state ----------------------------------------------------------------------
    def reset_state(self) -> None:
        """What a reset clears (everything but the SRAM)."""
        self.copies = {r.name: [0, 0, 0] if self.harden else [0] for r in RW_REGISTERS}
        self.c = dict.fromkeys(
            ("UPTIME", "JOB_COUNT", "JOB_CYCLES", "ENERGY", "ECC_CORRECTED", "ECC_UNCORRECTABLE",
             "ECC_LAST_ADDR", "TMR_MISMATCH", "FRAMES_OK", "FRAMES_BAD", "MAC_RETRIES",
             "WDT_EXPIRIES", "FEC_CORRECTED", "PARITY_ERRORS"), 0)  # fmt: skip
        self.flags = {"job_done": False, "job_error": False, "wdt": False, "ue": False}
        self.last_seq: int | None = None
        self.last_response: tuple[int, bytes] = (0, b"")  # (code, payload) for retries
        self.wdt_count = 0
        self.scrub_addr = 0
        self.scrub_budget = 0

    def _sat(self, name: str) -> None:
        self.c[name] = min(self.c[name] + 1, U16)

    def rw(self, name: str) -> int:
        copies = self.copies[name]
        if len(copies) == 1:
            return copies[0]
        a, b, c = copies
        return (a & b) | (b & c) | (a & c)

    def set_rw(self, name: str, value: int) -> None:
        self.copies[name] = [value] * len(self.copies[name])

    # --- time: watchdog and scrubber ---------------------------------------------------
    def advance(self, cycles: int) -> None:
        self.c["UPTIME"] = (self.c["UPTIME"] + cycles) & 0xFFFF_FFFF
        timeout = self.rw("WDT_TIMEOUT")
        if timeout:
            remaining = self.wdt_count or timeout
            if cycles >= remaining:
                fired = 1 + (cycles - remaining) // timeout
                self.c["WDT_EXPIRIES"] = min(self.c["WDT_EXPIRIES"] + fired, U16)
                self.flags["wdt"] = True
                self.wdt_count = timeout - (cycles - remaining) % timeout
            else:
                self.wdt_count = remaining - cycles
        period = self.rw("SCRUB_PERIOD")
        if period and self.harden:
            self.scrub_budget += cycles
            steps = min(self.scrub_budget // period, self.mem_words)
            self.scrub_budget -= (self.scrub_budget // period) * period
            for _ in range(int(steps)):
                self._read_word(self.scrub_addr)
                self.scrub_addr = (self.scrub_addr + 1) % self.mem_words

    # --- memory ------------------------------------------------------------------------
    def _write_word(self, addr: int, value: int) -> None:
        self.data[addr] = value
        if self.harden:
            self.check[addr] = codec.secded_encode(int(value)) >> 32

    def _read_word(self, addr: int) -> tuple[int, int]:
        """(data, status) with the RTL's side effects: counters, last address, write-back."""
        if not self.harden:
            return int(self.data[addr]), SecdedStatus.OK
        codeword = int(self.data[addr]) | int(self.check[addr]) << 32
        value, status = codec.secded_decode(codeword)
        if status == SecdedStatus.CORRECTED:
            self._sat("ECC_CORRECTED")
            self.c["ECC_LAST_ADDR"] = addr
            self._write_word(addr, value)
        elif status == SecdedStatus.UNCORRECTABLE:
            self._sat("ECC_UNCORRECTABLE")
            self.c["ECC_LAST_ADDR"] = addr
            self.flags["ue"] = True
        return value, status

    # --- registers -----------------------------------------------------------------------
    def read_register(self, addr: int) -> int | None:
        """The value the chip reads at ``addr``, or None when nothing is mapped there."""
        reg = REG_BY_ADDR.get(addr)
        if reg is None:
            return None
        if reg.access is Access.WO:
            return 0
        if reg.access is Access.RW:
            return self.rw(reg.name)
        if reg.name == "ID":
            return CHIP_ID
        if reg.name == "BUILD":
            return (ICD_VERSION << 24 | int(self.inject) << 10 | int(self.fec) << 9
                    | int(self.harden) << 8 | (self.build & 0xFF))  # fmt: skip
        if reg.name == "MEM_WORDS":
            return self.mem_words
        if reg.name == "STATUS":
            f = self.flags
            armed = self.rw("INJ_ARM") == INJECT_ARM_MAGIC
            return (f["job_done"] << 1 | f["job_error"] << 2 | f["wdt"] << 3 | f["ue"] << 4
                    | armed << 5)  # fmt: skip
        return self.c[reg.name]

    def _writable(self, addr: int) -> bool:
        reg = REG_BY_ADDR.get(addr)
        return reg is not None and reg.access in (Access.RW, Access.WO)

    def _write_register(self, addr: int, value: int) -> None:
        reg = REG_BY_ADDR[addr]
        if reg.access is Access.RW:
            self.set_rw(reg.name, value)
            if reg.name == "WDT_TIMEOUT":
                self.wdt_count = value
        elif reg.name == "WDT_KICK":
            self.wdt_count = self.rw("WDT_TIMEOUT")
        elif reg.name == "CTRL" and value & 1:
            self.flags = dict.fromkeys(self.flags, False)

    # --- commands ------------------------------------------------------------------------
    def _mac(self, w: int, x: int, y: int, rows: int, cols: int) -> tuple[int, int]:
        words = cols // 4
        cycles = 0
        for r in range(rows):
            passes = []
            for _ in range(2 if self.harden else 1):
                acc = 0
                for k in range(words):
                    wv, ws = self._read_word(w + r * words + k)
                    xv, xs = self._read_word(x + k)
                    cycles += 8
                    if SecdedStatus.UNCORRECTABLE in (ws, xs):
                        return 1, cycles
                    a = np.frombuffer(struct.pack("<I", wv), dtype=np.int8).astype(np.int32)
                    b = np.frombuffer(struct.pack("<I", xv), dtype=np.int8).astype(np.int32)
                    acc += int(a @ b)
                passes.append(acc & 0xFFFF_FFFF)
            self._write_word(y + r, passes[0])
            cycles += 4
        return 0, cycles

    def execute(self, cmd: int, payload: bytes) -> tuple[int, bytes]:
        """(response code, payload) for a good frame's command."""
        n = len(payload)
        ack = cmd | ACK_FLAG

        def nak(reason: int, extra: bytes = b"") -> tuple[int, bytes]:
            return NAK, bytes([reason, cmd]) + extra

        if cmd == Cmd.PING:
            if n:
                return nak(NakReason.BAD_ARG)
            flags = int(self.harden) | int(self.fec) << 1 | int(self.inject) << 2
            return ack, struct.pack(">IBBH", CHIP_ID, ICD_VERSION, flags, self.mem_words)
        if cmd == Cmd.READ_REG:
            if n != 1:
                return nak(NakReason.BAD_ARG)
            value = self.read_register(payload[0])
            return (
                nak(NakReason.BAD_ARG)
                if value is None
                else (ack, struct.pack(">BI", payload[0], value))
            )
        if cmd in (Cmd.WRITE_REG, Cmd.SCRUB):
            if n != (4 if cmd == Cmd.SCRUB else 5):
                return nak(NakReason.BAD_ARG)
            if cmd == Cmd.SCRUB:
                addr, value = REG["SCRUB_PERIOD"].addr, struct.unpack(">I", payload)[0]
            else:
                addr, value = struct.unpack(">BI", payload)
            if not self._writable(addr):
                return nak(NakReason.BAD_ARG)
            self._write_register(addr, value)
            readback = self.read_register(addr) or 0
            return ack, struct.pack(">I", readback) if cmd == Cmd.SCRUB else struct.pack(
                ">BI", addr, readback
            )
        if cmd == Cmd.READ_MEM:
            if n != 3:
                return nak(NakReason.BAD_ARG)
            addr, count = struct.unpack(">HB", payload)
            if count == 0 or count > MAX_MEM_WORDS_PER_FRAME or addr + count > self.mem_words:
                return nak(NakReason.BAD_ARG)
            out = bytearray(payload)
            for i in range(count):
                value, status = self._read_word(addr + i)
                if status == SecdedStatus.UNCORRECTABLE:
                    return nak(NakReason.MEM_UNCORRECTABLE, struct.pack(">H", addr + i))
                out += struct.pack(">I", value)
            return ack, bytes(out)
        if cmd == Cmd.WRITE_MEM:
            addr, count = struct.unpack(">HB", payload[:3]) if n >= 3 else (0, 0)
            if (n < 3 or count == 0 or count > MAX_MEM_WORDS_PER_FRAME or n != 3 + 4 * count
                    or addr + count > self.mem_words):  # fmt: skip
                return nak(NakReason.BAD_ARG)
            for i, (value,) in enumerate(struct.iter_unpack(">I", payload[3:])):
                self._write_word(addr + i, value)
            return ack, payload[:3]
        if cmd == Cmd.RUN_JOB:
            if n != 8:
                return nak(NakReason.BAD_ARG)
            w, x, y, rows, cols = struct.unpack(">HHHBB", payload)
            if (not 1 <= rows <= MAX_MATRIX_DIM or not 1 <= cols <= MAX_MATRIX_DIM or cols % 4
                    or w + rows * (cols // 4) > self.mem_words or x + cols // 4 > self.mem_words
                    or y + rows > self.mem_words):  # fmt: skip
                return nak(NakReason.BAD_ARG)
            status, cycles = self._mac(w, x, y, rows, cols)
            self.advance(cycles)
            self._sat("JOB_COUNT")
            self.c["JOB_CYCLES"] = cycles
            self.c["ENERGY"] = (self.c["ENERGY"] + cycles * self.energy_per_cycle) & 0xFFFF_FFFF
            self.flags["job_done"] = True
            self.flags["job_error"] |= status != 0
            return ack, struct.pack(">BI", status, cycles)
        if cmd == Cmd.TELEMETRY:
            if n:
                return nak(NakReason.BAD_ARG)
            return ack, b"".join(
                struct.pack(">I", self.read_register(r.addr)) for r in TELEMETRY_REGS
            )
        if cmd == Cmd.SOFT_RESET:
            return nak(NakReason.BAD_ARG) if n else (ack, b"")
        if cmd == Cmd.INJECT:
            if not self.inject:  # refused whatever its payload, as the RTL's INJECT=0
                return nak(NakReason.NOT_IN_BUILD)
            if n != 5:
                return nak(NakReason.BAD_ARG)
            if self.rw("INJ_ARM") != INJECT_ARM_MAGIC:
                return nak(NakReason.NOT_ARMED)
            kind, index, bit, copy = struct.unpack(">BHBB", payload)
            if kind == 0:
                reg = REG_BY_ADDR.get(index)
                if (index > 0xFF or bit > 31 or copy > (2 if self.harden else 0)
                        or reg is None or reg.access is not Access.RW):  # fmt: skip
                    return nak(NakReason.BAD_ARG)
                self.copies[reg.name][copy] ^= 1 << bit
                if self.harden:  # out-voted, counted for one cycle, repaired on the next
                    self._sat("TMR_MISMATCH")
                    self.set_rw(reg.name, self.rw(reg.name))
                return ack, payload
            if kind == 1:
                if index >= self.mem_words or bit >= (39 if self.harden else 32):
                    return nak(NakReason.BAD_ARG)
                if bit < 32:
                    self.data[index] ^= np.uint32(1 << bit)
                else:
                    self.check[index] ^= np.uint8(1 << (bit - 32))
                return ack, payload
            return nak(NakReason.BAD_ARG)
        return nak(NakReason.UNKNOWN_CMD)

    @staticmethod
    def _partial_header(run: bytes) -> tuple[int, int]:
        """(seq, cmd) as frame_rx captures them from a damaged frame: the decoded bytes 1
        and 2, as far as COBS decoding got (0 where it did not get that far)."""
        out: list[int] = []
        remaining, first, last_ff = 0, True, False
        for byte in run:
            if remaining == 0:
                if not first and not last_ff:
                    out.append(0)
                remaining, last_ff, first = byte - 1, byte == 0xFF, False
            else:
                out.append(byte)
                remaining -= 1
            if len(out) >= 3:
                break
        return (out[1] if len(out) > 1 else 0), (out[2] if len(out) > 2 else 0)

    def receive(self, data: bytes) -> bytes:
        """Bytes from the host in, the chip's answer bytes out."""
        self.advance(len(data) * 10 * self.clks_per_bit)
        base = self.deframer.offset
        corrected = self.deframer.bytes_corrected
        result = self.deframer.feed(data)
        fixed = self.deframer.bytes_corrected - corrected
        self.c["FEC_CORRECTED"] = min(self.c["FEC_CORRECTED"] + fixed, U16)
        out = bytearray()
        for discard in result.discarded:  # each bad frame gets a NAK with its reason
            self._sat("FRAMES_BAD")
            seq, cmd = self._partial_header(data[max(discard.start - base, 0) : discard.end - base])
            out += codec.frame_encode(seq, NAK, bytes([discard.reason, cmd]))
        for frame in result.frames:
            self.c["FRAMES_OK"] = (self.c["FRAMES_OK"] + 1) & 0xFFFF_FFFF
            # Answers go out in the request's frame version (2: with FEC), a retry's too.
            if self.last_seq is not None and frame.seq == self.last_seq:
                code, payload = self.last_response  # a retry: answer again, do not execute
                out += codec.frame_encode(frame.seq, code, payload, version=frame.version)
                continue
            code, payload = self.execute(frame.cmd, frame.payload)
            self.last_seq, self.last_response = frame.seq, (code, payload)
            out += codec.frame_encode(frame.seq, code, payload, version=frame.version)
            if frame.cmd == Cmd.SOFT_RESET and code != NAK:
                self.reset_state()
        self.advance(len(out) * 10 * self.clks_per_bit)
        return bytes(out)


class ModelPort:
    """A pyserial-like port in front of a ChipModel (``model://``)."""

    def __init__(self, model: ChipModel, *, timeout: float | None = 1.0) -> None:
        self.model = model
        self.timeout = timeout
        self._out = bytearray()
        self._lock = threading.Lock()
        self.is_open = True

    def write(self, data: bytes) -> int:
        with self._lock:
            self._out += self.model.receive(bytes(data))
        return len(data)

    def read(self, size: int = 1) -> bytes:
        with self._lock:
            if self._out:
                chunk = bytes(self._out[:size])
                del self._out[:size]
                return chunk
        if self.timeout:  # nothing to read: wait like a serial port would
            time.sleep(min(self.timeout, 0.01))
        return b""

    @property
    def in_waiting(self) -> int:
        return len(self._out)

    def reset_input_buffer(self) -> None:
        self._out.clear()

    def close(self) -> None:
        self.is_open = False


__all__ = ["BACKEND", "CHIP_OPTIONS", "ChipModel", "ModelPort"]


def _chip_options() -> dict[str, Option]:
    """The build parameters a chip URL takes (``model://`` and ``sim://`` share them)."""
    return {
        "harden": Option(
            int, "1: TMR registers and SECDED memory; 0: the unhardened build", (0, 1)
        ),
        "fec": Option(int, "1: the chip takes forward-error-corrected frames", (0, 1)),
        "inject": Option(
            int,
            "1: the debug INJECT command (bench builds); 0: none, as flight bitstreams",
            (0, 1),
        ),
        "mem_words": Option(
            int, "data SRAM size in 32-bit words", min=64, max=32768, power_of_two=True
        ),
        "clks_per_bit": Option(int, "UART clocks per bit", min=4, max=65535),
    }


CHIP_OPTIONS = _chip_options()


@dataclass(frozen=True)
class ModelBackend:
    """``model://?harden=1``: the numpy behavioural model, in this process."""

    scheme: str = "model"
    description: str = "the behavioural model of the chip, in this process: model://?harden=1"
    options: dict = field(default_factory=_chip_options)

    def open(self, url: str) -> Opened:
        parts = urlsplit(url)
        if parts.netloc or parts.path not in ("", "/"):
            raise HalError(f"model:// takes no host or path, only options: got {url!r}")
        return Opened(ModelPort(ChipModel(**parse_options(parts.query, self.options, url))))


BACKEND = ModelBackend()
