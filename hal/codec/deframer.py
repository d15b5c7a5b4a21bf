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

With ``salvage`` (a host's link; never a chip's receiver, which has no such logic) a run
that does not decode is given a second look for damaged framing (``hal.codec.salvage``):
a damaged delimiter, a byte damaged into 0x00 that split the frame in two runs (the run
before is joined to it, and is not reported discarded when it came in the same ``feed``),
or a damaged COBS code byte; and a run that goes on past the length its header announces
(its closing delimiter was damaged: ``overdue``) is cut there at once, the bytes after it up
to the next delimiter dropped (reported when that delimiter comes, if there are any).
Salvaged frames are listed after the others of the same ``feed``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ._args import as_bytes
from .frame_format import MAX_ENCODED, Discard, Frame, FrameStatus, run_overdue
from .salvage import Salvager

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
        salvage: Salvager | None = None,
    ) -> None:
        self._segments = segments
        self._repair = repair
        self._salvage = salvage
        self._max = max_encoded
        self._pending = b""
        self._pending_start = 0  # stream offset of the first pending (or dropped) byte
        # Dropping bytes until the next delimiter, and the reason they get when they are
        # reported: OVERSIZE (an over-long run) or COBS (what follows a salvaged frame
        # whose closing delimiter was damaged); None while not dropping.
        self._dropping: FrameStatus | None = None
        self._offset = 0  # stream offset of the next byte fed
        # The last run that did not decode: (stream offset of its closing delimiter, bytes)
        self._bad_run: tuple[int, bytes] | None = None
        self._last_delimiter = True  # the last byte fed was a delimiter (or none came)
        self._opened = False  # ... and it ended an empty run
        self.frames_ok = 0
        self.frames_fec = 0  # version-2 frames taken (a subset of frames_ok)
        self.frames_salvaged = 0  # frames taken from damaged framing (a subset of frames_ok)
        self.bytes_corrected = 0  # bytes the FEC repaired
        self.discards: dict[FrameStatus, int] = {}

    @property
    def pending(self) -> bytes:
        """Bytes of an incomplete frame waiting for their delimiter."""
        return self._pending

    @property
    def opened(self) -> bool:
        """The last byte fed was a delimiter after another one: a sender that starts each
        frame with a delimiter (the chip does) has begun a frame, though none of its bytes
        has come yet."""
        return self._opened

    @property
    def overdue(self) -> bool:
        """The pending bytes are more than the frame their header announces: its closing
        delimiter was lost (or the header damaged); only ``reset`` or a delimiter ends it."""
        return bool(self._pending) and self._dropping is None and run_overdue(self._pending)

    @property
    def offset(self) -> int:
        """Bytes fed so far."""
        return self._offset

    def reset(self) -> None:
        """Forget any partial frame (e.g. after a link reset); offsets keep counting."""
        self._pending = b""
        self._dropping = None
        self._pending_start = self._offset
        self._bad_run = None
        self._opened = False
        self._last_delimiter = True

    def feed(self, data: bytes | bytearray | memoryview) -> DeframeResult:
        result = DeframeResult()
        data = bytes(as_bytes(data, "data"))
        if data:
            before = data[-2] == 0 if len(data) > 1 else self._last_delimiter
            self._last_delimiter = data[-1] == 0
            self._opened = self._last_delimiter and before
        start_of_data = self._offset
        self._offset += len(data)
        if self._dropping is not None:
            end = data.find(0)
            if end < 0:
                return result
            if self._pending_start < start_of_data + end:
                self._discard(result, self._pending_start, start_of_data + end, self._dropping)
            self._dropping = None
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
            if self._salvage is not None and reason != FrameStatus.OVERSIZE:
                run = buf[start:end]
                previous = self._bad_run
                joinable = previous is not None and previous[0] + 1 == base + start
                salvaged = self._salvage.run(run, previous[1] if joinable else None)
                if salvaged is not None:
                    self._took_salvaged(frames, *salvaged[:2])
                    if (
                        salvaged[2]
                        and result.discarded
                        and result.discarded[-1].end + 1 == (base + start)
                    ):  # the first half came in this feed: it was no discard after all
                        dropped = result.discarded.pop()
                        self.discards[dropped.reason] -= 1
                    self._bad_run = None
                    continue
                self._bad_run = (base + end, run)
            self._discard(result, base + start, base + end, reason)
        self._pending = buf[consumed:]
        self._pending_start = base + consumed
        if len(self._pending) > self._max:
            self._dropping = FrameStatus.OVERSIZE
            self._pending = b""
        elif self._salvage is not None and self.overdue:
            salvaged = self._salvage.overdue(self._pending)
            if salvaged is not None:
                self._took_salvaged(frames, *salvaged[:2])
                # the next byte was the damaged delimiter; drop what follows it
                self._pending_start += salvaged[2] + 1
                self._pending = b""
                self._dropping = FrameStatus.COBS
        result.leftover = self._pending
        return result

    def _took_salvaged(self, frames: list[Frame], frame: Frame, corrected: int) -> None:
        frames.append(frame)
        self.frames_ok += 1
        self.frames_salvaged += 1
        self.frames_fec += frame.version != 1
        self.bytes_corrected += corrected

    def _discard(self, result: DeframeResult, start: int, end: int, reason: FrameStatus) -> None:
        result.discarded.append(Discard(start, end, reason))
        self.discards[reason] = self.discards.get(reason, 0) + 1
