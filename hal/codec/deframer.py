"""Streaming deframer: bytes in arbitrary chunks -> frames, leftover and discarded ranges.

Written once over a backend's ``frame_decode`` (C or Python), so both backends share the
streaming logic and differ only where they should: decoding one frame. It never raises on
any input and never loses a good frame after garbage: a delimiter always ends whatever
came before it, so the next good frame starts clean. Memory is bounded: a run with no
delimiter longer than ``MAX_ENCODED`` is dropped as OVERSIZE while it streams in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .frame_format import MAX_ENCODED, Discard, Frame, FrameStatus

FrameDecoder = Callable[[bytes], tuple[FrameStatus, Frame | None]]


@dataclass(slots=True)
class DeframeResult:
    """What one ``feed`` produced. ``leftover`` is the incomplete frame still buffered."""

    frames: list[Frame] = field(default_factory=list)
    discarded: list[Discard] = field(default_factory=list)
    leftover: bytes = b""


class Deframer:
    """Feed byte chunks; get back complete frames and what was thrown away, and why."""

    def __init__(self, decode: FrameDecoder, *, max_encoded: int = MAX_ENCODED) -> None:
        self._decode = decode
        self._max = max_encoded
        self._pending = bytearray()
        self._pending_start = 0  # stream offset of the first pending byte
        self._oversize = False  # dropping an over-long run until the next delimiter
        self._offset = 0  # stream offset of the next byte fed
        self.frames_ok = 0
        self.discards: dict[FrameStatus, int] = {}

    @property
    def pending(self) -> bytes:
        """Bytes of an incomplete frame waiting for their delimiter."""
        return bytes(self._pending)

    @property
    def offset(self) -> int:
        """Bytes fed so far."""
        return self._offset

    def reset(self) -> None:
        """Forget any partial frame (e.g. after a link reset); offsets keep counting."""
        self._pending.clear()
        self._oversize = False
        self._pending_start = self._offset

    def feed(self, data: bytes | bytearray | memoryview) -> DeframeResult:
        result = DeframeResult()
        parts = bytes(data).split(b"\x00")
        position = self._offset
        for index, part in enumerate(parts):
            self._extend(part, position)
            position += len(part)
            if index < len(parts) - 1:  # a delimiter followed this part
                self._complete(position, result)
                position += 1
        self._offset = position
        result.leftover = bytes(self._pending)
        return result

    def _extend(self, part: bytes, position: int) -> None:
        if not self._pending and not self._oversize:
            self._pending_start = position
        if self._oversize:
            return
        self._pending += part
        if len(self._pending) > self._max:
            self._oversize = True
            self._pending.clear()

    def _complete(self, end: int, result: DeframeResult) -> None:
        """A delimiter at stream offset ``end`` closes the pending run."""
        start = self._pending_start
        if self._oversize:
            self._discard(result, start, end, FrameStatus.OVERSIZE)
        elif self._pending:
            status, frame = self._decode(bytes(self._pending))
            if frame is not None:
                result.frames.append(frame)
                self.frames_ok += 1
            else:
                self._discard(result, start, end, status)
        self._pending.clear()
        self._oversize = False
        self._pending_start = end + 1

    def _discard(self, result: DeframeResult, start: int, end: int, reason: FrameStatus) -> None:
        result.discarded.append(Discard(start, end, reason))
        self.discards[reason] = self.discards.get(reason, 0) + 1
