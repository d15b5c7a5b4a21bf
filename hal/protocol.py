"""Request payloads and response parsing for every command of the ICD (pure functions).

The HAL, the cocotb testbenches and the behavioural model all use these, so the byte
layouts in ``hal/icd.py`` are written once. Big-endian fields throughout.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from orbithil.hal.codec import Frame
from orbithil.hal.errors import NakError, ProtocolError
from orbithil.hal.icd import ACK_FLAG, MAX_MEM_WORDS_PER_FRAME, NAK, TELEMETRY_REGS, Cmd, NakReason


@dataclass(frozen=True)
class Identity:
    chip_id: int
    icd_version: int
    harden: bool
    mem_words: int
    fec: bool = False  # takes version-2 frames (link forward error correction)
    inject: bool = False  # has the INJECT command (bench builds; flight bitstreams do not)


def check_response(request_cmd: int, frame: Frame, payload_len: int | None = None) -> bytes:
    """The payload of an ACK to ``request_cmd``; raises NakError or ProtocolError."""
    if frame.cmd == NAK:
        reason = frame.payload[0] if frame.payload else 0
        detail = ""
        if reason == NakReason.MEM_UNCORRECTABLE and len(frame.payload) >= 4:
            detail = f"word {int.from_bytes(frame.payload[2:4], 'big')}"
        try:
            name = NakReason(reason).name
        except ValueError:
            name = f"unknown reason 0x{reason:02X}"
        message = f"chip answered NAK {name} to command 0x{request_cmd:02X}"
        raise NakError(message + (f" ({detail})" if detail else ""), reason=reason, frame=frame)
    if frame.cmd != request_cmd | ACK_FLAG:
        raise ProtocolError(
            f"response code 0x{frame.cmd:02X} does not answer command 0x{request_cmd:02X}"
        )
    if payload_len is not None and len(frame.payload) != payload_len:
        raise ProtocolError(
            f"response to command 0x{request_cmd:02X} carries {len(frame.payload)} bytes, "
            f"expected {payload_len}"
        )
    return frame.payload


# --- requests: (cmd, payload) ---------------------------------------------------------
def ping() -> tuple[int, bytes]:
    return Cmd.PING, b""


def read_reg(addr: int) -> tuple[int, bytes]:
    return Cmd.READ_REG, struct.pack(">B", addr)


def write_reg(addr: int, value: int) -> tuple[int, bytes]:
    return Cmd.WRITE_REG, struct.pack(">BI", addr, value & 0xFFFF_FFFF)


def read_mem(addr: int, count: int) -> tuple[int, bytes]:
    _check_count(count)
    return Cmd.READ_MEM, struct.pack(">HB", addr, count)


def write_mem(addr: int, words: np.ndarray) -> tuple[int, bytes]:
    words = np.asarray(words, dtype=">u4")
    _check_count(len(words))
    return Cmd.WRITE_MEM, struct.pack(">HB", addr, len(words)) + words.tobytes()


def run_job(w: int, x: int, y: int, rows: int, cols: int) -> tuple[int, bytes]:
    return Cmd.RUN_JOB, struct.pack(">HHHBB", w, x, y, rows, cols)


def telemetry() -> tuple[int, bytes]:
    return Cmd.TELEMETRY, b""


def soft_reset() -> tuple[int, bytes]:
    return Cmd.SOFT_RESET, b""


def scrub(period: int) -> tuple[int, bytes]:
    return Cmd.SCRUB, struct.pack(">I", period)


def inject(kind: int, index: int, bit: int, copy: int = 0) -> tuple[int, bytes]:
    return Cmd.INJECT, struct.pack(">BHBB", kind, index, bit, copy)


def _check_count(count: int) -> None:
    if not 1 <= count <= MAX_MEM_WORDS_PER_FRAME:
        raise ValueError(
            f"{count} words in one frame; a frame carries 1..{MAX_MEM_WORDS_PER_FRAME} "
            "(the HAL splits larger blocks)"
        )


# --- responses --------------------------------------------------------------------------
def parse_identity(payload: bytes) -> Identity:
    chip_id, icd, flags, words = struct.unpack(">IBBH", payload)
    return Identity(chip_id, icd, bool(flags & 1), words, bool(flags & 2), bool(flags & 4))


def parse_reg(payload: bytes) -> tuple[int, int]:
    return struct.unpack(">BI", payload)


def parse_mem(payload: bytes) -> tuple[int, np.ndarray]:
    addr, count = struct.unpack(">HB", payload[:3])
    words = np.frombuffer(payload[3:], dtype=">u4").astype(np.uint32)
    if len(words) != count:
        raise ProtocolError(f"READ_MEM answer holds {len(words)} words, says {count}")
    return addr, words


def parse_job(payload: bytes) -> tuple[int, int]:
    """(status, cycles): status 0 ok, 1 uncorrectable operand, 2 DMR mismatch, 3 watchdog."""
    return struct.unpack(">BI", payload)


TELEMETRY_LEN = 4 * len(TELEMETRY_REGS)  # bytes of TELEMETRY's answer


def parse_telemetry(payload: bytes) -> dict[str, int]:
    values = struct.unpack(f">{len(TELEMETRY_REGS)}I", payload)
    return {reg.name: value for reg, value in zip(TELEMETRY_REGS, values, strict=True)}


# --- operand packing for the MAC engine (fpga/ICD.md, RUN_JOB) --------------------------
def pack_int8(values: np.ndarray) -> np.ndarray:
    """int8 values, 4 per little-endian 32-bit word (byte 0 = bits 7:0); length % 4 == 0."""
    values = np.asarray(values, dtype=np.int8).ravel()
    if values.size % 4:
        raise ValueError(
            f"{values.size} int8 values do not fill whole words; pad to a multiple of 4"
        )
    return values.view("<u4").astype(np.uint32)


def unpack_int32(words: np.ndarray) -> np.ndarray:
    return np.asarray(words, dtype=np.uint32).view(np.int32)
