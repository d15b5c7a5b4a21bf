"""Request/response over a byte stream to the chip: sequence numbers, deadlines, retries.

Works on anything with pyserial's ``write`` / ``read`` / ``timeout`` (a real serial port,
``socket://``, the model, the ``fault://`` wrapper). A request is retried with the *same*
sequence number when no answer comes in time or the chip answers with a frame-level NAK
(its copy was damaged on the way). The chip remembers the last sequence number it
executed and answers a repeat with its stored response, so a retry never executes a
command twice. Garbage and answers to earlier requests are dropped and counted.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import hal.codec
from hal.codec import Frame
from hal.errors import LinkTimeout
from hal.icd import ACK_FLAG, NAK, NakReason

log = logging.getLogger(__name__)

# NAK reasons that mean "your frame arrived damaged": resend it.
RESEND_REASONS = frozenset(
    {
        NakReason.COBS,
        NakReason.BAD_LENGTH,
        NakReason.BAD_CRC,
        NakReason.BAD_VERSION,
        NakReason.OVERSIZE,
        NakReason.OVERRUN,
    }
)


@dataclass
class LinkStats:
    """What the link has done, for telemetry and benchmarks."""

    requests: int = 0
    retries: int = 0
    timeouts: int = 0
    stale_frames: int = 0
    frame_naks: int = 0
    damaged_answers: int = 0
    stalled_answers: int = 0
    overruns: int = 0
    bytes_out: int = 0
    bytes_in: int = 0
    discards: dict = field(default_factory=dict)


class FrameLink:
    """One outstanding request at a time over ``port`` (a pyserial-like object)."""

    def __init__(
        self,
        port,
        *,
        timeout_s: float = 1.0,
        retries: int = 3,
        read_chunk: int = 4096,
        gap_s: float = 0.05,  # silence after half a frame that means "lost delimiter"; long
        # enough for a slow simulator, which delivers a long answer in pieces
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.port = port
        self.timeout_s = timeout_s
        self.retries = retries
        self.read_chunk = read_chunk
        self.seq = 0
        self.stats = LinkStats()
        self.deframer = hal.codec.new_deframer()
        self._pending: list[Frame] = []
        self._damaged = False
        self._last_byte = 0.0
        self.gap_s = gap_s

    def _next_seq(self) -> int:
        self.seq = (self.seq + 1) & 0xFF
        return self.seq

    def _read_frames(self, deadline: float) -> list[Frame]:
        """Frames that arrive before ``deadline`` (at least one read is attempted). Sets
        ``self._damaged`` when something arrived that was not a good frame."""
        self._damaged = False
        if self._pending:
            frames, self._pending = self._pending, []
            return frames
        remaining = deadline - time.monotonic()
        self.port.timeout = max(0.0, min(remaining, 0.05))
        # pyserial's read(n) waits for all n bytes or the timeout: wait for the first byte
        # only, then take whatever else has arrived.
        data = self.port.read(1)
        if not data:
            return []
        waiting = self.port.in_waiting
        if waiting:
            data += self.port.read(min(waiting, self.read_chunk))
        self._last_byte = time.monotonic()
        self.stats.bytes_in += len(data)
        result = self.deframer.feed(data)
        for discard in result.discarded:
            self.stats.discards[discard.reason.name] = (
                self.stats.discards.get(discard.reason.name, 0) + 1
            )
        self._damaged = bool(result.discarded)
        return result.frames

    def transact(self, cmd: int, payload: bytes = b"", *, timeout_s: float | None = None) -> Frame:
        """Send one request and return the chip's answer to it (ACK or command NAK).

        Raises LinkTimeout when every attempt went unanswered.
        """
        seq = self._next_seq()
        wire = hal.codec.frame_encode(seq, cmd, payload)
        started = time.monotonic()
        self.stats.requests += 1
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats.retries += 1
                log.debug("retry %d of cmd 0x%02X seq %d", attempt, cmd, seq)
            self.port.write(wire)
            self.stats.bytes_out += len(wire)
            sent_at = time.monotonic()
            deadline = sent_at + (timeout_s or self.timeout_s)
            resend = False
            while not resend and time.monotonic() < deadline:
                frames = self._read_frames(deadline)
                for index, frame in enumerate(frames):
                    # Not ours, or not a response at all (an echo of a request, as a
                    # loopback or half-duplex line gives back): skip it. A NAK for another
                    # sequence number is stale: resending on it would only feed a storm of
                    # retries arriving while the chip is still answering.
                    if frame.seq != seq or not (frame.cmd & ACK_FLAG):
                        self.stats.stale_frames += 1
                        continue
                    self._pending = frames[index + 1 :]  # later frames: looked at next time
                    if frame.cmd == NAK and frame.payload[:1] == bytes([NakReason.OVERRUN]):
                        # Our retry reached the chip while it was still answering an
                        # earlier copy: that answer is on its way. Keep waiting.
                        self.stats.overruns += 1
                        continue
                    if (
                        frame.cmd == NAK
                        and frame.payload[:1]
                        and frame.payload[0] in RESEND_REASONS
                    ):
                        self.stats.frame_naks += 1  # our frame arrived damaged: resend now
                        resend = True
                        break
                    return frame
                if resend:
                    break
                if self._damaged:
                    # A damaged frame came back (likely our answer): ask again at once. The
                    # chip answers a repeated sequence number from its stored response.
                    self.stats.damaged_answers += 1
                    resend = True
                elif self.deframer.pending and time.monotonic() - self._last_byte > self.gap_s:
                    # Half a frame, then silence: its closing delimiter was lost.
                    self.stats.stalled_answers += 1
                    self.deframer.reset()
                    resend = True
            if not resend:
                self.stats.timeouts += 1
        waited = time.monotonic() - started
        raise LinkTimeout(
            f"no answer to command 0x{cmd:02X} (seq {seq}) after {self.retries + 1} attempts "
            f"in {waited:.2f} s; check the port, the baud rate and that the chip is running",
            cmd=cmd,
            seq=seq,
            attempts=self.retries + 1,
            waited_s=waited,
        )
