"""The host-link codec: COBS, CRC-16, frames, a streaming deframer and Hsiao SECDED.

Two backends give identical results: C through cffi (``codec.c``, built by
``python -m orbithil.hal.codec.build``) and the pure-Python reference (``_reference``), which is the
test oracle and the fallback when no compiler is present. ``ORBITHIL_CODEC`` picks one
(``auto`` by default: C when built and current, else Python with a warning).

Every public function checks its arguments here, once, in front of both backends: a wrong
type raises ``TypeError`` and a value out of range ``ValueError``, each saying what was
expected. Decoding failures raise ``CobsError`` / ``FrameError`` (``hal.errors``) carrying
the bytes and the reason; the deframer never raises.
"""

from __future__ import annotations

import functools
import warnings
from types import ModuleType

import numpy as np

from orbithil.hal.errors import CobsError, FrameError
from orbithil.settings import Settings

from . import _reference, fec, salvage
from ._args import as_bytes as _as_bytes
from ._args import as_uint as _as_uint
from ._args import as_words as _as_words
from .deframer import Deframer, DeframeResult
from .frame_format import (
    CRC16_INIT,
    FEC_VERSION,
    FRAME_VERSION,
    MAX_ENCODED,
    MAX_PAYLOAD,
    MAX_PAYLOAD_FEC,
    MAX_WIRE,
    Discard,
    Frame,
    FrameStatus,
)
from .hmatrix import SECDED_39_32, SECDED_72_64, SecdedCode, SecdedStatus, code_for

__all__ = [
    "FEC_VERSION",
    "FRAME_VERSION",
    "MAX_ENCODED",
    "MAX_PAYLOAD",
    "MAX_PAYLOAD_FEC",
    "MAX_WIRE",
    "SECDED_39_32",
    "SECDED_72_64",
    "CobsError",
    "DeframeResult",
    "Deframer",
    "Discard",
    "Frame",
    "FrameError",
    "FrameStatus",
    "SecdedCode",
    "SecdedStatus",
    "available_backends",
    "backend",
    "c_status",
    "cobs_decode",
    "cobs_encode",
    "crc16",
    "deframe",
    "frame_decode",
    "frame_encode",
    "new_deframer",
    "secded_decode",
    "secded_decode_array",
    "secded_encode",
    "secded_encode_array",
]


# --- backend selection (lazy: importing hal.codec loads nothing and warns about nothing) ---
@functools.cache
def _load_c() -> tuple[ModuleType | None, str]:
    """The C backend, or None, and a sentence on its state. Builds it into the cache on
    first use when it is missing (``build.ensure_built``)."""
    from .build import ensure_built, source_hash

    try:
        ensure_built()
        from . import _cbackend
    except ImportError as exc:
        return None, f"not available: {exc}"
    if _cbackend.built_hash() != source_hash():
        rebuild = "python -m orbithil.hal.codec.build"
        return None, f"stale (its sources changed since it was built); run '{rebuild}'"
    return _cbackend, "built and current"


def c_status() -> str:
    """Whether the C codec is built and current, in words (for doctor and error messages)."""
    return _load_c()[1]


def available_backends() -> dict[str, ModuleType]:
    """Every backend that can run here, by name (``python`` always; ``c`` when built)."""
    found: dict[str, ModuleType] = {"python": _reference}
    c_backend, _ = _load_c()
    if c_backend is not None:
        found["c"] = c_backend
    return found


def _select(choice: str) -> ModuleType:
    if choice == "python":
        return _reference
    c_backend, status = _load_c()
    if c_backend is not None:
        return c_backend
    if choice == "c":
        raise ImportError(f"ORBITHIL_CODEC=c but the C codec is {status}")
    warnings.warn(
        f"the C codec is {status}; using the pure-Python codec, which is much slower",
        RuntimeWarning,
        stacklevel=4,
    )
    return _reference


class _Unselected:
    """Stands in for the backend until first use, then puts the chosen one in its place."""

    def __getattr__(self, name: str):
        global _impl
        _impl = _select(Settings.from_env().codec)
        return getattr(_impl, name)


_impl: ModuleType | _Unselected = _Unselected()


def backend() -> str:
    """Name of the backend in use: ``"c"`` or ``"python"``."""
    return _impl.NAME


# --- public functions -------------------------------------------------------------------
def crc16(data: bytes, crc: int = CRC16_INIT) -> int:
    """CRC-16/CCITT-FALSE of ``data``, continuing from ``crc`` (0xFFFF to start)."""
    return _impl.crc16(_as_bytes(data, "data"), _as_uint(crc, "crc", 16))


def cobs_encode(data: bytes) -> bytes:
    """COBS-encode ``data`` (no delimiter added); the output holds no 0x00 byte."""
    return _impl.cobs_encode(_as_bytes(data, "data"))


def cobs_decode(data: bytes) -> bytes:
    """Decode COBS bytes (no delimiter); raises ``CobsError`` with the bad offset."""
    return _impl.cobs_decode(_as_bytes(data, "data"))


def frame_encode(
    seq: int, cmd: int, payload: bytes = b"", *, version: int = FRAME_VERSION
) -> bytes:
    """One frame as sent on the wire: ``00 | COBS(header payload crc) | 00``; with
    ``version=FEC_VERSION`` (2) Reed-Solomon parity follows the CRC (``hal.codec.fec``)."""
    if version == FEC_VERSION:
        payload = fec.check_payload(payload)
        head = bytes((version, _as_uint(seq, "seq", 8), _as_uint(cmd, "cmd", 8), len(payload)))
        body = head + payload
        crc = _impl.crc16(body, CRC16_INIT)
        body += bytes((crc >> 8, crc & 0xFF))
        return b"\x00" + _impl.cobs_encode(body + fec.parity(body)) + b"\x00"
    payload = _as_bytes(payload, "payload")
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(
            f"payload is {len(payload)} bytes; a frame carries at most {MAX_PAYLOAD} — "
            "split it over several commands"
        )
    return _impl.frame_encode(
        _as_uint(version, "version", 8), _as_uint(seq, "seq", 8), _as_uint(cmd, "cmd", 8), payload
    )


def frame_decode(data: bytes) -> Frame:
    """Decode one frame (with or without its delimiters), version 1 or 2 (repairing a
    damaged byte in each interleaved codeword of a version-2 frame); raises ``FrameError``."""
    raw = bytes(_as_bytes(data, "data"))
    inner = raw.strip(b"\x00")
    if 0 in inner:
        raise FrameError(
            "frame_decode takes one frame; these bytes hold several (0x00 inside) — "
            "use Deframer or deframe() for a stream",
            reason=FrameStatus.COBS,
            data=raw,
        )
    if len(inner) > MAX_ENCODED:
        raise FrameError(
            f"{len(inner)} bytes between delimiters; a frame has at most {MAX_ENCODED}",
            reason=FrameStatus.OVERSIZE,
            data=raw,
        )
    status, frame = _impl.frame_decode(inner)
    if frame is None and status != FrameStatus.COBS:
        repaired = _repair(inner)
        frame = repaired[0] if repaired else None
    if frame is None:
        raise FrameError(f"frame rejected: {status.name}", reason=status, data=raw)
    return frame


def new_deframer(*, fec: bool = True, salvage: bool = False) -> Deframer:
    """A streaming deframer on the backend in use; with ``fec`` it takes version-2 frames
    too, repairing damaged ones (``hal.codec.fec``); with ``salvage`` it also takes frames
    whose delimiters or COBS code bytes were damaged (``hal.codec.salvage``: for a host's
    link; a chip's receiver has no such logic)."""
    return Deframer(
        _impl.deframe_segments,
        repair=_repair if fec else None,
        salvage=_salvager(fec) if salvage else None,
    )


def _repair(encoded: bytes) -> tuple[Frame, int] | None:
    return fec.repair(encoded, _impl.cobs_decode, _impl.crc16)


def _decode_run(encoded: bytes, *, fec_too: bool) -> tuple[Frame, int] | None:
    """A frame as a receiver takes one off the line (version 1; version 2 repaired)."""
    status, frame = _impl.frame_decode(encoded)
    if frame is not None:
        return frame, 0
    if fec_too and status != FrameStatus.COBS:
        return _repair(encoded)
    return None


def _salvager(fec_too: bool) -> salvage.Salvager:
    if not fec_too:  # no version-2 frame is taken, so none is searched for
        return salvage.Salvager(lambda run: _decode_run(run, fec_too=False), lambda run: None)
    return salvage.Salvager(
        lambda run: _decode_run(run, fec_too=True),
        lambda run: fec.take_undamaged(run, _impl.cobs_decode, _impl.crc16),
    )


def deframe(data: bytes) -> DeframeResult:
    """Deframe a complete byte string at once (frames, discarded ranges, leftover)."""
    return new_deframer().feed(_as_bytes(data, "data"))


def secded_encode(data: int, *, k: int = 32) -> int:
    """The codeword of a k-bit word: data in bits [k-1:0], check bits above (k = 32 or 64)."""
    code = code_for(k)
    return _impl.secded_encode(code, _as_uint(data, "data", k))


def secded_decode(codeword: int, *, k: int = 32) -> tuple[int, SecdedStatus]:
    """(data, status) of a codeword: one flipped bit corrected, two flagged UNCORRECTABLE."""
    code = code_for(k)
    return _impl.secded_decode(code, _as_uint(codeword, "codeword", code.n))


def secded_encode_array(data: object, *, k: int = 32) -> np.ndarray:
    """Check bits (uint8) for every word of an array; the data is stored beside them."""
    code = code_for(k)
    return _impl.secded_encode_array(code, _as_words(data, "data", code))


def secded_decode_array(
    data: object, check: object, *, k: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """(corrected data, status per word as uint8 SecdedStatus) for arrays of words and checks."""
    code = code_for(k)
    words = _as_words(data, "data", code)
    checks = np.asarray(check)
    if checks.shape != words.shape:
        raise ValueError(
            f"check has shape {checks.shape} but data has {words.shape}; they must match"
        )
    if checks.dtype.kind not in "ui":
        raise TypeError(f"check must be an integer array (dtype uint8), got dtype {checks.dtype}")
    if checks.size and (int(checks.min()) < 0 or int(checks.max()) >= 1 << code.r):
        raise ValueError(f"check values must be in 0..{(1 << code.r) - 1} for k={k}")
    return _impl.secded_decode_array(code, words, np.ascontiguousarray(checks, dtype=np.uint8))
