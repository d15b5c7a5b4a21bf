"""The Chip API: one interface over the board, the simulated chip and the model.

Every call goes through ``FrameLink`` (deadline, retries, no double execution) and raises
only ``HalError`` subclasses. Blocks larger than a frame are split here.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import numpy as np

from orbithil.hal import protocol as p
from orbithil.hal.errors import ArgumentError, ChipFault, HalError, NotInBuild
from orbithil.hal.icd import INJECT_ARM_MAGIC, MAX_MEM_WORDS_PER_FRAME, REG
from orbithil.hal.link import FrameLink

JOB_STATUS = {0: "ok", 1: "uncorrectable operand", 2: "DMR mismatch after retry", 3: "watchdog"}


@dataclass(frozen=True)
class Telemetry:
    """A snapshot of the chip's counters and flags (the TELEMETRY command)."""

    values: dict[str, int]

    def __getitem__(self, name: str) -> int:
        return self.values[name]

    @property
    def status(self) -> int:
        return self.values["STATUS"]

    @property
    def job_busy(self) -> bool:
        return bool(self.status & 1)

    @property
    def job_error(self) -> bool:
        return bool(self.status >> 2 & 1)

    @property
    def watchdog_expired(self) -> bool:
        return bool(self.status >> 3 & 1)

    @property
    def uncorrectable_seen(self) -> bool:
        return bool(self.status >> 4 & 1)

    @property
    def armed(self) -> bool:
        return bool(self.status >> 5 & 1)


def _int_in(value, low: int, high: int, what: str) -> int:
    """``value`` as an int in low..high, else an ArgumentError naming ``what`` and the range."""
    try:
        number = operator.index(value)
    except TypeError:
        raise ArgumentError(f"{what} {value!r} is not an integer; use {low}..{high}") from None
    if not low <= number <= high:
        raise ArgumentError(f"{what} {number} is out of range; use {low}..{high}")
    return number


def _reg_addr(reg: int | str) -> int:
    if isinstance(reg, str):
        try:
            return REG[reg].addr
        except KeyError:
            raise ArgumentError(f"no register {reg!r}; registers: {', '.join(REG)}") from None
    return _int_in(reg, 0, 0xFF, "register address")


class Chip:
    """A chip behind a FrameLink. Use ``hal.open(url)`` to get one."""

    def __init__(self, link: FrameLink, *, url: str = "", backend=None) -> None:
        self.link = link
        self.url = url
        self._backend = backend  # owns the process / port; closed with the chip
        self._identity: p.Identity | None = None

    # --- context manager ---
    def __enter__(self) -> Chip:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None
        else:
            self.link.port.close()

    def __repr__(self) -> str:
        return f"Chip({self.url!r})"

    def call(
        self, request, payload_len: int | None = None, *, timeout_s: float | None = None
    ) -> bytes:
        cmd, payload = request
        if self.link.needs_fec_capability():
            self._learn_fec()
        frame = self.link.transact(cmd, payload, timeout_s=timeout_s)
        return p.check_response(cmd, frame, payload_len)

    def _learn_fec(self) -> None:
        """Ask the chip (PING) whether it takes version-2 frames, before the link uses them."""
        self.link.fec_capable = False  # the PING itself goes as version 1
        try:
            self.identify()
        except HalError:
            self.link.fec_capable = None  # ask again next time
            raise
        if self.link.fec == "on" and not self.link.fec_capable:
            raise HalError(
                f"fec='on' but the chip at {self.url or 'this link'} was built without link "
                "FEC (PING flags bit 1 is 0); "
                "open it with fec='auto' or fec='off'"
            )

    # --- commands ---
    def identify(self) -> p.Identity:
        self._identity = p.parse_identity(self.call(p.ping(), 8))
        self.link.fec_capable = self._identity.fec
        return self._identity

    @property
    def identity(self) -> p.Identity:
        return self._identity or self.identify()

    def read_reg(self, reg: int | str) -> int:
        return p.parse_reg(self.call(p.read_reg(_reg_addr(reg)), 5))[1]

    def write_reg(self, reg: int | str, value: int) -> int:
        """Write a register; returns the value read back (0 for write-only strobes)."""
        value = _int_in(value, 0, 0xFFFF_FFFF, "register value")
        return p.parse_reg(self.call(p.write_reg(_reg_addr(reg), value), 5))[1]

    def _check_block(self, addr: int, count: int) -> None:
        words = self.identity.mem_words
        addr = _int_in(addr, 0, words - 1, "word address")
        count = _int_in(count, 0, words, "word count")
        if addr + count > words:
            raise ArgumentError(
                f"words {addr}..{addr + count - 1} are outside the chip's 0..{words - 1}"
            )

    def read_mem(self, addr: int, count: int) -> np.ndarray:
        """``count`` words from ``addr`` as uint32; ChipFault if one is uncorrectable."""
        self._check_block(addr, count)
        out = np.empty(count, dtype=np.uint32)
        for start in range(0, count, MAX_MEM_WORDS_PER_FRAME):
            n = min(MAX_MEM_WORDS_PER_FRAME, count - start)
            _, words = p.parse_mem(self.call(p.read_mem(addr + start, n)))
            out[start : start + n] = words
        return out

    def write_mem(self, addr: int, words: np.ndarray) -> None:
        words = np.asarray(words)
        if words.dtype.kind not in "ui":
            raise TypeError(f"words must be an integer array (uint32), got dtype {words.dtype}")
        words = words.astype(np.uint32).ravel()
        self._check_block(addr, len(words))
        for start in range(0, len(words), MAX_MEM_WORDS_PER_FRAME):
            chunk = words[start : start + MAX_MEM_WORDS_PER_FRAME]
            self.call(p.write_mem(addr + start, chunk), 3)

    def run_job(self, w_addr: int, x_addr: int, y_addr: int, rows: int, cols: int) -> int:
        """Run a MAC job on operands already in memory; returns its cycle count. Fields that
        do not fit the RUN_JOB frame are refused here; the chip judges the rest (BAD_ARG)."""
        for name, value in (("w_addr", w_addr), ("x_addr", x_addr), ("y_addr", y_addr)):
            _int_in(value, 0, 0xFFFF, f"run_job {name}")
        _int_in(rows, 0, 0xFF, "run_job rows")
        _int_in(cols, 0, 0xFF, "run_job cols")
        status, cycles = p.parse_job(
            self.call(
                p.run_job(w_addr, x_addr, y_addr, rows, cols), 5, timeout_s=self.link.timeout_s * 4
            )
        )
        if status:
            raise ChipFault(
                f"MAC job failed: {JOB_STATUS.get(status, status)}",
                flags=self.read_reg("STATUS"),
                detail=f"status {status}",
            )
        return cycles

    def run_matvec(self, weights: np.ndarray, x: np.ndarray, *, base: int = 0) -> np.ndarray:
        """y = weights @ x on the chip (int8 operands, int32 results): load, run, read back."""
        weights = np.asarray(weights)
        x = np.asarray(x)
        if weights.ndim != 2 or x.ndim != 1 or weights.shape[1] != x.shape[0]:
            raise ArgumentError(
                f"shapes {weights.shape} @ {x.shape} do not make a matrix-vector product"
            )
        rows, cols = weights.shape
        if not (1 <= rows <= 64 and 4 <= cols <= 64 and cols % 4 == 0):
            raise ArgumentError(f"matrix {rows}x{cols}: rows 1..64, cols 4..64 and a multiple of 4")
        for name, arr in (("weights", weights), ("x", x)):
            if arr.dtype.kind not in "ui" or arr.min() < -128 or arr.max() > 127:
                raise ArgumentError(f"{name} must be int8 values (-128..127)")
        w_words = p.pack_int8(weights)
        x_addr = base + len(w_words)
        y_addr = x_addr + cols // 4
        self.write_mem(base, w_words)
        self.write_mem(x_addr, p.pack_int8(x))
        self.run_job(base, x_addr, y_addr, rows, cols)
        return p.unpack_int32(self.read_mem(y_addr, rows))

    def telemetry(self) -> Telemetry:
        return Telemetry(p.parse_telemetry(self.call(p.telemetry(), p.TELEMETRY_LEN)))

    def reset(self, *, clear_memory: bool = False) -> None:
        """Soft reset: engines, counters and registers. The SRAM keeps its contents unless
        ``clear_memory``, which then writes it all to zero (a known start state)."""
        self.call(p.soft_reset(), 0)
        self.link.seq = 0  # the chip forgot the last sequence number; start afresh
        if clear_memory:
            self.write_mem(0, np.zeros(self.identity.mem_words, dtype=np.uint32))

    def scrub(self, period: int) -> None:
        """Cycles between scrubber steps (0 turns the scrubber off)."""
        period = _int_in(period, 0, 0xFFFF_FFFF, "scrub period (cycles between steps, 0 = off)")
        self.call(p.scrub(period), 4)

    def kick(self) -> None:
        self.write_reg("WDT_KICK", 1)

    def arm_injection(self) -> None:
        self.write_reg("INJ_ARM", INJECT_ARM_MAGIC)

    def inject(self, kind: str, index: int, bit: int, copy: int = 0) -> None:
        """Debug SEU: ``kind`` "reg" (register address, TMR copy) or "mem" (word, codeword bit)."""
        kinds = {"reg": 0, "mem": 1}
        if kind not in kinds:
            raise ArgumentError(f"inject kind must be 'reg' or 'mem', got {kind!r}")
        if not self.identity.inject:
            raise NotInBuild(
                f"the chip at {self.url or 'this link'} was built without debug SEU injection "
                "(INJECT=0, as a flight bitstream: PING flags bit 2 and BUILD[10] are 0); "
                "inject on a bench build (orbithil synth --inject 1) or a simulated chip",
                feature="INJECT",
            )
        harden = self.identity.harden
        if kind == "reg":
            index = _reg_addr(index)
            bit = _int_in(bit, 0, 31, "inject bit of a register")
            copy = _int_in(copy, 0, 2 if harden else 0, "inject TMR copy")
        else:
            index = _int_in(index, 0, self.identity.mem_words - 1, "inject memory word")
            width = 39 if harden else 32  # the stored codeword: data and SECDED check bits
            bit = _int_in(bit, 0, width - 1, "inject bit of a memory word")
            copy = _int_in(copy, 0, 0xFF, "inject copy (ignored for memory)")
        self.call(p.inject(kinds[kind], index, bit, copy), 5)
