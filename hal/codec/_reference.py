"""Pure-Python reference of the codec: the test oracle, and the fallback with no C compiler.

Written to be obviously right, not fast. Functions here take already-validated arguments;
``hal.codec`` checks types and ranges once, in front of both backends.
"""

from __future__ import annotations

import numpy as np

from orbithil.hal.errors import CobsError

from .frame_format import (
    CRC16_INIT,
    CRC16_POLY,
    FRAME_VERSION,
    HEADER_LEN,
    MIN_BODY,
    Frame,
    FrameStatus,
)
from .hmatrix import (
    SYNDROME_CHECK_BIT,
    SYNDROME_OK,
    SecdedCode,
    SecdedStatus,
)

NAME = "python"


def _crc16_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ CRC16_POLY) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return tuple(table)


_CRC16_TABLE = _crc16_table()


def crc16(data: bytes, crc: int = CRC16_INIT) -> int:
    """CRC-16/CCITT-FALSE of ``data``, continuing from ``crc``."""
    table = _CRC16_TABLE
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ table[(crc >> 8) ^ byte]
    return crc


def cobs_encode(data: bytes) -> bytes:
    """COBS (Cheshire & Baker, 1999): no 0x00 in the output; no delimiter added.

    The shortest encoding, byte for byte the same as the ``cobs`` package: input that ends
    exactly on a full 254-byte group gets no trailing empty group.
    """
    out = bytearray()
    blocks = bytes(data).split(b"\x00")
    last = len(blocks) - 1
    for index, block in enumerate(blocks):
        # A run of 254 non-zero bytes is a full group, code 0xFF, which implies no zero.
        while len(block) >= 254:
            out.append(0xFF)
            out += block[:254]
            block = block[254:]
            if not block and index == last:
                return bytes(out)
        out.append(len(block) + 1)
        out += block
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    """Inverse of cobs_encode; raises CobsError at the first byte that cannot be COBS."""
    data = bytes(data)
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        code = data[i]
        if code == 0:
            raise CobsError(f"COBS: zero byte at offset {i}", data=data, position=i)
        end = i + code
        if end > n:
            raise CobsError(
                f"COBS: code byte {code} at offset {i} runs past the end ({n} bytes)",
                data=data,
                position=i,
            )
        group = data[i + 1 : end]
        zero = group.find(0)
        if zero >= 0:
            pos = i + 1 + zero
            raise CobsError(f"COBS: zero byte at offset {pos}", data=data, position=pos)
        out += group
        i = end
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)


def frame_encode(version: int, seq: int, cmd: int, payload: bytes) -> bytes:
    """``00 | COBS(version seq cmd len payload crc) | 00``."""
    body = bytes((version, seq, cmd, len(payload))) + bytes(payload)
    crc = crc16(body)
    return b"\x00" + cobs_encode(body + bytes((crc >> 8, crc & 0xFF))) + b"\x00"


def frame_decode(encoded: bytes) -> tuple[FrameStatus, Frame | None]:
    """Decode the bytes between two delimiters; never raises."""
    try:
        body = cobs_decode(encoded)
    except CobsError:
        return FrameStatus.COBS, None
    if len(body) < MIN_BODY:
        return FrameStatus.BAD_LENGTH, None
    if crc16(body) != 0:  # the CRC over body+CRC is 0 for a good frame
        return FrameStatus.BAD_CRC, None
    if body[0] != FRAME_VERSION:
        return FrameStatus.BAD_VERSION, None
    if body[3] != len(body) - MIN_BODY:
        return FrameStatus.BAD_LENGTH, None
    return FrameStatus.OK, Frame(body[1], body[2], body[HEADER_LEN:-2], body[0])


Discarded = tuple[int, int, FrameStatus]  # start, end, reason


def deframe_segments(buf: bytes, max_encoded: int) -> tuple[list[Frame], list[Discarded], int]:
    """The good frames and the rejected runs between delimiters in ``buf``, in order, and
    the offset just past the last delimiter (what follows it is an incomplete frame)."""
    frames: list[Frame] = []
    discarded: list[Discarded] = []
    pos = 0
    while (end := buf.find(0, pos)) >= 0:
        if end - pos > max_encoded:
            discarded.append((pos, end, FrameStatus.OVERSIZE))
        elif end > pos:
            status, frame = frame_decode(buf[pos:end])
            if frame is None:
                discarded.append((pos, end, status))
            else:
                frames.append(frame)
        pos = end + 1
    return frames, discarded, pos


# --- SECDED ---------------------------------------------------------------------------


def secded_encode(code: SecdedCode, data: int) -> int:
    check = 0
    for j, mask in enumerate(code.row_masks):
        check |= ((data & mask).bit_count() & 1) << j
    return data | check << code.k


def secded_decode(code: SecdedCode, codeword: int) -> tuple[int, SecdedStatus]:
    data = codeword & ((1 << code.k) - 1)
    syndrome = (secded_encode(code, data) ^ codeword) >> code.k
    action = code.syndrome_table[syndrome]
    if action == SYNDROME_OK:
        return data, SecdedStatus.OK
    if action == SYNDROME_CHECK_BIT:
        return data, SecdedStatus.CORRECTED
    if action < code.k:
        return data ^ (1 << action), SecdedStatus.CORRECTED
    return data, SecdedStatus.UNCORRECTABLE


def _check_bits(code: SecdedCode, data: np.ndarray) -> np.ndarray:
    check = np.zeros(data.shape, dtype=np.uint8)
    for j, mask in enumerate(code.row_masks):
        parity = np.bitwise_count(data & data.dtype.type(mask)) & 1
        check |= (parity << j).astype(np.uint8)
    return check


def secded_encode_array(code: SecdedCode, data: np.ndarray) -> np.ndarray:
    return _check_bits(code, data)


def secded_decode_array(
    code: SecdedCode, data: np.ndarray, check: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    table = np.asarray(code.syndrome_table, dtype=np.uint8)
    action = table[_check_bits(code, data) ^ check]
    is_data = action < code.k
    flip = np.left_shift(data.dtype.type(1), np.where(is_data, action, 0).astype(data.dtype))
    corrected = np.where(is_data, data ^ flip, data)
    status = np.full(data.shape, SecdedStatus.UNCORRECTABLE, dtype=np.uint8)
    status[action == SYNDROME_OK] = SecdedStatus.OK
    status[is_data | (action == SYNDROME_CHECK_BIT)] = SecdedStatus.CORRECTED
    return corrected, status
