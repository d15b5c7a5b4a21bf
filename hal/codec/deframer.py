"""Streaming deframer: bytes in arbitrary chunks -> frames, leftover and discarded ranges.

The streaming state (the incomplete frame, over-long runs, stream offsets) is kept here,
once, for both backends; a backend's ``deframe_segments`` finds and decodes the complete
frames in a buffer (in C, the whole chunk in one call). It never raises on any input and
never loses a good frame after garbage: a delimiter always ends whatever came before it,
so the next frame starts clean. Memory is bounded: a run with no delimiter longer than
``MAX_ENCODED`` is dropped as OVERSIZE while it streams in.

Version-2 frames (forward error correction, ``hal.codec.fec``) fail the backends' version-1
checks by design; ``repair`` gets each such run and turns it into a frame when it is a
version-2 frame, correcting a damaged byte in each of its two interleaved codewords. A
repaired frame is listed after the version-1 frames of the same ``feed`` (the protocol has
one frame in flight at a time).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ._args import as_bytes
from .frame_format import MAX_ENCODED, Discard, Frame, FrameStatus, run_overdue

# (buffer, max_encoded) -> (frames, [(start, end, reason)], offset past the last delimiter)
SegmentDecoder = Callable[[bytes, int], tuple[list, list, int]]
# the bytes between two delimiters -> (frame, bytes corrected), or None
Repairer = Callable[[bytes], tuple[Frame, int] | None]
# Reasons a version-2 frame (good or repairable) gets from the version-1 checks.
REPAIRABLE = frozenset({FrameStatus.BAD_LENGTH, FrameStatus.BAD_CRC, FrameStatus.BAD_VERSION})


@dataclass(slots=True)
class DeframeResult:
    """What one ``feed`` produced. ``leftover`` is the incomplete frame still buffered."""

    frames: list[Frame] = field(default_factory=list)
    discarded: list[Discard] = field(default_factory=list)
    leftover: bytes = b""


class Deframer:
    """Feed byte chunks; get back complete frames and what was thrown away, and why."""

    def __init__(
        self,
        segments: SegmentDecoder,
        *,
        max_encoded: int = MAX_ENCODED,
        repair: Repairer | None = None,
    ) -> None:
        self._segments = segments
        self._repair = repair
        self._max = max_encoded
        self._pending = b""
        self._pending_start = 0  # stream offset of the first pending (or dropped) byte
        self._oversize = False  # dropping an over-long run until the next delimiter
        self._offset = 0  # stream offset of the next byte fed
        self.frames_ok = 0
        self.frames_fec = 0  # version-2 frames taken (a subset of frames_ok)
        self.bytes_corrected = 0  # bytes the FEC repaired
        self.discards: dict[FrameStatus, int] = {}

    @property
    def pending(self) -> bytes:
        """Bytes of an incomplete frame waiting for their delimiter."""
        return self._pending

    @property
    def overdue(self) -> bool:
        """The pending bytes are more than the frame their header announces: its closing
        delimiter was lost (or the header damaged); only ``reset`` or a delimiter ends it."""
        return bool(self._pending) and not self._oversize and run_overdue(self._pending)

    @property
    def offset(self) -> int:
        """Bytes fed so far."""
        return self._offset

    def reset(self) -> None:
        """Forget any partial frame (e.g. after a link reset); offsets keep counting."""
        self._pending = b""
        self._oversize = False
        self._pending_start = self._offset

    def feed(self, data: bytes | bytearray | memoryview) -> DeframeResult:
        result = DeframeResult()
        data = bytes(as_bytes(data, "data"))
        start_of_data = self._offset
        self._offset += len(data)
        if self._oversize:
            end = data.find(0)
            if end < 0:
                return result
            self._discard(result, self._pending_start, start_of_data + end, FrameStatus.OVERSIZE)
            self._oversize = False
            data = data[end + 1 :]
            start_of_data += end + 1
            self._pending_start = start_of_data
        buf = self._pending + data if self._pending else data
        base = self._pending_start if self._pending else start_of_data
        frames, discarded, consumed = self._segments(buf, self._max)
        result.frames = frames
        self.frames_ok += len(frames)
        for start, end, reason in discarded:
            if self._repair is not None and reason in REPAIRABLE:
                repaired = self._repair(buf[start:end])
                if repaired is not None:
                    frames.append(repaired[0])
                    self.frames_ok += 1
                    self.frames_fec += 1
                    self.bytes_corrected += repaired[1]
                    continue
            self._discard(result, base + start, base + end, reason)
        self._pending = buf[consumed:]
        self._pending_start = base + consumed
        if len(self._pending) > self._max:
            self._oversize = True
            self._pending = b""
        result.leftover = self._pending
        return result

    def _discard(self, result: DeframeResult, start: int, end: int, reason: FrameStatus) -> None:
        result.discarded.append(Discard(start, end, reason))
        self.discards[reason] = self.discards.get(reason, 0) + 1
