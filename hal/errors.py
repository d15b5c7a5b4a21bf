"""The one exception tree of the HAL: every failure below the flight stack is a HalError.

Each exception carries the data needed to act on it (the bytes, the reason, the position),
not only a message.
"""

from __future__ import annotations

from orbithil.errors import OrbithilError


class HalError(OrbithilError):
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


class ArgumentError(HalError, ValueError):
    """An argument of a Chip call that the chip cannot take (a field too wide for its
    frame, a word or bit the chip does not have); the message says what is valid. Nothing
    was sent."""


class NotInBuild(HalError):
    """The chip was built without what the call needs (INJECT=0, as the flight bitstream,
    has no INJECT command); ``feature`` names it. Nothing was sent."""

    def __init__(self, message: str, *, feature: str) -> None:
        super().__init__(message)
        self.feature = feature


class LinkTimeout(HalError):
    """No answer within the deadline (after every retry); ``attempts`` and ``waited_s``."""

    def __init__(self, message: str, *, cmd: int, seq: int, attempts: int, waited_s: float) -> None:
        super().__init__(message)
        self.cmd = cmd
        self.seq = seq
        self.attempts = attempts
        self.waited_s = waited_s


class NakError(HalError):
    """The chip refused a command: ``reason`` (a NakReason number) and the answer frame."""

    def __init__(self, message: str, *, reason: int, frame) -> None:
        super().__init__(message)
        self.reason = reason
        self.frame = frame


class ProtocolError(HalError):
    """An answer that does not fit its request (wrong code or length): a chip or HAL bug."""


class ChipFault(HalError):
    """The chip reported a fault it could not mask (job error, uncorrectable data);
    ``flags`` holds the STATUS bits and ``detail`` what was being done."""

    def __init__(self, message: str, *, flags: int = 0, detail: str = "") -> None:
        super().__init__(message)
        self.flags = flags
        self.detail = detail


class BackendError(HalError):
    """The backend itself failed (a simulator crashed or could not start); ``log_tail``
    holds the last lines of its log."""

    def __init__(self, message: str, *, log_tail: str = "") -> None:
        super().__init__(
            f"{message}\n--- backend log (last lines) ---\n{log_tail}" if log_tail else message
        )
        self.log_tail = log_tail
