"""The C codec behind the same functions as ``_reference``. Imports fail if it is not built.

Arguments arrive validated (``hal.codec`` checks them); this module only moves bytes.
Buffers are allocated per call (no shared scratch), so it is safe from several threads.
"""

from __future__ import annotations

import threading

import numpy as np

from hal.errors import CobsError

from ._ccodec import ffi, lib  # type: ignore[import-not-found]
from .frame_format import CRC_LEN, HEADER_LEN, Frame, FrameStatus
from .hmatrix import SecdedCode, SecdedStatus

NAME = "c"

_alloc = ffi.new_allocator(should_clear_after_alloc=False)
_STATUS = tuple(FrameStatus)
_OK = FrameStatus.OK
_new_tuple = tuple.__new__  # Frame(...) without the named tuple's Python-level __new__
_U8 = "uint8_t[]"
_SCRATCH = 4096  # reused per thread for anything a frame can need (MAX_WIRE is 265)
_MAX_SEGS = 1024  # segments per C call; longer chunks take several calls
_local = threading.local()


class _Scratch:
    """One thread's reusable buffers (so a call allocates nothing in the common case)."""

    def __init__(self) -> None:
        self.array = _alloc("char[]", _SCRATCH)  # owns the memory
        self.out = ffi.cast("char *", self.array)  # unpack from a pointer is faster
        self.bodies = _alloc("char[]", _SCRATCH)
        self.segs = _alloc("long[]", 5 * _MAX_SEGS)
        self.consumed = _alloc("size_t *")


def _scratch() -> _Scratch:
    try:
        return _local.scratch
    except AttributeError:
        _local.scratch = _Scratch()
        return _local.scratch


def _out(n: int):
    """An output buffer of at least ``n`` bytes: this thread's scratch when it fits."""
    if n > _SCRATCH:
        return _alloc("char[]", n)
    try:
        return _local.scratch.out
    except AttributeError:
        return _scratch().out


def _in(data):
    """bytes pass to ``const char *`` without a copy; other buffers through from_buffer."""
    return data if type(data) is bytes else ffi.from_buffer(data)


def built_hash() -> str:
    return ffi.string(lib.ohc_source_hash()).decode()


def crc16(data: bytes, crc: int) -> int:
    return lib.ohc_crc16(_in(data), len(data), crc)


def cobs_encode(data: bytes) -> bytes:
    n = len(data)
    out = _out(n + n // 254 + 1)
    return ffi.unpack(out, lib.ohc_cobs_encode(_in(data), n, out))


def cobs_decode(data: bytes) -> bytes:
    n = len(data)
    out = _out(n)
    m = lib.ohc_cobs_decode(_in(data), n, out)
    if m < 0:
        pos = -m - 1
        raise CobsError(f"COBS: invalid byte at offset {pos}", data=bytes(data), position=pos)
    return ffi.unpack(out, m)


def frame_encode(version: int, seq: int, cmd: int, payload: bytes) -> bytes:
    # A frame (<= MAX_WIRE bytes) always fits this thread's scratch.
    try:
        out = _local.scratch.out
    except AttributeError:
        out = _scratch().out
    if type(payload) is not bytes:
        payload = ffi.from_buffer(payload)
    return ffi.unpack(out, lib.ohc_frame_encode(version, seq, cmd, payload, len(payload), out))


def frame_decode(encoded: bytes) -> tuple[FrameStatus, Frame | None]:
    body = _out(len(encoded))
    m = lib.ohc_frame_decode(_in(encoded), len(encoded), body)
    if m < 0:
        return _STATUS[-m], None
    raw = ffi.unpack(body, m)
    return _OK, _new_tuple(Frame, (raw[1], raw[2], raw[HEADER_LEN:-CRC_LEN], raw[0]))


def deframe_segments(buf: bytes, max_encoded: int) -> tuple[list, list, int]:
    """As ``_reference.deframe_segments``, with the scan and every decode in C."""
    n = len(buf)
    scratch = _scratch()
    bodies = scratch.bodies if n <= _SCRATCH else _alloc("char[]", n)
    segs, consumed = scratch.segs, scratch.consumed
    src = ffi.from_buffer(buf)
    frames: list = []
    discarded: list = []
    base = 0
    while True:
        count = lib.ohc_deframe(
            src + base, n - base, max_encoded, bodies, segs, _MAX_SEGS, consumed
        )
        if count:
            vals = ffi.unpack(segs, 5 * count)
            raw = ffi.unpack(bodies, vals[-2] + vals[-1])  # bodies lie back to back
            add_frame, new, frame_type = frames.append, _new_tuple, Frame  # hot loop: locals
            for k in range(0, 5 * count, 5):
                status = vals[k + 2]
                if status:
                    discarded.append((base + vals[k], base + vals[k + 1], _STATUS[status]))
                else:
                    off = vals[k + 3]
                    end = off + vals[k + 4] - CRC_LEN
                    add_frame(
                        new(
                            frame_type,
                            (raw[off + 1], raw[off + 2], raw[off + HEADER_LEN : end], raw[off]),
                        )
                    )
        base += consumed[0]
        if count < _MAX_SEGS or consumed[0] == 0:
            return frames, discarded, base


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
