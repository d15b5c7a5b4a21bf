"""The C codec behind the same functions as ``_reference``. Imports fail if it is not built.

Arguments arrive validated (``hal.codec`` checks them); this module only moves bytes.
Buffers are allocated per call (no shared scratch), so it is safe from several threads.
"""

from __future__ import annotations

import threading
from itertools import repeat
from operator import getitem

import numpy as np

from orbithil.hal.errors import CobsError

from .build import load as _load_extension
from .frame_format import CRC_LEN, HEADER_LEN, Frame, FrameStatus
from .hmatrix import SecdedCode, SecdedStatus

_ext = _load_extension()  # ImportError when not built: hal.codec then uses the reference
ffi, lib = _ext.ffi, _ext.lib

NAME = "c"

_alloc = ffi.new_allocator(should_clear_after_alloc=False)
_STATUS = tuple(FrameStatus)
_OK = FrameStatus.OK
_new_tuple = tuple.__new__  # Frame(...) without the named tuple's Python-level __new__
_U8 = "uint8_t[]"
_SCRATCH = 4096  # reused per thread for anything a frame can need (MAX_WIRE is 265)
_LONG = ffi.sizeof("long")
_LONG_DTYPE = np.dtype(f"i{_LONG}")  # numpy's tolist() reads C longs faster than ffi.unpack
_BIG_KEEP = 4 << 20  # largest output buffer a thread keeps for reuse
_MAX_ITEMS = 1024  # frames (and discards) per C call; longer chunks take several calls
_local = threading.local()


class _Scratch:
    """One thread's reusable buffers (so a call allocates nothing in the common case)."""

    def __init__(self) -> None:
        self.array = _alloc("char[]", _SCRATCH)  # owns the memory
        self.out = ffi.cast("char *", self.array)  # unpack from a pointer is faster
        self.bodies_array = _alloc("char[]", _SCRATCH)
        self.bodies = ffi.cast("char *", self.bodies_array)
        self.fields = _alloc("long[]", 5 * _MAX_ITEMS)
        self.discards = _alloc("long[]", 3 * _MAX_ITEMS)
        self.counts = _alloc("size_t[3]")
        self.big_array, self.big, self.big_size = None, None, 0  # grows up to _BIG_KEEP


def _scratch() -> _Scratch:
    try:
        return _local.scratch
    except AttributeError:
        _local.scratch = _Scratch()
        return _local.scratch


def _out(n: int):
    """(pointer, owner) of an output buffer of at least ``n`` bytes. Keep ``owner``
    referenced while the pointer is in use.

    Up to ``_BIG_KEEP`` bytes the buffer is this thread's, reused: a fresh large block is
    new pages from the kernel, and faulting them in costs more than the coding itself.
    A pointer, not the array, goes to ``ffi.unpack`` (unpacking an array is slower)."""
    try:
        scratch = _local.scratch
    except AttributeError:
        scratch = _scratch()
    if n <= _SCRATCH:
        return scratch.out, None
    if n > _BIG_KEEP:
        owner = _alloc("char[]", n)
        return ffi.cast("char *", owner), owner
    if scratch.big_size < n:
        scratch.big_array = _alloc("char[]", n)
        scratch.big = ffi.cast("char *", scratch.big_array)
        scratch.big_size = n
    return scratch.big, None


def _in(data):
    """bytes pass to ``const char *`` without a copy; other buffers through from_buffer."""
    return data if type(data) is bytes else ffi.from_buffer(data)


def built_hash() -> str:
    return ffi.string(lib.ohc_source_hash()).decode()


def crc16(data: bytes, crc: int) -> int:
    return lib.ohc_crc16(_in(data), len(data), crc)


def cobs_encode(data: bytes) -> bytes:
    n = len(data)
    out, _owner = _out(n + n // 254 + 1)
    return ffi.unpack(out, lib.ohc_cobs_encode(_in(data), n, out))


def cobs_decode(data: bytes) -> bytes:
    n = len(data)
    out, _owner = _out(n)
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
    body, _owner = _out(len(encoded))
    m = lib.ohc_frame_decode(_in(encoded), len(encoded), body)
    if m < 0:
        return _STATUS[-m], None
    raw = ffi.unpack(body, m)
    return _OK, _new_tuple(Frame, (raw[1], raw[2], raw[HEADER_LEN:-CRC_LEN], raw[0]))


def deframe_segments(buf: bytes, max_encoded: int) -> tuple[list, list, int]:
    """As ``_reference.deframe_segments``, with the scan and every decode in C.

    The Frames are assembled by C-level iterators (map, zip, slice) over the fields C wrote:
    no Python bytecode runs per frame.
    """
    n = len(buf)
    scratch = _scratch()
    bodies, _owner = (scratch.bodies, None) if n <= _SCRATCH else _out(n)
    fields, discards, counts = scratch.fields, scratch.discards, scratch.counts
    src = ffi.from_buffer(buf)
    frames: list = []
    discarded: list = []
    base = 0
    while True:
        lib.ohc_deframe(
            src + base, n - base, max_encoded, bodies, fields, discards, _MAX_ITEMS, counts
        )
        n_frames, n_discards, consumed = counts[0], counts[1], counts[2]
        if n_frames:
            f = np.frombuffer(ffi.buffer(fields, 5 * n_frames * _LONG), _LONG_DTYPE).tolist()
            raw = ffi.unpack(bodies, f[-1])
            payloads = map(getitem, repeat(raw), map(slice, f[3::5], f[4::5]))
            frames += map(
                _new_tuple, repeat(Frame), zip(f[0::5], f[1::5], payloads, f[2::5], strict=True)
            )
        if n_discards:
            d = np.frombuffer(ffi.buffer(discards, 3 * n_discards * _LONG), _LONG_DTYPE).tolist()
            discarded += zip(
                [base + x for x in d[0::3]],
                [base + x for x in d[1::3]],
                map(_STATUS.__getitem__, d[2::3]),
                strict=True,
            )
        base += consumed
        if (n_frames < _MAX_ITEMS and n_discards < _MAX_ITEMS) or consumed == 0:
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
