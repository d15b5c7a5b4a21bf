"""The chip's interface, as data: commands, response codes, NAK reasons and registers.

One source of truth. ``tools/fpga/gen.py`` writes the Verilog constants from it
(``fpga/rtl/orbithil_icd.vh``), ``tests/test_icd.py`` checks ``fpga/ICD.md`` against it,
and the HAL encodes and decodes with it. Frame-level constants live in
``hal/codec/frame_format.py``; the SECDED code in ``hal/codec/hmatrix.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from orbithil.hal.codec.frame_format import FrameStatus

ICD_VERSION = 2  # 2: NAK PARITY and NOT_IN_BUILD, FEC_CORRECTED, PARITY_ERRORS, INJECT flag
CHIP_ID = 0x4F48_494C  # "OHIL"
ACK_FLAG = 0x80  # a response's cmd byte is the request's cmd | ACK_FLAG ...
NAK = 0xFF  # ... or NAK, with payload [reason, request cmd]
INJECT_ARM_MAGIC = 0x5EED_F11B  # INJ_ARM must hold this for INJECT to act
MAX_MEM_WORDS_PER_FRAME = 60  # READ_MEM / WRITE_MEM words per frame (4 bytes each)
MAX_MATRIX_DIM = 64  # MAC rows and columns


class Cmd(IntEnum):
    """Request command codes."""

    PING = 0x01
    READ_REG = 0x02
    WRITE_REG = 0x03
    READ_MEM = 0x04
    WRITE_MEM = 0x05
    RUN_JOB = 0x06
    TELEMETRY = 0x07
    SOFT_RESET = 0x08
    SCRUB = 0x09
    INJECT = 0x0A


class NakReason(IntEnum):
    """Why the chip refused a frame or a command (first byte of a NAK's payload).

    Codes 1..5 are the frame-level ``FrameStatus`` codes, the same numbers.
    """

    COBS = FrameStatus.COBS
    BAD_LENGTH = FrameStatus.BAD_LENGTH
    BAD_CRC = FrameStatus.BAD_CRC
    BAD_VERSION = FrameStatus.BAD_VERSION
    OVERSIZE = FrameStatus.OVERSIZE
    UNKNOWN_CMD = 0x10
    BAD_ARG = 0x11
    NOT_ARMED = 0x12
    MEM_UNCORRECTABLE = 0x13
    JOB_ERROR = 0x14
    OVERRUN = 0x15  # bytes arrived while the chip was answering with a frame waiting; lost
    PARITY = 0x16  # a bit of the request flipped inside the chip after its CRC; resend it
    NOT_IN_BUILD = 0x17  # the command exists, but this build leaves it out (INJECT=0)


class Access(IntEnum):
    RO = 0  # read-only: a counter or status
    RW = 1  # read-write, triplicated (TMR) when HARDEN=1
    WO = 2  # write-only strobe; reads as 0


@dataclass(frozen=True)
class Register:
    """One 32-bit register of the chip's register file."""

    addr: int
    name: str
    access: Access
    doc: str
    reset: int = 0


# fmt: off
REGISTERS: tuple[Register, ...] = (
    Register(0x00, "ID", Access.RO, 'chip id, "OHIL"', CHIP_ID),
    Register(0x01, "BUILD", Access.RO,
             "[31:24] ICD version, [10] INJECT, [9] FEC, [8] HARDEN, [7:0] build number"),
    Register(0x02, "MEM_WORDS", Access.RO, "data SRAM size in 32-bit words"),
    Register(0x03, "STATUS", Access.RO,
             "[0] job busy, [1] job done, [2] job error, [3] watchdog expired, "
             "[4] uncorrectable seen, [5] injection armed"),
    Register(0x04, "UPTIME", Access.RO, "clock cycles since reset (wraps)"),
    Register(0x05, "JOB_COUNT", Access.RO, "jobs completed (16-bit, saturates)"),
    Register(0x06, "JOB_CYCLES", Access.RO, "cycles the last job took"),
    Register(0x07, "ENERGY", Access.RO, "energy of all jobs, in ENERGY_PER_CYCLE units x cycles"),
    Register(0x08, "ECC_CORRECTED", Access.RO,
             "SECDED corrections by reads and scrubs (16-bit, saturates)"),
    Register(0x09, "ECC_UNCORRECTABLE", Access.RO,
             "SECDED uncorrectable words seen (16-bit, saturates)"),
    Register(0x0A, "ECC_LAST_ADDR", Access.RO, "address of the last corrected or bad word"),
    Register(0x0B, "TMR_MISMATCH", Access.RO, "cycles TMR copies disagreed (16-bit, saturates)"),
    Register(0x0C, "FRAMES_OK", Access.RO, "good frames received"),
    Register(0x0D, "FRAMES_BAD", Access.RO, "bad frames, each NAKed (16-bit, saturates)"),
    Register(0x0E, "MAC_RETRIES", Access.RO, "MAC rows redone after a DMR mismatch (16-bit, sat.)"),
    Register(0x0F, "WDT_EXPIRIES", Access.RO, "watchdog expiries (16-bit, saturates)"),
    Register(0x10, "CTRL", Access.WO, "write with [0] set: clear the sticky STATUS flags"),
    Register(0x11, "SCRUB_PERIOD", Access.RW, "cycles between scrubber steps; 0 = scrubber off"),
    Register(0x12, "WDT_TIMEOUT", Access.RW,
             "watchdog timeout in cycles (a write restarts it); 0 = off"),
    Register(0x13, "WDT_KICK", Access.WO, "any write restarts the watchdog"),
    Register(0x14, "INJ_ARM", Access.RW, "write INJECT_ARM_MAGIC to allow INJECT"),
    Register(0x15, "FEC_CORRECTED", Access.RO,
             "bytes the link's FEC decoder corrected (16-bit, saturates)"),
    Register(0x16, "PARITY_ERRORS", Access.RO,
             "flips found by the frame buffers' parity (HARDEN=1; 16-bit, saturates)"),
    Register(0x18, "SCRATCH0", Access.RW, "general-purpose"),
    Register(0x19, "SCRATCH1", Access.RW, "general-purpose"),
)
# fmt: on
REG = {r.name: r for r in REGISTERS}
REG_BY_ADDR = {r.addr: r for r in REGISTERS}
# The read-write registers, in the order of the chip's register file (regfile_tmr index).
RW_REGISTERS = tuple(r for r in REGISTERS if r.access is Access.RW)
TELEMETRY_REGS = tuple(r for r in REGISTERS if r.access is Access.RO)  # TELEMETRY returns these


@dataclass(frozen=True)
class CommandSpec:
    """Request and response payload layouts (big-endian fields), for the ICD and the HAL."""

    cmd: Cmd
    request: str
    response: str
    doc: str


# fmt: off
COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec(Cmd.PING, "-", "id u32, icd u8, flags u8 ([0] HARDEN, [1] FEC, [2] INJECT), "
                "mem_words u16",
                "identify the chip"),
    CommandSpec(Cmd.READ_REG, "addr u8", "addr u8, value u32", "read one register"),
    CommandSpec(Cmd.WRITE_REG, "addr u8, value u32", "addr u8, value u32 (as read back)",
                "write one register"),
    CommandSpec(Cmd.READ_MEM, "addr u16, count u8", "addr u16, count u8, words u32[count]",
                "read count (1..60) words; NAK MEM_UNCORRECTABLE (payload + addr u16) if any "
                "word is uncorrectable"),
    CommandSpec(Cmd.WRITE_MEM, "addr u16, count u8, words u32[count]", "addr u16, count u8",
                "write count (1..60) words"),
    CommandSpec(Cmd.RUN_JOB, "w u16, x u16, y u16, rows u8, cols u8",
                "status u8, cycles u32",
                "y[r] = sum_c W[r][c] * x[c], int8 operands packed 4 per word (byte 0 = bits "
                "7:0), W row-major with cols/4 words per row, int32 results; cols a multiple "
                "of 4, rows and cols 1..64; answers when done"),
    CommandSpec(Cmd.TELEMETRY, "-", "every RO register (0x00..0x0F, 0x15, 0x16), u32 each",
                "snapshot of every counter and flag"),
    CommandSpec(Cmd.SOFT_RESET, "-", "-",
                "reset engines, counters and registers after the response is sent"),
    CommandSpec(Cmd.SCRUB, "period u32", "period u32",
                "set SCRUB_PERIOD (a shortcut for WRITE_REG)"),
    CommandSpec(Cmd.INJECT, "kind u8, index u16, bit u8, copy u8",
                "kind u8, index u16, bit u8, copy u8",
                "debug SEU: flip bit of register (kind 0, TMR copy 0..2) or of the stored "
                "codeword of memory word (kind 1, bit 0..38); needs INJ_ARM armed; a chip built "
                "without it (INJECT=0: flight bitstreams) answers NAK NOT_IN_BUILD"),
)
# fmt: on
