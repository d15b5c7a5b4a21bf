"""The C codec behind the same functions as ``_reference``. Imports fail if it is not built.

Arguments arrive validated (``hal.codec`` checks them); this module only moves bytes.
Buffers are allocated per call (no shared scratch), so it is safe from several threads.
"""

from __future__ import annotations

import numpy as np

from hal.errors import CobsError

from ._ccodec import ffi, lib  # type: ignore[import-not-found]
from .frame_format import HEADER_LEN, MIN_BODY, Frame, FrameStatus
from .hmatrix import SecdedCode, SecdedStatus

NAME = "c"

_alloc = ffi.new_allocator(should_clear_after_alloc=False)
_STATUS = tuple(FrameStatus)
_U8 = "uint8_t[]"


def built_hash() -> str:
    return ffi.string(lib.ohc_source_hash()).decode()


def crc16(data: bytes, crc: int) -> int:
    return lib.ohc_crc16(ffi.from_buffer(_U8, data), len(data), crc)


def cobs_encode(data: bytes) -> bytes:
    n = len(data)
    out = _alloc(_U8, n + n // 254 + 1)
    m = lib.ohc_cobs_encode(ffi.from_buffer(_U8, data), n, out)
    return ffi.buffer(out, m)[:]


def cobs_decode(data: bytes) -> bytes:
    n = len(data)
    out = _alloc(_U8, n or 1)
    m = lib.ohc_cobs_decode(ffi.from_buffer(_U8, data), n, out)
    if m < 0:
        pos = -m - 1
        raise CobsError(f"COBS: invalid byte at offset {pos}", data=bytes(data), position=pos)
    return ffi.buffer(out, m)[:]


def frame_encode(version: int, seq: int, cmd: int, payload: bytes) -> bytes:
    n = len(payload)
    out = _alloc(_U8, lib.ohc_frame_max_len(n))
    m = lib.ohc_frame_encode(version, seq, cmd, ffi.from_buffer(_U8, payload), n, out)
    return ffi.buffer(out, m)[:]


def frame_decode(encoded: bytes) -> tuple[FrameStatus, Frame | None]:
    n = len(encoded)
    body = _alloc(_U8, n or 1)
    body_len = _alloc("size_t *")
    status = lib.ohc_frame_decode(ffi.from_buffer(_U8, encoded), n, body, body_len)
    if status:
        return _STATUS[status], None
    m = body_len[0]
    return FrameStatus.OK, Frame(
        body[1], body[2], ffi.buffer(body + HEADER_LEN, m - MIN_BODY)[:], body[0]
    )


# --- SECDED ---------------------------------------------------------------------------
_DTYPES = {32: (np.uint32, "uint32_t[]"), 64: (np.uint64, "uint64_t[]")}
_ENCODE = {32: lib.ohc_secded32_encode, 64: lib.ohc_secded64_encode}
_DECODE = {32: lib.ohc_secded32_decode, 64: lib.ohc_secded64_decode}


def secded_encode_array(code: SecdedCode, data: np.ndarray) -> np.ndarray:
    _, ctype = _DTYPES[code.k]
    check = np.empty(data.shape, dtype=np.uint8)
    _ENCODE[code.k](
        ffi.from_buffer(ctype, data),
        ffi.from_buffer(_U8, check, require_writable=True),
        data.size,
    )
    return check


def secded_decode_array(
    code: SecdedCode, data: np.ndarray, check: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    dtype, ctype = _DTYPES[code.k]
    out = np.empty(data.shape, dtype=dtype)
    status = np.empty(data.shape, dtype=np.uint8)
    _DECODE[code.k](
        ffi.from_buffer(ctype, data),
        ffi.from_buffer(_U8, check),
        ffi.from_buffer(ctype, out, require_writable=True),
        ffi.from_buffer(_U8, status, require_writable=True),
        data.size,
    )
    return out, status


def secded_encode(code: SecdedCode, data: int) -> int:
    dtype, _ = _DTYPES[code.k]
    check = secded_encode_array(code, np.array([data], dtype=dtype))
    return data | int(check[0]) << code.k


def secded_decode(code: SecdedCode, codeword: int) -> tuple[int, SecdedStatus]:
    dtype, _ = _DTYPES[code.k]
    data = np.array([codeword & ((1 << code.k) - 1)], dtype=dtype)
    check = np.array([codeword >> code.k], dtype=np.uint8)
    out, status = secded_decode_array(code, data, check)
    return int(out[0]), SecdedStatus(int(status[0]))
