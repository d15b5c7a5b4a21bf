"""Argument checks for the codec's public functions, in one place for both backends.

A wrong type raises TypeError and a value out of range ValueError; each message says what
was expected and how to get it.
"""

from __future__ import annotations

import numpy as np

from .hmatrix import SecdedCode


def as_bytes(value: object, name: str) -> bytes | bytearray | memoryview:
    if isinstance(value, bytes | bytearray):
        return value
    if isinstance(value, str):
        raise TypeError(f"{name} must be bytes-like, got str; encode it first, e.g. s.encode()")
    try:
        view = memoryview(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"{name} must be bytes-like (bytes, bytearray, memoryview), got {type(value).__name__}"
        ) from None
    if view.itemsize != 1 or not view.c_contiguous:
        raise TypeError(
            f"{name} must be a contiguous buffer of bytes; got itemsize {view.itemsize}, "
            f"format {view.format!r}; use bytes(...) or .view(np.uint8)"
        )
    return view.cast("B") if view.ndim != 1 or view.format != "B" else view


def as_uint(value: object, name: str, bits: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)
    if not 0 <= value < 1 << bits:
        raise ValueError(f"{name} must be in 0..{(1 << bits) - 1}, got {value}")
    return value


def as_words(value: object, name: str, code: SecdedCode) -> np.ndarray:
    """An array of ``code.k``-bit unsigned words, contiguous, in the code's dtype."""
    dtype = np.uint32 if code.k == 32 else np.uint64
    array = np.asarray(value)
    if array.dtype.kind not in "ui":
        raise TypeError(
            f"{name} must be an integer array (e.g. dtype {np.dtype(dtype).name}), "
            f"got dtype {array.dtype}"
        )
    if array.size and array.dtype != dtype:
        if array.dtype.kind == "i" and int(array.min()) < 0:
            raise ValueError(f"{name} holds negative values; words are unsigned {code.k}-bit")
        if int(array.max()) >= 1 << code.k:
            raise ValueError(f"{name} holds values wider than {code.k} bits")
    return np.ascontiguousarray(array, dtype=dtype)
