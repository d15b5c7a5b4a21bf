"""The one exception tree of the HAL: every failure below the flight stack is a HalError.

Each exception carries the data needed to act on it (the bytes, the reason, the position),
not only a message.
"""

from __future__ import annotations


class HalError(Exception):
    """Base of every error raised by ``hal``."""


class CobsError(HalError, ValueError):
    """Bytes that are not valid COBS; ``position`` is the offset of the first bad byte."""

    def __init__(self, message: str, *, data: bytes, position: int) -> None:
        super().__init__(message)
        self.data = data
        self.position = position


class FrameError(HalError, ValueError):
    """A frame that failed to decode; ``reason`` is a ``FrameStatus``, ``data`` the raw bytes."""

    def __init__(self, message: str, *, reason: int, data: bytes) -> None:
        super().__init__(message)
        self.reason = reason
        self.data = data
