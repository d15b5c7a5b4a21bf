"""Request/response over a byte stream to the chip: sequence numbers, deadlines, retries.

Works on anything with pyserial's ``write`` / ``read`` / ``timeout`` (a real serial port,
``socket://``, the model, the ``fault://`` wrapper). A request is retried with the *same*
sequence number when no answer comes in time or the chip answers with a frame-level NAK
(its copy was damaged on the way). The chip remembers the last sequence number it
executed and answers a repeat with its stored response, so a retry never executes a
command twice. Garbage and answers to earlier requests are dropped and counted.

Forward error correction (``fec``): frames of format version 2 carry Reed-Solomon parity
that lets the receiver repair a damaged byte in each of two interleaved codewords
(``codec.fec``); the chip answers a version-2 request in version 2. ``"auto"`` (the
default) sends version 2 while the line is noisy (a resend within the last
``NOISY_FOR_REQUESTS`` requests) and version 1 on a clean line, where the parity would only
cost bytes; ``"on"`` and ``"off"`` fix the choice. Only a chip known to take version 2
(``fec_capable``, which ``Chip`` learns from PING) is sent it.
"""

from __future__ import annotations

import collections
import enum
import logging
import time
from collections.abc import Collection
from dataclasses import dataclass, field

from orbithil.hal import codec
from orbithil.hal.codec import Frame
from orbithil.hal.errors import LinkTimeout
from orbithil.hal.icd import ACK_FLAG, NAK, Cmd, NakReason

log = logging.getLogger(__name__)

DEFAULT_RETRIES = 3  # same-sequence resends after the first attempt (the engine uses it too)

# NAK reasons that mean "your frame arrived damaged": resend it.
RESEND_REASONS = frozenset(
    {
        NakReason.COBS,
        NakReason.BAD_LENGTH,
        NakReason.BAD_CRC,
        NakReason.BAD_VERSION,
        NakReason.OVERSIZE,
        NakReason.OVERRUN,
        NakReason.PARITY,
    }
)


class Verdict(enum.Enum):
    """What a requester does with a frame that arrived while it waits for its answer."""

    SKIP = "skip"  # not an answer to this request: stale, or an echo of a request
    UNCLAIMED = "unclaimed"  # a frame-level NAK for a sequence number nobody used lately
    WAIT = "wait"  # OVERRUN: a resend met the chip mid-answer; that answer is on its way
    RESEND = "resend"  # a frame-level NAK: the request arrived damaged, send it again
    ANSWER = "answer"  # the chip's answer (an ACK or a command NAK): done


def judge(frame: Frame, seq: int, *, recent: Collection[int] | None = None) -> Verdict:
    """The per-frame rule of the link, for ``FrameLink`` and the injection engine alike.

    A frame for another sequence number, or one that is not a response (an echo of a
    request, as a loopback or half-duplex line gives back), is skipped: a NAK for a
    sequence number used lately (``recent``) is stale, and resending on it would only feed
    a storm of retries arriving while the chip is still answering. A frame-level NAK for
    a number not in ``recent`` (given) is UNCLAIMED: the chip echoes the second byte of
    the run it got, and a run whose first bytes were damaged (its leading delimiter, most
    often) gives a number nobody sent: likely our request, garbled. An OVERRUN NAK means
    our resend reached the chip while it was still answering an earlier copy: that answer
    is coming, so keep waiting. A NAK with a frame-level reason means our frame arrived
    damaged: resend."""
    if frame.seq != seq or not (frame.cmd & ACK_FLAG):
        if (
            recent is not None
            and frame.cmd == NAK
            and frame.seq not in recent
            and frame.payload[:1]
            and frame.payload[0] in RESEND_REASONS
        ):
            return Verdict.UNCLAIMED
        return Verdict.SKIP
    if frame.cmd == NAK and frame.payload[:1]:
        reason = frame.payload[0]
        if reason == NakReason.OVERRUN:
            return Verdict.WAIT
        if reason in RESEND_REASONS:
            return Verdict.RESEND
    return Verdict.ANSWER


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
    lost_delimiters: int = 0  # a frame came whole but for its closing delimiter
    unclaimed_naks: int = 0  # frame NAKs for a number not sent lately: resent at once
    overruns: int = 0
    fec_requests: int = 0  # attempts sent as version 2
    bytes_out: int = 0
    bytes_in: int = 0
    discards: dict = field(default_factory=dict)


# Early retries only on a line that has needed a resend within this many requests: on a
# clean line a slow answer (a busy host, a long job) must not be resent, which the chip
# would count as a bad frame.
NOISY_FOR_REQUESTS = 100

FEC_MODES = ("auto", "on", "off")

RECENT_SEQS = 8  # sequence numbers remembered as "used lately" (judge's ``recent``)


def check_fec_mode(fec: str) -> str:
    """``fec`` if it is a link FEC mode; else ValueError naming the valid ones."""
    if fec not in FEC_MODES:
        raise ValueError(f"fec={fec!r} is not a link FEC mode; valid: {', '.join(FEC_MODES)}")
    return fec


@dataclass
class RttEstimator:
    """Smoothed round-trip time and its variation (RFC 6298), for one class of request."""

    srtt: float = 0.0
    rttvar: float = 0.0
    samples: int = 0

    def update(self, rtt: float) -> None:
        if self.samples == 0:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt
        self.samples += 1

    def rto(self, floor: float) -> float:
        return max(floor, self.srtt + 4 * self.rttvar)


class FrameLink:
    """One outstanding request at a time over ``port`` (a pyserial-like object).

    Each attempt waits ``timeout_s`` at most. With ``adaptive`` (the default) an attempt
    gives up earlier when nothing comes back: after the retransmission timeout learned
    from the time answered first attempts of the same class of request (command, request
    size, expected answer size) took to start arriving (RFC 6298 smoothing, Karn's rule,
    doubling after each early give-up), so a frame lost on a noisy line costs a few round
    trips instead of the whole timeout. A frame that has started to arrive is never given
    up on by the estimate: it ends by its delimiter, by ``gap_s`` of silence (its
    delimiter was lost) or by ``timeout_s`` (a resend then would only make the chip send
    the same answer twice and delay the next request behind it). The estimate is used only
    while the line is noisy (a resend within the last ``NOISY_FOR_REQUESTS`` requests): a
    clean line never resends a request that is merely slow. The last attempt always
    waits the full ``timeout_s``: a LinkTimeout still means the chip was silent that long.
    """

    def __init__(
        self,
        port,
        *,
        timeout_s: float = 1.0,
        retries: int = DEFAULT_RETRIES,
        read_chunk: int = 4096,
        gap_s: float = 0.05,  # silence after half a frame that means "lost delimiter"; long
        # enough for a slow simulator, which delivers a long answer in pieces
        adaptive: bool = True,
        min_rto_s: float = 0.001,
        fec: str = "auto",
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.fec = check_fec_mode(fec)
        # Whether the chip takes version-2 frames: None until known (Chip asks with PING).
        self.fec_capable: bool | None = None
        self.port = port
        self.timeout_s = timeout_s
        self.retries = retries
        self.read_chunk = read_chunk
        self.seq = 0
        # Numbers this link used lately: a frame NAK for one of them (or for 0, the chip's
        # number for a run too short to carry one) is stale, not a garbled request.
        self._recent: collections.deque[int] = collections.deque(maxlen=RECENT_SEQS)
        self._synchronised = False
        self.stats = LinkStats()
        # Frames whose delimiters or COBS code bytes were damaged are salvaged, not asked
        # for again (hal.codec.salvage).
        self.deframer = codec.new_deframer(salvage=True)
        self._pending: list[Frame] = []
        self._damaged = False
        self._last_byte = 0.0
        self.gap_s = gap_s
        self.adaptive = adaptive
        self.min_rto_s = min_rto_s
        self.rtt: dict[tuple, RttEstimator] = {}
        self._since_damage = NOISY_FOR_REQUESTS  # requests since the last resend

    @staticmethod
    def _rtt_class(cmd: int, payload: bytes, version: int) -> tuple:
        """Requests whose round trips are alike: same command and frame version, request
        size in 16-byte steps, and for READ_MEM the answer's size in 8-word steps."""
        answer = payload[2] // 8 if cmd == Cmd.READ_MEM and len(payload) >= 3 else 0
        return cmd, version, len(payload) // 16, answer

    @property
    def noisy(self) -> bool:
        """A resend was needed within the last ``NOISY_FOR_REQUESTS`` requests."""
        return self._since_damage < NOISY_FOR_REQUESTS

    def needs_fec_capability(self) -> bool:
        """Whether the link would use FEC now but does not know if the chip takes it."""
        return self.fec_capable is None and (
            self.fec == "on" or (self.fec == "auto" and self.noisy)
        )

    def _version(self, payload: bytes) -> int:
        """The frame version of the next attempt: 2 (FEC) for a chip that takes it, when
        ``fec`` is on, or auto on a noisy line; else 1."""
        if len(payload) > codec.MAX_PAYLOAD_FEC or not self.fec_capable:
            return codec.FRAME_VERSION
        if self.fec == "on" or (self.fec == "auto" and self.noisy):
            return codec.FEC_VERSION
        return codec.FRAME_VERSION

    def synchronise(self) -> None:
        """Start a session: one PING whose answer is not looked at.

        The chip takes a request with the sequence number of the last command it executed
        as a retry and answers it from its stored response (ICD). A new session (a new
        link to a chip that kept running: a board, a served simulator) numbers from 1, so
        its first command could be answered from the last session's stored response and
        not run. After this PING the chip's last number is this link's, whatever it was
        (a stale answer to a PING is harmless), so every later request is fresh.
        ``transact`` calls it before the session's first request."""
        self._synchronised = True  # (so the PING itself does not synchronise first)
        try:
            self.transact(Cmd.PING)
        except BaseException:
            self._synchronised = False  # not in step: the next request synchronises again
            raise

    def _next_seq(self) -> int:
        self._recent.append(self.seq)
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
        # only, then take whatever else has arrived without waiting (``in_waiting`` would
        # not do: on socket:// it says 1 for any number of bytes).
        data = self.port.read(1)
        if not data:
            return []
        self.port.timeout = 0
        data += self.port.read(self.read_chunk)
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
        if not self._synchronised:
            self.synchronise()
        seq = self._next_seq()
        started = time.monotonic()
        self.stats.requests += 1
        full = timeout_s or self.timeout_s
        self._since_damage += 1
        backoff = 1.0
        wire, version = b"", 0
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats.retries += 1
                log.debug("retry %d of cmd 0x%02X seq %d", attempt, cmd, seq)
            if (wanted := self._version(payload)) != version:  # a resend on a newly noisy line
                version = wanted
                wire = codec.frame_encode(seq, cmd, payload, version=version)
                estimate = self.rtt.setdefault(
                    self._rtt_class(cmd, payload, version), RttEstimator()
                )
            self.stats.fec_requests += version == codec.FEC_VERSION
            wait = full
            if self.adaptive and self.noisy and estimate.samples >= 3 and attempt < self.retries:
                wait = min(full, estimate.rto(self.min_rto_s) * backoff)
            # On a noisy line a second closing delimiter: one damaged delimiter then no
            # longer leaves the chip's receiver running on into the next request (its
            # run gets a NAK with our number at once instead of no answer at all).
            sent = wire + b"\x00" if self.noisy else wire
            self.port.write(sent)
            self.stats.bytes_out += len(sent)
            sent_at = time.monotonic()
            quiet_since = sent_at  # the estimate runs from the write or a skipped frame's end
            began = 0.0  # when the body of the frame now arriving began to (0.0: none is)
            resend = False
            while not resend:
                now = time.monotonic()
                if self.deframer.pending and self._last_byte > sent_at:
                    # A frame is coming in: it ends by its delimiter, by gap_s of silence
                    # (its delimiter was lost) or by the full timeout, not by the estimate.
                    limit = min(sent_at + full, self._last_byte + self.gap_s)
                    if now >= limit:
                        if now - self._last_byte >= self.gap_s:
                            # Half a frame, then silence: its closing delimiter was lost.
                            self.stats.stalled_answers += 1
                            self.deframer.reset()
                            resend = True
                        break
                else:
                    limit = min(sent_at + full, quiet_since + wait)
                    if self.deframer.opened and self._last_byte > sent_at:
                        # The delimiter the chip opens each frame with has come (a
                        # simulator's bridge sends it at once, the frame when it is whole):
                        # the answer is on its way, and the estimate, which a slow moment
                        # of the host or the simulator can outlast, gives way to gap_s (a
                        # resend would cost the chip a second answer and the next request
                        # the time it takes).
                        limit = min(sent_at + full, max(limit, self._last_byte + self.gap_s))
                    if now >= limit:
                        break
                frames = self._read_frames(limit)
                if not began and self.deframer.pending and self._last_byte > sent_at:
                    began = self._last_byte  # a frame's first bytes (not a lone delimiter)
                for index, frame in enumerate(frames):
                    verdict = judge(frame, seq, recent=(0, *self._recent))
                    if verdict is Verdict.SKIP:
                        self.stats.stale_frames += 1
                        continue
                    self._pending = frames[index + 1 :]  # later frames: looked at next time
                    if verdict is Verdict.UNCLAIMED:
                        # Most likely our request, garbled: resending costs at worst a
                        # second copy of the answer; waiting costs the whole estimate.
                        self.stats.unclaimed_naks += 1
                        resend = True
                        break
                    if verdict is Verdict.WAIT:
                        self.stats.overruns += 1
                        continue
                    if verdict is Verdict.RESEND:
                        self.stats.frame_naks += 1
                        resend = True
                        break
                    if attempt == 0:  # Karn: only an unambiguous round trip is a sample
                        estimate.update((began or time.monotonic()) - sent_at)
                    return frame
                if resend:
                    break
                if self._damaged:
                    # A damaged frame came back (likely our answer): ask again at once. The
                    # chip answers a repeated sequence number from its stored response.
                    self.stats.damaged_answers += 1
                    resend = True
                elif self.deframer.overdue:
                    # A frame came as long as its header says, then no delimiter but more
                    # bytes: the delimiter was damaged, and the bytes are not a frame when
                    # cut there (the deframer tried). Drop them and ask again at once.
                    self.stats.lost_delimiters += 1
                    self.deframer.reset()
                    resend = True
                elif frames:  # only frames that were not the answer: wait on from here
                    quiet_since = self._last_byte
                    began = self._last_byte if self.deframer.pending else 0.0
            self._since_damage = 0  # a resend: this line damages or loses frames
            if not resend:
                self.stats.timeouts += 1
                backoff *= 2  # RFC 6298: the estimate was too short, or the line is bad
        waited = time.monotonic() - started
        raise LinkTimeout(
            f"no answer to command 0x{cmd:02X} (seq {seq}) after {self.retries + 1} attempts "
            f"in {waited:.2f} s; check the port, the baud rate and that the chip is running",
            cmd=cmd,
            seq=seq,
            attempts=self.retries + 1,
            waited_s=waited,
        )
