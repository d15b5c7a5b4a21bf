"""The host-link frame format (fpga/ICD.md, "Frame format"): constants and value types.

On the wire a frame is ``00 | COBS(body) | 00`` where
``body = version | seq | cmd | length | payload[length] | crc16_hi | crc16_lo`` and the CRC is
CRC-16/CCITT-FALSE over ``version .. payload``. Running the same CRC over the whole body,
CRC included, gives 0 — which is how the RTL checks it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

FRAME_VERSION = 1
DELIMITER = 0x00
HEADER_LEN = 4  # version, seq, cmd, length
CRC_LEN = 2
MAX_PAYLOAD = 255
MIN_BODY = HEADER_LEN + CRC_LEN
MAX_BODY = HEADER_LEN + MAX_PAYLOAD + CRC_LEN

# CRC-16/CCITT-FALSE (a.k.a. CRC-16/IBM-3740): poly 0x1021, init 0xFFFF, no reflection,
# no final XOR; check value over b"123456789" is 0x29B1.
CRC16_POLY = 0x1021
CRC16_INIT = 0xFFFF
CRC16_CHECK = 0x29B1


def cobs_max_encoded_len(n: int) -> int:
    """Longest COBS encoding of ``n`` bytes: one code byte per started 254-byte block."""
    return n + n // 254 + 1


# Frame format version 2 adds forward error correction (hal/codec/fec.py): FEC_PARITY
# Reed-Solomon parity bytes after the CRC, two for each of FEC_INTERLEAVE interleaved
# codewords, so one damaged byte in each is corrected (two adjacent bytes included). The
# body still fits MAX_BODY, so a version-2 frame carries at most MAX_PAYLOAD_FEC bytes.
FEC_VERSION = 2
FEC_INTERLEAVE = 2
RS_PARITY = 2  # per codeword: corrects one byte
FEC_PARITY = FEC_INTERLEAVE * RS_PARITY
RS_PRIMITIVE = 0x11D  # x^8 + x^4 + x^3 + x^2 + 1; generator alpha = 2, first root alpha^0
MAX_PAYLOAD_FEC = MAX_BODY - HEADER_LEN - CRC_LEN - FEC_PARITY
MIN_BODY_FEC = MIN_BODY + FEC_PARITY

MAX_ENCODED = cobs_max_encoded_len(MAX_BODY)  # longest run of bytes between delimiters
MAX_WIRE = MAX_ENCODED + 2  # with both delimiters


def cobs_prefix(encoded: bytes | bytearray, n: int) -> bytes | None:
    """The first ``n`` bytes COBS-decoded from the start of ``encoded`` (the bytes after
    a delimiter), or None while too few have come to tell."""
    out = bytearray()
    i = 0
    while len(out) < n:
        if i >= len(encoded):
            return None
        code = encoded[i]
        group = encoded[i + 1 : i + code]
        out += group
        if len(out) >= n:
            break
        if len(group) < code - 1:
            return None
        i += code
        if code != 0xFF:
            out.append(0)  # a group that ends before the run does ends at a zero
    return bytes(out[:n])


def body_len_from_header(encoded: bytes | bytearray) -> int | None:
    """The body length (header, payload, CRC and, in version 2, parity) that the header at
    the start of a run of encoded bytes announces; None while too few bytes have come."""
    header = cobs_prefix(encoded, HEADER_LEN)
    if header is None:
        return None
    version, _, _, length = header
    return HEADER_LEN + length + CRC_LEN + (FEC_PARITY if version == FEC_VERSION else 0)


def run_overdue(encoded: bytes | bytearray) -> bool:
    """Whether a run still waiting for its delimiter already holds more bytes than the
    frame its header announces can encode to: its closing delimiter was lost (or its
    header damaged), and no delimiter will make it a good frame."""
    body = body_len_from_header(encoded)
    return body is not None and len(encoded) > cobs_max_encoded_len(body)


class FrameStatus(IntEnum):
    """Why a frame was or was not accepted. Shared with C (build.py) and the chip's NAK codes."""

    OK = 0
    COBS = 1  # not valid COBS
    BAD_LENGTH = 2  # shorter than a header and CRC, or the length byte disagrees
    BAD_CRC = 3
    BAD_VERSION = 4
    OVERSIZE = 5  # more than MAX_ENCODED bytes without a delimiter


class Frame(NamedTuple):
    """One decoded frame (a named tuple: cheap to make, immutable, compares by value)."""

    seq: int
    cmd: int
    payload: bytes
    version: int = FRAME_VERSION


@dataclass(frozen=True, slots=True)
class Discard:
    """Bytes ``[start, end)`` of the stream (offsets since the deframer began) thrown away."""

    start: int
    end: int
    reason: FrameStatus

    @property
    def length(self) -> int:
        return self.end - self.start
